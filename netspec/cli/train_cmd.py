"""Train the net a Caffe solver file names, with its BP mode (STANDARD, JOINT, RELAY, MULTIWAY).

Logs follow Caffe (iteration, smoothed loss, lr, each loss, and every test
output of every test net, i.e. each exit's accuracy); --log also writes them as
JSON lines.  Snapshots are atomic; --snapshot resumes bit-identically on CPU;
Ctrl-C writes a snapshot and stops.

examples:
  netspec train --solver models/digits/solver_multiway.prototxt
  netspec train --solver solver.prototxt --snapshot digits_multiway_iter_300.netspec
  netspec train --solver solver.prototxt --gpu 0 --log train.jsonl
"""
from __future__ import annotations

from ..solve.solver import Solver, load_weights, read_snapshot
from .main import add_state_options


def add_arguments(p) -> None:
    p.add_argument("--solver", required=True, help="the solver .prototxt")
    p.add_argument("--weights", help="initialise from a netspec snapshot (by layer name)")
    p.add_argument("--snapshot", help="resume from this snapshot (.netspec)")
    p.add_argument("--gpu", help="GPU id, 'all', or 'cpu' (overrides solver_mode)")
    p.add_argument("--log", help="also write the log as JSON lines to this file")
    p.add_argument("--iterations", type=int, help="stop after this many iterations (default max_iter)")
    add_state_options(p)


def run(args) -> int:
    solver = Solver(args.solver, device=args.gpu, input_shapes=dict(args.input_shape), jsonl=args.log,
                    flush_denormal=True)
    if args.weights:
        missing = load_weights(solver.module, read_snapshot(args.weights)["weights"], args.weights)
        if missing:
            solver.log(f"note: {len(missing)} blobs were not in {args.weights} and keep their fillers")
    if args.iterations is not None:
        solver.param.max_iter = args.iterations
    try:
        solver.solve(resume=args.snapshot)
    except KeyboardInterrupt:
        return 130
    return 0
