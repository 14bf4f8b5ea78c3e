"""``python -m gaussmix.cli``: the ``gaussmix`` command."""

import sys

from gaussmix.cli.entry import main

if __name__ == "__main__":
    sys.exit(main())
