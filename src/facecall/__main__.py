"""``python -m facecall``: the same as the ``facecall`` command."""

import sys

from facecall.cli import main

sys.exit(main())
