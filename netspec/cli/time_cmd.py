"""Time a net like `caffe time`: average forward, backward and forward-backward per layer and in total.

Inputs are synthetic (random data, zero labels) with the net's declared shapes;
timing starts after --warmup iterations.  Totals time the whole compiled module;
per-layer figures execute the generated forward one layer's statements at a
time, and each layer's backward on its own (see netspec.tools.timing).  --gpu
uses CUDA events.  With a solver (--solver, or a solver file as FILE) one full
scheduled training iteration is also timed for every BP mode.

examples:
  netspec time models/relay/vgg19_fig2.prototxt --iterations 10
  netspec time train_val.prototxt --gpu --iterations 50
  netspec time train_val.prototxt --solver solver.prototxt
"""
from __future__ import annotations

from ..check import check_net, load
from ..diagnostics import Diagnostics
from ..lower import NetState
from ..tools.draw import solver_for
from ..tools.timing import format_table, time_net
from .main import add_gpu_option, add_state_options, device_of, positive_int


def add_arguments(p) -> None:
    p.add_argument("file", help="the net (.prototxt), or a solver file naming it")
    p.add_argument("--solver", metavar="S", help="also time one scheduled iteration per BP mode")
    p.add_argument("--iterations", type=positive_int, default=50, metavar="N",
                   help="timed iterations (default 50)")
    p.add_argument("--warmup", type=int, default=5, metavar="N", help="untimed iterations first (default 5)")
    p.add_argument("--optimize", choices=["none", "default", "max"], default="default",
                   help="TEST phase: time the inference build, forward only (default); "
                        "max adds channels_last; none times the exact build with backward")
    add_gpu_option(p)
    add_state_options(p)


def run(args) -> int:
    diags = Diagnostics()
    kind, obj = load(args.file, diags)
    diags.check()
    if kind == "solver":
        solver, spec = solver_for(args.file, None, diags)
        src, state = spec.train, spec.train_state
        if src is None:
            from ..diagnostics import Diagnostic, NetspecError
            raise NetspecError([Diagnostic("E0601", f"solver '{args.file}' names no train net to time",
                                           help=["set net: or train_net: in the solver file"])])
    else:
        solver, _ = solver_for(args.solver, None, diags)
        src, state = obj, None
    state = NetState.of(args.phase or (state.phase_name if state else "TRAIN"), args.level, args.stage)
    net = check_net(src, state, dict(args.input_shape))
    if state.phase_name == "TEST" and args.optimize != "none":
        from ..tools.time_inference import time_inference
        timing = time_inference(net, max(1, args.iterations), max(0, args.warmup), device_of(args.gpu),
                                channels_last=args.optimize == "max")
        print(format_table(timing), end="")
        print(f"(inference build, --optimize {args.optimize}: BatchNorm/Scale folded, forward only; "
              "--optimize none times the exact build with backward)")
        return 0
    timing = time_net(net, max(1, args.iterations), max(0, args.warmup), device_of(args.gpu), solver)
    print(format_table(timing), end="")
    return 0
