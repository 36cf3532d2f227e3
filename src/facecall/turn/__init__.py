"""facecall.turn — see docs and DESIGN.md."""
