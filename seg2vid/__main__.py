"""``python -m seg2vid`` — the command line (see ``seg2vid.cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
