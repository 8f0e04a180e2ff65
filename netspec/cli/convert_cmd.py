"""Write a net as standalone, readable PyTorch source (depends only on torch).

The file holds one nn.Module class: one statement per layer, each with a comment
pointing back to the prototxt line.  Load a compiled net's state_dict into it to
get bit-identical outputs.

With --to-caffemodel it writes trained weights (a netspec snapshot, or a .caffemodel) as
the binary .caffemodel Caffe's Net::ToProto writes for the net in that phase, so
`caffe test --weights` and pycaffe load it unchanged.

examples:
  netspec convert models/digits/deep_plain.prototxt -o digits.py
  netspec convert deploy.prototxt --phase TEST -o deploy.py
  netspec convert train_val.prototxt --weights digits_iter_600.netspec --to-caffemodel digits.caffemodel
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..check import check_net, load
from ..compile.codegen import generate
from ..diagnostics import Diagnostic, NetspecError
from ..lower import NetState
from .main import add_state_options


def add_arguments(p) -> None:
    p.add_argument("file", help="a net (.prototxt)")
    p.add_argument("-o", "--output", type=Path, help="output .py file (default: stdout)")
    p.add_argument("--weights", help="trained weights: a netspec snapshot or a.caffemodel[,b.caffemodel]")
    p.add_argument("--to-caffemodel", type=Path, metavar="OUT.caffemodel",
                   help="write --weights as a Caffe .caffemodel instead of PyTorch source")
    add_state_options(p)


def run(args) -> int:
    _check_options(args)
    kind, src = load(args.file)
    if kind == "solver":
        raise NetspecError([Diagnostic("E0800", f"'{args.file}' is a solver file; convert takes a net",
                                       help=["give the .prototxt of the net the solver names"])])
    net = check_net(src, NetState.of(args.phase or "TRAIN", args.level, args.stage), dict(args.input_shape))
    if args.to_caffemodel is not None:
        return _to_caffemodel(net, args)
    source = generate(net).source
    if args.output is None:
        sys.stdout.write(source)
    else:
        tmp = args.output.with_suffix(args.output.suffix + ".tmp")
        tmp.write_text(source)
        tmp.replace(args.output)
        print(f"wrote {args.output}")
    return 0


def _check_options(args) -> None:
    """-o writes source, --to-caffemodel writes weights: each needs its own options."""
    if args.to_caffemodel is not None and args.output is not None:
        raise NetspecError([Diagnostic("E0802", "give -o (PyTorch source) or --to-caffemodel, not both")])
    if args.weights and args.to_caffemodel is None:
        raise NetspecError([Diagnostic("E0802", "--weights is only used with --to-caffemodel",
                                       help=["the PyTorch source loads the state_dict of a compiled net"])])
    if args.to_caffemodel is not None and not args.weights:
        raise NetspecError([Diagnostic("E0802", "--to-caffemodel needs --weights (the trained snapshot)",
                                       help=["netspec convert NET --weights S.netspec --to-caffemodel OUT"])])


def _to_caffemodel(net, args) -> int:
    """Compile every layer, load --weights (all blobs must be filled), write the .caffemodel."""
    from ..compile.module import compile_net
    from ..interop.caffemodel import load_weights_file, preview_names
    from ..interop.export import write_caffemodel
    every_blob = [b for node in net.graph.layers() for b in node.tops]
    compiled = compile_net(net, outputs=every_blob, seed=0)
    missing = load_weights_file(compiled, args.weights)
    if missing:
        raise NetspecError([Diagnostic("E0700", f"'{args.weights}' leaves {len(missing)} blob(s) of the net "
                                       f"unfilled: {preview_names(missing)}",
                                       help=["export the net the weights were trained for (same layer "
                                             "names, --phase/--stage as in training)"])])
    write_caffemodel(compiled, args.to_caffemodel)
    print(f"wrote {args.to_caffemodel}")
    return 0
