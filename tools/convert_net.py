#!/usr/bin/env python
"""Write a net as standalone PyTorch source: the same as ``netspec convert`` (see its --help).

usage: python tools/convert_net.py NET.prototxt OUT.py [netspec convert options]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # run from a checkout

from netspec.cli.main import main  # noqa: E402


def convert_main(argv: list[str]) -> int:
    """Positional (net, output) mapped onto ``netspec convert NET -o OUT``."""
    if len(argv) >= 2 and not argv[0].startswith("-") and not argv[1].startswith("-"):
        argv = [argv[0], "-o", argv[1]] + argv[2:]
    return main(["convert"] + argv)


if __name__ == "__main__":
    sys.exit(convert_main(sys.argv[1:]))
