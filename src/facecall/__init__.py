"""facecall: self-hosted, end-to-end encrypted video calling."""

__version__ = "0.1.0"
