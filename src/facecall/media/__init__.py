"""facecall.media — see docs and DESIGN.md."""
