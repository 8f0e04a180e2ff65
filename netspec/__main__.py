"""``python -m netspec``: the same as the ``netspec`` command."""
import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
