"""Probe where the gradient vanishes: mean |dL/dW| of every weight layer for every loss.

Trains the solver's net for --iterations N with the solver's own BP mode (N defaults
to 50, CNDS's window) and measures, at iteration 0 and after N, the mean absolute
gradient of each loss with respect to each weight layer it updates under that mode,
on one fixed batch of training data.  Values under the threshold (CNDS's 1e-7) are
starred, and the last line says where CNDS's rule (Wang et al. 2015, sec. 3.2) puts
supervision branches: after each trunk layer whose primary-loss gradient vanishes while
the next one's does not.  --plot draws the CNDS Fig. 2a view on a log scale.

examples:
  netspec probe --solver models/digits/solver_standard.prototxt
  netspec probe --solver models/digits/solver_multiway.prototxt --iterations 20 --plot grads.svg
"""
from __future__ import annotations

import argparse
import json

from ..fileio import write_atomic
from ..tools import probe as P
from .main import add_gpu_option, non_negative_int, shape_arg


def threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got '{text}'")
    return value


def add_arguments(p) -> None:
    p.add_argument("--solver", required=True, metavar="S", help="the solver .prototxt (its bp_mode trains)")
    p.add_argument("--iterations", type=non_negative_int, default=P.ITERATIONS, metavar="N",
                   help=f"training iterations before the second measurement (default {P.ITERATIONS})")
    p.add_argument("--plot", metavar="OUT", help="draw the gradients (.svg, .png, ...) on a log scale")
    p.add_argument("--threshold", type=threshold, default=P.THRESHOLD, metavar="T",
                   help=f"vanishing threshold (default CNDS's {P.THRESHOLD:g})")
    p.add_argument("--json", metavar="OUT", help="also write the measurements as JSON")
    add_gpu_option(p)
    p.add_argument("--input-shape", action="append", type=shape_arg, default=[], metavar="BLOB=N,C,H,W",
                   help="shape of a net input whose data source is absent (repeatable)")


def run(args) -> int:
    from ..solve.solver import Solver
    solver = Solver(args.solver, device=args.gpu, input_shapes=dict(args.input_shape), log=lambda line: None)
    result = P.probe(solver, at=(0, args.iterations), threshold=args.threshold)
    print(f"{result.mode} BP, primary loss '{result.primary}': mean |dL/dW| per weight layer "
          f"(* below {result.threshold:g})")
    print(P.table(result))
    print()
    print("\n".join(P.summary(result)))
    if args.plot:
        print(f"wrote {P.plot(result, args.plot)}")
    if args.json:
        print(f"wrote {write_atomic(args.json, json.dumps(result.to_json(), indent=1) + chr(10))}")
    return 0
