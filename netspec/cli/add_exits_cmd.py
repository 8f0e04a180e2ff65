"""Add auxiliary exits (deep supervision) to a net; the original text stays byte for byte.

Where (one of):
  --after B1,B2      after these blobs or layers (points every path to the primary loss
                     passes through: a plain layer's output, an Inception concat, a
                     residual block's output)
  --count K          MW-BP's placement: an exit every tau = ceil(L / (K + 1)) weight layers,
                     L the trunk's weight layers on the primary path (the final classifier
                     not counted); warns when tau < 5, as the paper advises against it
  --auto --solver S  CNDS's rule: branches where `netspec probe` finds the primary loss's
                     gradient vanishing (below 1e-7 after --iterations of S's training)

What (--head): mwbp (default; global average pooling + classifier), cnds (1x1 conv 128 +
ReLU, fc 1024 + ReLU + dropout, classifier), or a template FILE in which ${bottom} is the
attachment blob (also ${name}, ${label}, ${num_output}, ${loss_weight}, ${loss_type}).
Every exit copies the final classifier's num_output and fillers and the primary loss's type
and label, has loss_weight --weight (default 0.3), and a TEST-phase Accuracy.  --solvers
writes NEW_solver_{standard,joint,relay,multiway}.prototxt beside the output, with
MULTIWAY_POWER weighting for every mode with exits (settings from --solver S if given).

examples:
  netspec add-exits models/resnet56/resnet56_mwbp.prototxt --count 3 -o resnet56_k3.prototxt
  netspec add-exits train_val.prototxt --after conv3,conv4 --head cnds --solvers -o ds.prototxt
  netspec add-exits net.prototxt --auto --solver solver.prototxt -o net_cnds.prototxt
"""
from __future__ import annotations

from ..tools.add_exits import HEADS, WEIGHT, add_exits
from ..tools.probe import THRESHOLD
from .probe_cmd import threshold
from .main import add_gpu_option, positive_int, report, shape_arg


def add_arguments(p) -> None:
    p.add_argument("file", metavar="NET", help="the net (.prototxt)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--after", type=lambda s: [x for x in s.split(",") if x], metavar="B1,B2",
                       help="attach an exit after each of these blobs or layers")
    where.add_argument("--count", type=positive_int, metavar="K", help="K exits, MW-BP's placement")
    where.add_argument("--auto", action="store_true", help="CNDS's placement (needs --solver)")
    p.add_argument("--solver", metavar="S", help="solver to probe with (--auto) and to base --solvers on")
    p.add_argument("--head", default="mwbp", metavar="mwbp|cnds|FILE",
                   help=f"exit head: {', '.join(HEADS)} or a template file (default mwbp)")
    p.add_argument("--weight", type=float, default=WEIGHT, metavar="W",
                   help=f"loss_weight of each exit (default {WEIGHT:g})")
    p.add_argument("--solvers", action="store_true", help="write one solver per BP mode beside the output")
    p.add_argument("--iterations", type=int, default=50, metavar="N",
                   help="--auto: training iterations before the probe decides (default 50)")
    p.add_argument("--threshold", type=threshold, default=THRESHOLD, metavar="T",
                   help=f"--auto: the vanishing threshold (default CNDS's {THRESHOLD:g})")
    p.add_argument("--primary-loss", default="", metavar="L", help="the primary loss (default: the deepest)")
    p.add_argument("-o", "--output", required=True, metavar="NEW", help="the new net (.prototxt)")
    add_gpu_option(p)
    p.add_argument("--input-shape", action="append", type=shape_arg, default=[], metavar="BLOB=N,C,H,W",
                   help="shape of a net input whose data source is absent (repeatable)")


def run(args) -> int:
    result = add_exits(args.file, args.output, after=args.after, count=args.count, auto=args.auto,
                       solver=args.solver, head=args.head, weight=args.weight, solvers=args.solvers,
                       iterations=max(0, args.iterations), input_shapes=dict(args.input_shape),
                       primary=args.primary_loss, device=args.gpu, threshold=args.threshold)
    if result.warnings:
        report(result.warnings, args.format)
    t = result.trunk
    tau = f", tau = {result.tau}" if result.tau else ""
    print(f"trunk: {t.L} weight layers below classifier '{t.classifier}' (primary loss '{t.primary}'){tau}")
    for prefix, p in result.exits.items():
        print(f"  {prefix}: on blob '{p.blob}' after weight layer {p.depth} (spliced after layer '{p.writer}')")
    if result.probe is not None:
        print(f"CNDS rule: {result.probe.placement().reason}")
    print(f"wrote {args.output}")
    for path in result.solvers:
        print(f"wrote {path}")
    return 0
