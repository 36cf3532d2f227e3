"""facecall.sfu — see docs and DESIGN.md."""
