"""Build the picture of a checked net under one BP mode, then write it in any format.

The drawing model (``Drawing``) is format-free: one node per layer (name, type,
key parameters, output shape, parameter count), one edge per blob hand-over,
each layer tagged with the losses whose gradient reaches it under the chosen
schedule (``netspec.schedule.gradient_sources``) and whether it is auxiliary
(it feeds only non-primary losses).  In-place layers stay nodes of their own,
stacked into the chain of the blob they rewrite, as Caffe's ``draw_net`` does.

Writers, by file extension: ``.dot`` (text), ``.svg``, ``.html`` (one page with
inline SVG and script), ``.png`` and ``.pdf``.  Layout comes from graphviz's
``dot`` when it is on PATH, else from the pure-Python layered layout in
``draw_layout`` (networkx).  PNG/PDF are rasterised with Pillow, so no format
needs graphviz or a browser.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..check import CheckedNet, check_net, load
from ..check.solver import load_solver
from ..diagnostics import Diagnostic, Diagnostics, NetspecError
from ..layers.base import fmt_shape
from ..lower import NetState
from ..proto import caffe_pb2
from ..check.scopes import unused_scope_warnings
from ..schedule import Schedule, Update, build_schedule, gradient_sources, scope_notes

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
FORMATS = ("svg", "png", "pdf", "dot", "html")
# Caffe field names -> the short words shown on a node
_SHORT = {"num_output": "out", "kernel_size": "k", "stride": "s", "pad": "p", "group": "g",
          "dilation": "d", "kernel_h": "kh", "kernel_w": "kw", "stride_h": "sh", "stride_w": "sw",
          "pad_h": "ph", "pad_w": "pw", "global_pooling": "global", "local_size": "size",
          "dropout_ratio": "ratio", "negative_slope": "slope"}


@dataclass
class Node:
    """One layer as drawn."""

    name: str
    type: str
    lines: list[str]                 # text under the name
    losses: list[str]                # losses whose gradient reaches it, in legend order
    aux: bool = False
    in_place: bool = False
    is_loss: bool = False
    detail: dict = field(default_factory=dict)     # everything the HTML panel shows


@dataclass
class Edge:
    src: str
    dst: str
    label: str


@dataclass
class LossInfo:
    name: str
    color: str
    text: str                        # weight and scope, for the legend
    trained: bool


@dataclass
class Drawing:
    """Everything a writer needs: nodes, edges, losses with colours, the schedule's steps."""

    title: str
    mode: str
    nodes: dict[str, Node]
    edges: list[Edge]
    losses: list[LossInfo]
    steps: list[str]
    rankdir: str = "TB"
    warnings: list = field(default_factory=list)   # diagnostics (a scope the mode ignores)

    def color(self, loss: str) -> str:
        return next(l.color for l in self.losses if l.name == loss)


def key_params(lp) -> str:
    """The set scalar fields of the layer's ``*_param`` messages, shortened (``out 64 k 3 p 1``)."""
    parts = []
    for fd, value in lp.ListFields():
        if not fd.name.endswith("_param") or fd.message_type is None or fd.is_repeated:
            continue
        for sub, v in value.ListFields():
            if sub.message_type is not None:
                continue                              # fillers and nested shapes: HTML panel only
            if sub.enum_type is not None:
                v = [sub.enum_type.values_by_number[x].name for x in v] if \
                    sub.is_repeated else sub.enum_type.values_by_number[v].name
            if sub.is_repeated:
                v = "x".join(map(str, v))
            parts.append(f"{_SHORT.get(sub.name, sub.name)} {v:g}" if isinstance(v, float)
                         else f"{_SHORT.get(sub.name, sub.name)} {v}")
    return " ".join(parts)


def auxiliary_layers(net: CheckedNet, primary: str | None) -> set[str]:
    """Layers that are not on the primary loss's forward path but feed another loss."""
    if primary is None:
        return set()
    main = net.graph.ancestors(primary) | {primary}
    others = set()
    for loss in net.losses:
        if loss.layer != primary:
            others |= net.graph.ancestors(loss.layer) | {loss.layer}
    return others - main


def build_drawing(net: CheckedNet, schedule: Schedule | None, rankdir: str = "TB") -> Drawing:
    """The drawing model of ``net``; without a schedule (no loss) nothing is coloured."""
    trained = set(schedule.losses) if schedule else set()
    notes = scope_notes(net, schedule) if schedule else {}
    losses = [LossInfo(l.layer, PALETTE[i % len(PALETTE)], _loss_text(l, notes.get(l.layer)),
                       l.layer in trained) for i, l in enumerate(net.losses)]
    order = [l.name for l in losses]
    sources = gradient_sources(net, schedule) if schedule else {}
    aux = auxiliary_layers(net, schedule.primary if schedule else None)
    nodes = {}
    for node in net.graph.layers():
        reach = sorted(sources.get(node.name, []), key=order.index)
        nodes[node.name] = Node(node.name, node.type, _node_lines(net, node), reach,
                                node.name in aux, node.in_place, node.is_loss, _detail(net, node, reach))
    edges = [Edge(u, node.name, str(blob)) for node in net.graph.layers()
             for u, blob, _ in sorted(net.graph.in_edges(node.name), key=lambda e: e[2])]
    mode = schedule.mode if schedule else "none"
    title = f"{net.name} ({net.state.phase_name}), {mode}" + \
        (f" ({schedule.variant})" if schedule and schedule.variant else "")
    return Drawing(title, mode, nodes, edges, losses, schedule_lines(schedule), rankdir)


def schedule_lines(schedule: Schedule | None) -> list[str]:
    """The schedule's steps in order; under MULTIWAY also the update order."""
    if schedule is None:
        return ["no loss: nothing is trained"]
    lines = [f"{i + 1}. {s}" for i, s in enumerate(schedule.steps)]
    if schedule.mode == "MULTIWAY":
        slots = [s.slot for s in schedule.steps if isinstance(s, Update)]
        lines.append("update order: " + " -> ".join(slots))
    return lines


def _loss_text(loss, note: str | None = None) -> str:
    text = ", ".join(f"{b.name} x {w:g}" for b, w in loss.tops)
    if note:                   # the scope, and whether the schedule's mode applies it
        return f"{text}; {note}"
    if loss.stop_at:
        text += f"; stop_at {', '.join(loss.stop_at)}"
    if loss.max_depth:
        text += f"; max_depth {loss.max_depth}"
    return text


def _shape(net: CheckedNet, blob) -> str:
    return fmt_shape(net.shapes.get(blob)).replace(", ", "x").strip("()")


def _node_lines(net: CheckedNet, node) -> list[str]:
    if node.in_place:
        return []                                     # compact: name and type only
    lines = [node.type]
    params = key_params(node.lp)
    if params:
        lines.append(params if len(params) <= 34 else params[:33] + "~")
    tops = ", ".join(_shape(net, b) for b in node.tops)
    if tops:
        lines.append(tops if len(tops) <= 34 else tops[:33] + "~")
    count = net.params(node.name)
    if count:
        lines.append(f"{count:,} params")
    return lines


def _detail(net: CheckedNet, node, reach: list[str]) -> dict:
    from google.protobuf import text_format
    return {"name": node.name, "type": node.type,
            "bottoms": [[str(b), _shape(net, b)] for b in node.bottoms],
            "tops": [[str(b), _shape(net, b)] for b in node.tops],
            "params": net.params(node.name),
            "blobs": [list(s) for s in net.blob_shapes.get(node.name, [])],
            "losses": reach, "in_place": node.in_place,
            "prototxt": text_format.MessageToString(node.lp)}


# -- from files to a drawing ------------------------------------------------------------------

def solver_for(solver_path: str | None, bp_mode: str | None, diags: Diagnostics):
    """(SolverParameter or None, net source or None) from ``--solver`` / ``--bp-mode``."""
    if solver_path:
        kind, obj = load(solver_path, diags)
        if kind != "solver":
            raise NetspecError([Diagnostic("E0800", f"'{solver_path}' is a net, not a solver file",
                                           help=["pass the net as NET and the solver with --solver"])])
        spec = load_solver(obj[0], obj[1], solver_path, diags, lambda p, d: load(p, d),
                           missing_nets_ok=True)
        diags.check()
        return obj[0], spec
    if bp_mode:
        return caffe_pb2.SolverParameter(bp_mode=bp_mode.upper()), None
    return None, None


def load_drawing(net_path: str, solver_path: str | None = None, bp_mode: str | None = None,
                 phase: str | None = None, rankdir: str = "TB",
                 input_shapes: dict | None = None) -> Drawing:
    """Check ``net_path`` for ``phase`` and build its drawing under the solver's BP mode."""
    diags = Diagnostics()
    kind, src = load(net_path, diags)
    diags.check()
    if kind != "net":
        raise NetspecError([Diagnostic("E0800", f"'{net_path}' is a solver file, not a net",
                                       help=["pass the net prototxt, and the solver with --solver"])])
    solver, _ = solver_for(solver_path, bp_mode, diags)
    net = check_net(src, NetState.of(phase or "TRAIN"), input_shapes or {})
    schedule = build_schedule(net, solver) if net.losses else None
    drawing = build_drawing(net, schedule, rankdir)
    if schedule is not None and solver is not None:
        warnings = Diagnostics()
        unused_scope_warnings(net.graph, net.losses, schedule.mode, net.source, warnings)
        drawing.warnings = warnings.items
    return drawing


def write(drawing: Drawing, out: str | Path, layout: str = "auto") -> Path:
    """Write ``drawing`` to ``out``; the format is the file's extension."""
    from . import draw_dot, draw_html, draw_raster, draw_svg
    from .draw_layout import layout_drawing
    out = Path(out)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise NetspecError([Diagnostic("E0800", f"cannot draw to '{out.name}': unknown format '{fmt}'",
                                       help=["use one of: " + ", ".join("." + f for f in FORMATS)])])
    if fmt == "dot":
        out.write_text(draw_dot.to_dot(drawing))
        return out
    placed = layout_drawing(drawing, layout)
    writers = {"svg": lambda: out.write_text(draw_svg.to_svg(drawing, placed)),
               "html": lambda: out.write_text(draw_html.to_html(drawing, placed)),
               "png": lambda: draw_raster.save(drawing, placed, out, "PNG"),
               "pdf": lambda: draw_raster.save(drawing, placed, out, "PDF")}
    writers[fmt]()
    return out
