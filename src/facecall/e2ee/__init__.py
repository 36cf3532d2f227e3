"""facecall.e2ee — see docs and DESIGN.md."""
