"""Parse and check a net or a solver file, then print one row per layer.

Each row gives the layer's name and type, its top shapes, its parameter count, its
multiply-accumulates per sample (MACs; the totals per exit follow the table)
and which losses' gradients reach it (L1, L2, ... as listed below the table);
the line under it shows bottoms -> tops.  A solver file is validated together
with every net it names; its train net's gradients and scopes are shown under the
solver's bp_mode, and a gradient_scope that mode ignores is a warning (W0301).

examples:
  netspec check models/digits/deep_plain.prototxt
  netspec check deploy.prototxt --phase TEST
  netspec check train_val.prototxt --input-shape data=10,3,227,227
  netspec check models/digits/solver_relay.prototxt
  netspec check models/digits/deep_plain_relay.prototxt --solver models/digits/solver_multiway.prototxt
"""
from __future__ import annotations

import sys

from ..check import CheckedNet, check_net, load
from ..check.scopes import unused_scope_warnings
from ..check.solver import load_solver
from ..diagnostics import Diagnostic, Diagnostics, NetspecError
from ..layers.base import fmt_shape
from ..lower import NetState
from ..schedule import Schedule, build_schedule, gradient_sources, scope_notes
from ..tools.macs import exit_lines, fmt_macs, net_macs
from ..check import memory
from .main import add_gpu_option, add_state_options, device_of, report


def add_arguments(p) -> None:
    p.add_argument("file", help="a net (.prototxt) or solver file")
    p.add_argument("--solver", metavar="S",
                   help="show the net's gradients and scopes under this solver's bp_mode")
    add_state_options(p)
    add_gpu_option(p)           # warn when one batch needs more than that GPU's memory


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
    schedules = {}
    param = spec.param if kind == "solver" else _solver_param(getattr(args, "solver", None))
    first = checked[0] if checked else None
    if param is not None and first and first[0] in ("train net", "net") and first[1].losses:
        net = first[1]
        schedules[first[0]] = sched = build_schedule(net, param)
        unused_scope_warnings(net.graph, net.losses, sched.mode, net.source, diags)
    out = sys.stdout
    device = device_of(args.gpu)
    for label, net in checked:
        # line by line: a 200,000-layer table is 400,000 lines, not worth holding at once
        for line in format_lines(net, label, schedules.get(label)):
            print(line, file=out)
        print(_memory(net, label, device, diags), file=out)
    if diags.items:
        report(diags.items, getattr(args, "format", "text"))
    return 0


def _memory(net: CheckedNet, label: str, device: str, diags: Diagnostics) -> str:
    """The memory line under a net's table; W0700 when one batch would not fit ``device``."""
    m = memory.estimate(net)
    warning = memory.fit_warning(m, f"{label} '{net.name}'", device)
    if warning is not None:
        diags.extend([warning])
    return memory.report_line(m) + "\n"


def _solver_param(path: str | None):
    """The SolverParameter of ``--solver`` (its nets are not loaded), or None."""
    if not path:
        return None
    diags = Diagnostics()
    kind, obj = load(path, diags)
    diags.check()
    if kind != "solver":
        raise NetspecError([Diagnostic("E0800", f"'{path}' is a net, not a solver file",
                                       help=["pass the net as FILE and the solver with --solver"])])
    return obj[0]


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


def format_net(net: CheckedNet, label: str = "net", schedule: Schedule | None = None) -> str:
    """The layer table, totals and loss list: 80 columns for names, types and shapes of usual
    length and up to four losses, wider for longer ones; nothing is cut that tells layers or
    losses apart (names, types and shapes over 40 characters excepted).

    With a ``schedule`` the grads column and the scopes follow its BP mode; without,
    they show each loss's gradient_scope as written.
    """
    return "\n".join(format_lines(net, label, schedule)) + "\n"


def format_lines(net: CheckedNet, label: str = "net", schedule: Schedule | None = None):
    """:func:`format_net`'s lines, one at a time."""
    loss_ids = {l.layer: i + 1 for i, l in enumerate(net.losses)}
    title = f"{label} '{net.name}', phase {net.state.phase_name}"
    if net.state.stages:
        title += f", stages {', '.join(net.state.stages)}"
    sources = gradient_sources(net, schedule) if schedule is not None else None
    name_w, type_w, shape_w = _column_widths(net)
    header = f"{'layer':<{name_w}} {'type':<{type_w}} {'top shape':<{shape_w}} {'params':>9} {'MACs':>7}  grads"
    rule = "-" * max(80, len(header))
    # the path on a line of its own: it is as long as it is, and cut it would hide the phase
    yield from [title, f"  {net.source.path}", "", header, rule]
    unknown = unknown_param_layers(net)
    macs = net_macs(net)
    for node in net.graph.layers():
        reaching = net.losses_reaching(node.name) if sources is None else sources[node.name]
        grads = _loss_set(sorted(loss_ids[l] for l in reaching))      # last column: never cut
        params = net.params(node.name)
        params = "?" if node.name in unknown else params     # blobs whose shape needs an input's
        yield (f"{_cut(node.name, name_w):<{name_w}} {_cut(node.type, type_w):<{type_w}} "
               f"{_cut(_tops_cell(net, node), shape_w):<{shape_w}} "
               f"{params if params else '-':>9} {_macs_cell(macs[node.name]):>7}  {grads}")
        yield f"    {', '.join(map(str, node.bottoms)) or '(input)'} -> {', '.join(map(str, node.tops)) or '-'}"
    yield rule
    yield from _total_lines(net, unknown)
    yield from exit_lines(net, macs)
    yield from _loss_lines(net, loss_ids, schedule)


def _loss_set(ids: list[int]) -> str:
    """Loss numbers as L-labels, three or more consecutive ones as a range: 'L1-L4', 'L1 L3'."""
    if not ids:
        return "-"
    runs, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or ids[i] != ids[i - 1] + 1:
            a, b = ids[start], ids[i - 1]
            runs.append(f"L{a}-L{b}" if b - a >= 2 else " ".join(f"L{k}" for k in range(a, b + 1)))
            start = i
    return " ".join(runs)


def _tops_cell(net: CheckedNet, node) -> str:
    return ", ".join(fmt_shape(net.shapes.get(b)).replace(", ", "x") for b in node.tops) or "-"


def _column_widths(net: CheckedNet) -> tuple[int, int, int]:
    """Name, type and top-shape columns as wide as their longest entry (one pass, nothing
    kept), at least the 80-column layout's and at most 40 (longer entries are cut)."""
    name_w, type_w, shape_w = 20, 14, 18
    for node in net.graph.layers():
        name_w, type_w = max(name_w, len(node.name)), max(type_w, len(node.type))
        shape_w = max(shape_w, len(_tops_cell(net, node)))
    return min(name_w, 40), min(type_w, 40), min(shape_w, 40)


def _macs_cell(macs: int | None) -> str:
    return "-" if macs == 0 else fmt_macs(macs, sep="")


def unknown_param_layers(net: CheckedNet) -> list[str]:
    """Layers with learnable blobs whose shapes are unknown (they follow an input of unknown shape)."""
    return [n.name for n in net.graph.layers() if n.impl.blobs and not net.blob_shapes.get(n.name)]


def unknown_inputs(net: CheckedNet) -> list[str]:
    """The net's input blobs (data layer tops) whose shape is unknown."""
    return list(dict.fromkeys(b.name for n in net.graph.layers() if n.impl.is_data
                              for b in n.tops if net.shapes.get(b) is None))


def _total_lines(net: CheckedNet, unknown: list[str]) -> list[str]:
    """The totals line; with unknown input shapes the count is unknown, never a false number."""
    total = net.total_params()
    if not unknown:
        return [f"{len(net.graph)} layers, {total:,} parameters ({total * 4 / 2**20:.1f} MiB as float32)"]
    known = f", {total:,} in the layers with known shapes" if total else ""
    inputs = unknown_inputs(net)
    give = " ".join(f"{b}=N,C,H,W" for b in inputs)
    return [f"{len(net.graph)} layers, parameters unknown ({len(unknown)} layer(s) need the shape of "
            f"input {', '.join(inputs) or '?'}{known})",
            f"  give the shape with --input-shape {give}" if inputs else
            "  give the input shapes with --input-shape BLOB=N,C,H,W"]


def _loss_lines(net: CheckedNet, loss_ids: dict, schedule: Schedule | None = None) -> list[str]:
    if not net.losses:
        return ["no losses"]
    out = ["", "losses:" if schedule is None else f"losses under {schedule.mode}:"]
    notes = scope_notes(net, schedule) if schedule is not None else {}
    for loss in net.losses:
        if [b.name for b, _ in loss.tops] == [loss.layer]:     # the usual top, named as its layer
            what = f"{loss.layer} x {loss.tops[0][1]:g}"
        else:
            what = f"{loss.layer}: " + ", ".join(f"{b.name} x {w:g}" for b, w in loss.tops)
        reach = schedule.reach.get(loss.layer, set()) if schedule is not None else loss.scope
        learn = sum(1 for n in reach if net.params(n))
        out.append(f"  L{loss_ids[loss.layer]} {what}; reaches "
                   f"{len(reach)} layers ({learn} with parameters)")
        if loss.layer in notes:
            out.append("     scope: " + notes[loss.layer])
        elif loss.stop_at or loss.max_depth:
            scope = []
            if loss.stop_at:
                scope.append("stop_at " + ", ".join(loss.stop_at))
            if loss.max_depth:
                scope.append(f"max_depth {loss.max_depth}")
            out.append("     scope: " + "; ".join(scope))
    return out

