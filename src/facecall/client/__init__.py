"""facecall.client — see docs and DESIGN.md."""
