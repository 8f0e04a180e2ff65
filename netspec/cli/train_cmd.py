"""Train the net a Caffe solver file names, with its BP mode (STANDARD, JOINT, RELAY, MULTIWAY).

Logs follow Caffe (iteration, smoothed loss, lr, each loss, and every test
output of every test net, i.e. each exit's accuracy); --log also writes them as
JSON lines.  Snapshots are atomic; --snapshot resumes bit-identically on CPU;
Ctrl-C or SIGTERM finishes the iteration, writes a snapshot, prints the command
that resumes from it and exits 130 (143 for SIGTERM), even when stdout is a
closed pipe.  A NaN or inf loss or gradient stops training with exit code 1
and a diagnostic naming the layer (solver field `nonfinite: STOP|SKIP|CONTINUE`).

examples:
  netspec train --solver models/digits/solver_multiway.prototxt
  netspec train --solver solver.prototxt --snapshot digits_multiway_iter_300.netspec
  netspec train --solver solver.prototxt --gpu 0 --log train.jsonl
  netspec train --solver solver.prototxt --weights bvlc_reference.caffemodel
  netspec train --solver solver.prototxt --dtype float64
  netspec train --solver solver.prototxt --compile
  torchrun --nproc_per_node 2 -m netspec train --solver solver.prototxt --auto-resume
  (data-parallel: batch_size is the global batch; see docs/distributed.md)
"""
from __future__ import annotations

import os
import signal
import sys

from ..check.scopes import unused_scope_warnings
from ..diagnostics import Diagnostic, Diagnostics, NetspecError
from ..solve import distributed
from ..solve.solver import Solver
from .main import add_gpu_option, add_state_options, report
from .next_steps import ExitReport
from .progress import training_progress


def add_arguments(p) -> None:
    p.add_argument("--solver", required=True, help="the solver .prototxt")
    p.add_argument("--weights", help="initialise from a.caffemodel[,b.caffemodel] (copied by layer "
                   "name, as Caffe) or a netspec snapshot")
    p.add_argument("--snapshot", help="resume from this snapshot (.netspec)")
    add_gpu_option(p)                   # overrides the solver's solver_mode
    p.add_argument("--log", help="also write the log as JSON lines to this file")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="train in this precision "
                   "(weights, optimizer state, batches; default float32)")
    p.add_argument("--iterations", type=int, metavar="N", help="stop after this many iterations (default max_iter)")
    p.add_argument("--auto-resume", action="store_true", help="resume from the newest snapshot of "
                   "snapshot_prefix, if any (always on after a torchrun restart)")
    p.add_argument("--sync-bn", action="store_true", help="under torchrun: BatchNorm uses the "
                   "statistics of the global batch")
    p.add_argument("--dist-timeout", type=float, metavar="S", help="under torchrun: seconds a rank "
                   "waits for the others before failing (default $NETSPEC_DIST_TIMEOUT or 300)")
    p.add_argument("--bucket-mb", type=float, default=distributed.BUCKET_MB, metavar="MB",
                   help="under torchrun: gradient all-reduce bucket size (default 25, as DDP)")
    p.add_argument("--compile", action="store_true", default=None, help="train with torch.compile, "
                   "one compiled graph per segment between scopes and exits (solver field compile: true)")
    add_state_options(p)


DTYPES = {"float32": "float32", "float64": "float64"}


def run(args) -> int:
    if hasattr(signal, "SIGPIPE"):      # a closed stdout is an EPIPE error the log absorbs,
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)   # never a signal that kills training
    if args.weights and args.snapshot:    # as caffe train: resuming restores weights itself
        raise NetspecError([Diagnostic("E0802", "give either --weights or --snapshot, not both",
                                       help=["--snapshot resumes training; --weights starts it "
                                             "from pretrained weights"])])
    if args.gpu == "all" and not distributed.launched() and distributed.gpu_count() > 1:
        return distributed.spawn_all_gpus(sys.argv[1:])
    if distributed.launched():
        return _run_rank(args)
    import torch
    dtype = getattr(torch, args.dtype) if args.dtype else None
    return _train(args, Solver(args.solver, device=args.gpu, input_shapes=dict(args.input_shape),
                               jsonl=args.log, flush_denormal=True, dtype=dtype, compile=args.compile))


def _run_rank(args) -> int:
    try:
        return distributed.run_rank(args, _train)
    except NetspecError as e:
        if not any(d.code == "E0900" for d in e.diagnostics):
            raise
        # A broken process group cannot be torn down: gloo's threads abort the interpreter's
        # exit (SIGABRT, "terminate called without an active exception"), which would hide
        # the exit code 1 torchrun and the user should see.  Report, flush, leave at once.
        report(e.diagnostics, args.format)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


def _scope_warnings(solver, fmt: str) -> None:
    """W0301 for each gradient_scope the solver's bp_mode ignores, as `netspec check --solver`
    reports it (once, from rank 0 under torchrun)."""
    if os.environ.get("RANK", "0") != "0":
        return
    diags = Diagnostics()
    unused_scope_warnings(solver.net.graph, solver.net.losses, solver.schedule.mode, solver.net.source, diags)
    if diags.items:
        report(diags.items, fmt)


def _train(args, solver) -> int:
    _scope_warnings(solver, args.format)
    if args.weights:
        solver.copy_weights(args.weights)
    if args.iterations is not None:
        solver.param.max_iter = args.iterations
    resume = args.snapshot
    if not resume and (args.auto_resume or distributed.restarted()):
        resume = solver.latest_snapshot()      # None: nothing to resume, start afresh
    report = None if distributed.launched() else ExitReport(solver)     # exits table, weights, next steps
    try:
        with training_progress(solver):
            solver.solve(resume=resume)
    except KeyboardInterrupt:
        return 128 + int(solver.stop_signal or signal.SIGINT)
    if report is not None:
        report.finish()
    return 0
