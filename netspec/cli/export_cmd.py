"""Export a trained net, or one of its exits, as a standalone model.

The exported net holds only what the exit needs: an Input layer with the data shape
(batch --batch), the trunk up to the exit, the exit's head and a Softmax top 'prob'; no
data layers, losses, accuracies or other branches.  --exit names a loss layer or its
classifier top; without it the whole TEST net is exported, one '<top>_prob' per exit.
Formats: prototxt (OUT.prototxt + OUT.caffemodel, for Caffe 1.0 and netspec.Net),
python (OUT.py, standalone torch source, + OUT.pt, its state_dict), onnx (checked with
onnx.checker and onnxruntime; pip install -e '.[onnx]') and pt2 (torch.export).

examples:
  netspec export models/digits/deep_plain.prototxt --weights digits.netspec --exit exit1_loss --to prototxt -o exit1.prototxt
  netspec export models/digits/deep_plain.prototxt --weights digits.netspec --to onnx -o digits.onnx
  netspec export train_val.prototxt --weights bvlc_googlenet.caffemodel --exit loss1/loss --to pt2 -o aux1.pt2
"""
from __future__ import annotations

from pathlib import Path

from .main import add_state_options, positive_int


def add_arguments(p) -> None:
    from ..interop.export_net import FORMATS
    p.add_argument("file", metavar="NET", help="the trained net (.prototxt with its losses)")
    p.add_argument("--weights", required=True, metavar="W", help="a .netspec snapshot or a .caffemodel")
    p.add_argument("--exit", metavar="LOSS", help="the loss (or its classifier top) to export; default: all")
    p.add_argument("--to", choices=FORMATS, default="prototxt", help="the format (default prototxt)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="the file to write")
    p.add_argument("--batch", type=positive_int, default=1, metavar="N", help="the Input batch (default 1)")
    add_state_options(p)


def run(args) -> int:
    from ..api import Net
    from ..interop.export_net import WRITERS, build_export
    trained = Net(args.file, phase=args.phase or "TEST", weights=args.weights,
                  input_shapes=dict(args.input_shape), stages=args.stage, level=args.level)
    if trained.missing:
        from ..diagnostics import Diagnostic, NetspecError
        raise NetspecError([Diagnostic("E0700", f"'{args.weights}' leaves {len(trained.missing)} blob(s) "
                                       f"unfilled: {', '.join(trained.missing[:6])}",
                                       help=["export the net the weights were trained for"])])
    exported = build_export(trained, args.exit, args.batch)
    for path in WRITERS[args.to](exported, args.output):
        print(f"wrote {path}")
    total = exported.net.total_params()
    print(f"{len(exported.compiled.generated.layers)} layers, {total:,} parameters; "
          f"outputs: {', '.join(exported.outputs)}")
    return 0
