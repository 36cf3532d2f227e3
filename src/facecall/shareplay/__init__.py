"""facecall.shareplay — see docs and DESIGN.md."""
