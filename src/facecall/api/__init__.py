"""facecall.api — see docs and DESIGN.md."""
