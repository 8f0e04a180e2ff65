"""Score trained weights like `caffe test`: TEST-phase inference over N batches of the net's data.

Every net output (each exit's accuracy and loss) is printed per batch as
"Batch k, name = v", then averaged over the batches as "name = mean" (loss
tops also with their weighted contribution, and the total "Loss:").  Outputs
with several elements are averaged over their elements, as the solver's test
phase does.  --weights takes a netspec snapshot (.netspec, from training or
netspec.Net.save) or a Caffe .caffemodel; layers it lacks keep their fillers
(a note on stderr lists them).

examples:
  netspec test --model models/digits/deep_plain.prototxt --weights digits.netspec --iterations 3
  netspec test --model train_val.prototxt --weights bvlc_alexnet.caffemodel --gpu
  netspec test --model models/digits/deep_plain.prototxt --weights digits.netspec --iterations 3 \
      --early-exit 0.5,0.7,0.9,0.99,1.01 --plot anytime.svg
"""
from __future__ import annotations

import math
import sys

from ..diagnostics import Diagnostic, NetspecError
from .main import add_gpu_option, add_state_options, device_of, non_negative_int, positive_int


def add_arguments(p) -> None:
    p.add_argument("--model", required=True, metavar="NET", help="the net (.prototxt) with data layers")
    p.add_argument("--weights", required=True, metavar="W",
                   help="trained weights: a .netspec snapshot or a .caffemodel")
    p.add_argument("--iterations", type=positive_int, default=50, metavar="N",
                   help="batches to run (default 50, as caffe test)")
    p.add_argument("--optimize", choices=["none", "default", "max"], default="default",
                   help="default: the inference build (BatchNorm/Scale folded, pooling without argmax); "
                        "none: the exact layer-by-layer build")
    p.add_argument("--early-exit", metavar="T[,T2,...]", type=_thresholds,
                   help="anytime prediction: a sample leaves at the first exit whose max softmax >= T; "
                        "prints accuracy, MACs, exit shares and speed-up per threshold")
    p.add_argument("--plot", metavar="OUT", help="with --early-exit: accuracy against MACs (.svg or .png)")
    p.add_argument("--repeats", type=non_negative_int, default=15, metavar="N",
                   help="with --early-exit: interleaved timing rounds against the deepest exit alone "
                        "(default 15; 0: no timing)")
    add_gpu_option(p)
    add_state_options(p)


def _thresholds(text: str) -> list[float]:
    import argparse
    try:
        values = [float(t) for t in text.split(",") if t]
    except ValueError:
        values = []
    if not values:
        raise argparse.ArgumentTypeError(f"expected thresholds such as 0.9 or 0.5,0.9,0.99, got '{text}'")
    return values


def run(args) -> int:
    from ..api import Net                       # torch is imported only when a command runs
    net = Net(args.model, phase=args.phase or "TEST", weights=args.weights,
              input_shapes=dict(args.input_shape), stages=args.stage, level=args.level,
              device=device_of(args.gpu), all_blobs=False, optimize=args.optimize)
    if not net.has_data_layers:
        raise NetspecError([Diagnostic("E0800", f"net '{net.net.name}' has no data layer to test on",
                                       help=["netspec test reads batches from the net's data layers; "
                                             "use netspec.Net(...).forward(blob=tensor) for Input nets"])])
    if net.missing:
        shown = ", ".join(net.missing[:6]) + (" ..." if len(net.missing) > 6 else "")
        print(f"note: {len(net.missing)} blobs were not in {args.weights} and keep their fillers: {shown}",
              file=sys.stderr)
    for line in uneven_passes(net, args.iterations):
        print(line, file=sys.stderr)
    if args.early_exit:
        from ..tools.early_exit import format_sweep, plot, sweep
        rows, singles = sweep(net, args.early_exit, args.iterations, repeats=args.repeats)
        print(format_sweep(rows, singles), end="")
        if args.plot:
            print(f"wrote {plot(rows, singles, args.plot)}")
        return 0
    means = score(net, args.iterations)
    print_means(net, means)
    return 0


def uneven_passes(net, iterations: int) -> list[str]:
    """A note per data layer whose ``iterations`` batches do not cover its records a whole number
    of times: Caffe's `test -iterations` simply runs that many batches, so some records then
    count more often than others in every average (on a small test set, visibly)."""
    feeder = net.feeder
    batches, notes = feeder.batch_sizes(), []
    for layer, records in feeder.records().items():
        batch = batches[layer]
        if not records or iterations * batch % records == 0:
            continue
        whole = records // math.gcd(records, batch)         # the fewest batches that make whole passes
        notes.append(f"note: {iterations} batches of {batch} are {iterations * batch / records:.2f} passes over "
                     f"the {records} records of data layer '{layer}', so some records count more often "
                     f"than others; --iterations {whole} scores each record equally")
    return notes


def score(net, iterations: int, out=None) -> dict[str, float]:
    """Average every output of ``net`` (a :class:`netspec.Net`) over ``iterations`` batches,
    printing each batch as Caffe does; returns output name -> mean."""
    import torch
    out = out or sys.stdout
    sums: dict[str, float] = {}
    for k in range(iterations):
        with torch.no_grad():
            outputs = net.forward()
        for name, v in outputs.items():
            value = float(v.float().mean())
            sums[name] = sums.get(name, 0.0) + value
            print(f"Batch {k}, {name} = {value:.6g}", file=out)
    return {name: s / iterations for name, s in sums.items()}


def print_means(net, means: dict[str, float], out=None) -> None:
    """The averaged outputs, loss tops with their weighted contribution, as `caffe test` ends."""
    out = out or sys.stdout
    weights = {t.name: w for loss in net.net.losses for t, w in loss.tops}
    print(f"Loss: {sum(weights[k] * v for k, v in means.items() if k in weights):.6g}", file=out)
    for name, v in means.items():
        extra = f" (* {weights[name]:g} = {weights[name] * v:.6g} loss)" if name in weights else ""
        print(f"{name} = {v:.6g}{extra}", file=out)
