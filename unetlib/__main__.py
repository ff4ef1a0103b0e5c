"""``python -m unetlib ...`` (and the ``unetlib`` console script): see :mod:`unetlib.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
