#!/usr/bin/env python
"""Caffe-tradition ``time_net.py``: the same as ``netspec time`` (see its --help).

usage: python tools/time_net.py NET.prototxt [--iterations N] [--gpu] [--solver S]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # run from a checkout

from netspec.cli.main import main  # noqa: E402


def time_main(argv: list[str]) -> int:
    return main(["time"] + argv)


if __name__ == "__main__":
    sys.exit(time_main(sys.argv[1:]))
