"""``python -m toycode``: the command line, also what ``accelerate launch -m toycode`` runs."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
