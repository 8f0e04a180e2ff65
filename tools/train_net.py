#!/usr/bin/env python
"""Caffe-tradition ``train_net.py``: the same as ``netspec train`` (see its --help).

usage: python tools/train_net.py SOLVER.prototxt [netspec train options]
       python tools/train_net.py --solver SOLVER.prototxt [netspec train options]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # run from a checkout

from netspec.cli.main import main  # noqa: E402


def train_main(argv: list[str]) -> int:
    """A leading positional solver file becomes ``--solver``, as in Caffe's old train_net."""
    if argv and not argv[0].startswith("-"):
        argv = ["--solver", argv[0]] + argv[1:]
    return main(["train"] + argv)


if __name__ == "__main__":
    sys.exit(train_main(sys.argv[1:]))
