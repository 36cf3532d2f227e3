"""facecall.bus — see docs and DESIGN.md."""
