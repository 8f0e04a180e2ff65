"""Print the backward schedule a solver file compiles to: the steps one iteration runs.

Each loss is listed with what its gradient trains under the solver's bp_mode and
whether its gradient_scope applies (scopes bind RELAY unless their ``modes`` say
otherwise); a scope the mode ignores is also reported as a warning (W0301).

examples:
  netspec schedule --solver models/digits/solver_relay.prototxt
  netspec schedule --solver models/digits/solver_multiway_naive.prototxt
"""
from __future__ import annotations

from ..check import check_net
from ..check.scopes import unused_scope_warnings
from ..diagnostics import Diagnostics
from ..schedule import build_schedule, scope_notes
from ..solve.solver import read_solver
from .main import add_state_options, report


def add_arguments(p) -> None:
    p.add_argument("--solver", required=True, help="the solver .prototxt")
    add_state_options(p)


def run(args) -> int:
    spec = read_solver(args.solver)
    net = check_net(spec.train, spec.train_state, dict(args.input_shape))
    schedule = build_schedule(net, spec.param)
    print(schedule)
    print("\nlosses (update order):")
    notes = scope_notes(net, schedule)
    for name in schedule.losses:
        loss = next(l for l in net.losses if l.layer == name)
        print(f"  {name}: weight {loss.weight:g}, {len(schedule.params[name])} parameter blobs, "
              f"{len(schedule.reach[name])} layers reached")
        if name in notes:
            print(f"    scope: {notes[name]}")
    if schedule.segment_lr != "NONE":
        print(f"segment learning rate: {schedule.segment_lr}")
    diags = Diagnostics()
    unused_scope_warnings(net.graph, net.losses, schedule.mode, net.source, diags)
    if diags.items:
        report(diags.items, getattr(args, "format", "text"))
    return 0
