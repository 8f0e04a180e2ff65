"""Print a legacy Caffe net or solver file in the current format (Caffe's upgrade_net_proto_text).

Nets: V0 `layers { layer { ... } }` (padding layers folded into conv/pool), V1
`layers { type: CONVOLUTION blobs_lr: ... }`, data-layer transformation fields,
`input`/`input_dim`/`input_shape` (-> an Input layer), BatchNorm statistics params, and the
`ceil_mode` pooling dialect (-> round_mode).  Solvers: `solver_type` (-> `type`).
What changed is listed on stderr; the upgraded text goes to stdout or -o (written atomically).

examples:
  netspec upgrade old_lenet.prototxt
  netspec upgrade old_solver.prototxt -o solver.prototxt
"""
from __future__ import annotations

import sys
from pathlib import Path

from google.protobuf import text_format

from ..check import load
from ..diagnostics import Diagnostic, NetspecError
from ..fileio import write_atomic
from ..upgrade import upgrade_net, upgrade_solver

UPGRADERS = {"net": lambda obj: upgrade_net(obj.net), "solver": lambda obj: upgrade_solver(obj[0])}


def add_arguments(p) -> None:
    p.add_argument("file", help="a net or solver .prototxt in an old format")
    p.add_argument("-o", "--output", type=Path, help="write the upgraded text here (default: stdout)")


def upgraded_text(path: str | Path) -> tuple[str, list[str]]:
    """The upgraded file as protobuf text, and the upgrade steps applied."""
    kind, obj = load(path)
    try:
        msg, steps = UPGRADERS[kind](obj)
    except ValueError as e:
        raise NetspecError([Diagnostic("E0200", f"'{path}' cannot be upgraded: {e}")]) from None
    return text_format.MessageToString(msg), steps


def run(args) -> int:
    text, steps = upgraded_text(args.file)
    for step in steps:
        print(f"upgraded: {step}", file=sys.stderr)
    if not steps:
        print(f"{args.file} is already in the current format", file=sys.stderr)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    write_atomic(args.output, text)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0
