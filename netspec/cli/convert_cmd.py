"""Write a net as standalone, readable PyTorch source (depends only on torch).

The file holds one nn.Module class: one statement per layer, each with a comment
pointing back to the prototxt line.  Load a compiled net's state_dict into it to
get bit-identical outputs.

examples:
  netspec convert models/digits/train_val.prototxt -o digits.py
  netspec convert deploy.prototxt --phase TEST -o deploy.py
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..check import check_net, load
from ..compile.codegen import generate
from ..lower import NetState
from .main import add_state_options


def add_arguments(p) -> None:
    p.add_argument("file", help="a net (.prototxt)")
    p.add_argument("-o", "--output", type=Path, help="output .py file (default: stdout)")
    add_state_options(p)


def run(args) -> int:
    _, src = load(args.file)
    net = check_net(src, NetState.of(args.phase or "TRAIN", args.level, args.stage), dict(args.input_shape))
    source = generate(net).source
    if args.output is None:
        sys.stdout.write(source)
    else:
        tmp = args.output.with_suffix(args.output.suffix + ".tmp")
        tmp.write_text(source)
        tmp.replace(args.output)
        print(f"wrote {args.output}")
    return 0
