"""facecall.signaling — see docs and DESIGN.md."""
