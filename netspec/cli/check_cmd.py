"""Parse and check a net or a solver file, then print one row per layer.

Each row gives the layer's name and type, its top shapes, its parameter count
and which losses' gradients reach it (L1, L2, ... as listed below the table);
the line under it shows bottoms -> tops.  A solver file is validated together
with every net it names.

examples:
  netspec check models/digits/deep_plain.prototxt
  netspec check deploy.prototxt --phase TEST
  netspec check train_val.prototxt --input-shape data=10,3,227,227
  netspec check models/digits/solver_relay.prototxt
"""
from __future__ import annotations

import sys

from ..check import CheckedNet, check_net, load
from ..check.solver import load_solver
from ..diagnostics import Diagnostics, NetspecError
from ..layers.base import fmt_shape
from ..lower import NetState
from .main import add_state_options, report

WIDTH = 80


def add_arguments(p) -> None:
    p.add_argument("file", help="a net (.prototxt) or solver file")
    add_state_options(p)


def run(args) -> int:
    diags = Diagnostics()
    kind, obj = load(args.file, diags)
    shapes = dict(args.input_shape)
    nets: list[tuple[str, object, NetState]] = []
    if kind == "solver":
        spec = load_solver(obj[0], obj[1], args.file, diags, lambda p, d: load(p, d),
                           missing_nets_ok=True)
        diags.check()
        if spec.train is not None:
            nets.append(("train net", spec.train, _override(spec.train_state, args)))
        nets += [(f"test net {i + 1}", src, st) for i, (src, st) in enumerate(spec.tests)]
    else:
        diags.check()
        nets.append(("net", obj, NetState.of(args.phase or _default_phase(obj), args.level, args.stage)))
    checked = []
    for label, src, state in nets:
        net_diags = Diagnostics()
        try:
            checked.append((label, check_net(src, state, shapes, net_diags)))
        except NetspecError as e:
            diags.extend(e.diagnostics)
            continue
        diags.extend(net_diags)
    if diags.errors:
        raise NetspecError(diags.items)
    out = sys.stdout
    for label, net in checked:
        print(format_net(net, label), file=out)
    if diags.items:
        report(diags.items, getattr(args, "format", "text"))
    return 0


def _override(state: NetState, args) -> NetState:
    if args.phase or args.stage or args.level:
        return NetState.of(args.phase or state.phase_name, args.level or state.level,
                           args.stage or state.stages)
    return state


def _default_phase(src) -> str:
    """Deploy nets (no loss layer, no phase rules) are checked in TEST."""
    has_rules = any(lp.include or lp.exclude for lp in src.net.layer)
    has_loss = any(lp.type.endswith("Loss") or lp.loss_weight for lp in src.net.layer)
    return "TRAIN" if has_rules or has_loss else "TEST"


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "~"


def format_net(net: CheckedNet, label: str = "net") -> str:
    """The layer table, totals and loss list, fitting in 80 columns."""
    loss_ids = {l.layer: f"L{i + 1}" for i, l in enumerate(net.losses)}
    title = f"{label} '{net.name}' ({net.source.path}), phase {net.state.phase_name}"
    if net.state.stages:
        title += f", stages {', '.join(net.state.stages)}"
    lines = [_cut(title, WIDTH), "",
             f"{'layer':<22} {'type':<16} {'top shape':<20} {'params':>10}  grads",
             "-" * WIDTH]
    for node in net.graph.layers():
        tops = ", ".join(fmt_shape(net.shapes.get(b)).replace(", ", "x") for b in node.tops)
        grads = " ".join(loss_ids[l] for l in net.losses_reaching(node.name)) or "-"
        params = net.params(node.name)
        lines.append(f"{_cut(node.name, 22):<22} {_cut(node.type, 16):<16} {_cut(tops or '-', 20):<20} "
                     f"{params if params else '-':>10}  {_cut(grads, 6)}")
        flow = f"{', '.join(map(str, node.bottoms)) or '(input)'} -> {', '.join(map(str, node.tops)) or '-'}"
        lines.append("    " + _cut(flow, WIDTH - 4))
    lines.append("-" * WIDTH)
    lines.append(f"{len(net.graph)} layers, {net.total_params():,} parameters "
                 f"({net.total_params() * 4 / 2**20:.1f} MiB as float32)")
    lines += _loss_lines(net, loss_ids)
    return "\n".join(lines) + "\n"


def _loss_lines(net: CheckedNet, loss_ids: dict) -> list[str]:
    if not net.losses:
        return ["no losses"]
    out = ["", "losses:"]
    for loss in net.losses:
        weights = ", ".join(f"{b.name} x {w:g}" for b, w in loss.tops)
        learn = sum(1 for n in loss.scope if net.params(n))
        out.append(_cut(f"  {loss_ids[loss.layer]} {loss.layer}: {weights}; gradient reaches "
                        f"{len(loss.scope)} layers ({learn} with parameters)", WIDTH))
        if loss.stop_at or loss.max_depth:
            scope = []
            if loss.stop_at:
                scope.append("stop_at " + ", ".join(loss.stop_at))
            if loss.max_depth:
                scope.append(f"max_depth {loss.max_depth}")
            out.append(_cut("     scope: " + "; ".join(scope), WIDTH))
    return out

