"""``python -m facecall.turn``."""

from facecall.turn.cli import main

main()
