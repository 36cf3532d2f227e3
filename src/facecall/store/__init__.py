"""facecall.store — see docs and DESIGN.md."""
