"""Print the backward schedule a solver file compiles to: the steps one iteration runs.

examples:
  netspec schedule --solver models/digits/solver_relay.prototxt
  netspec schedule --solver models/digits/solver_multiway_naive.prototxt
"""
from __future__ import annotations

from ..check import check_net
from ..schedule import build_schedule
from ..solve.solver import read_solver
from .main import add_state_options


def add_arguments(p) -> None:
    p.add_argument("--solver", required=True, help="the solver .prototxt")
    add_state_options(p)


def run(args) -> int:
    spec = read_solver(args.solver)
    net = check_net(spec.train, spec.train_state, dict(args.input_shape))
    schedule = build_schedule(net, spec.param)
    print(schedule)
    print("\nlosses (update order):")
    for name in schedule.losses:
        loss = next(l for l in net.losses if l.layer == name)
        print(f"  {name}: weight {loss.weight:g}, {len(schedule.params[name])} parameter blobs, "
              f"{len(loss.scope)} layers in scope")
    return 0
