#!/usr/bin/env python
"""Caffe-tradition ``draw_net.py``: the same as ``netspec draw`` (see its --help).

usage: python tools/draw_net.py NET.prototxt OUT.{svg,png,pdf,dot,html} [netspec draw options]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # run from a checkout

from netspec.cli.main import main  # noqa: E402


def draw_main(argv: list[str]) -> int:
    """Caffe's positional order (net, output) mapped onto ``netspec draw``."""
    if len(argv) >= 2 and not argv[0].startswith("-") and not argv[1].startswith("-"):
        argv = ["draw", argv[0], "-o", argv[1]] + argv[2:]
    else:
        argv = ["draw"] + argv
    return main(argv)


if __name__ == "__main__":
    sys.exit(draw_main(sys.argv[1:]))
