"""Stage 4: the check passes, run in order, each adding to one bag of diagnostics.

``load`` reads a file (net or solver), ``check_net`` lowers a net for one
state and runs graph, shape and scope passes.  Every pass runs even when an
earlier one found errors, so the user sees them all at once; only then does
``NetspecError`` carry them out.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..diagnostics import Diagnostics, NetspecError
from ..graph import Blob, NetGraph, describe_cycle
from ..layers.base import Shape
from ..lower import NetSource, NetState, lower
from ..parse import parse_text, read_source
from ..proto import caffe_pb2
from ..schema import to_message
from .scopes import Loss, check_unreached, find_losses, learnable
from .shapes import infer_shapes, param_count
from .sharing import check_sharing
from .spans import LazySpans

__all__ = ["CheckedNet", "check_net", "load", "Loss", "learnable", "is_solver_text"]


@dataclass
class CheckedNet:
    """A net lowered for one state, with shapes, parameter counts and loss scopes."""

    source: NetSource
    state: NetState
    graph: NetGraph
    shapes: dict[Blob, Shape]
    blob_shapes: dict[str, list[tuple]]
    losses: list[Loss]
    shared: dict[str, tuple[str, int]] = field(default_factory=dict)   # "layer/i" -> owner
    diagnostics: Diagnostics = field(default_factory=Diagnostics)

    @property
    def name(self) -> str:
        return self.source.net.name

    def params(self, layer: str) -> int:
        return param_count(self.blob_shapes.get(layer, []))

    def total_params(self) -> int:
        """Parameter count with shared blobs counted once."""
        total = 0
        for node in self.graph.layers():
            for i, shape in enumerate(self.blob_shapes.get(node.name, [])):
                if f"{node.name}/{i}" not in self.shared:
                    total += param_count([shape])
        return total

    def losses_reaching(self, layer: str) -> list[str]:
        return [l.layer for l in self.losses if layer in l.scope]


def is_solver_text(message) -> bool:
    """Decide from its top-level field names whether a parsed file is a solver."""
    solver = caffe_pb2.SolverParameter.DESCRIPTOR.fields_by_name
    net = caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name
    names = {f.name for f in message.fields}
    return len(names & set(solver) - set(net)) > len(names & set(net) - set(solver))


def load(path: str | Path, diags: Diagnostics | None = None):
    """Parse and schema-check a net or solver file.

    Returns ``("net", NetSource)`` or ``("solver", (SolverParameter, SourceMap))``.
    """
    own = diags is None
    diags = diags if diags is not None else Diagnostics()
    text = read_source(path)
    tree = parse_text(text, str(path))
    kind = "solver" if is_solver_text(tree) else "net"
    cls = caffe_pb2.SolverParameter if kind == "solver" else caffe_pb2.NetParameter
    # the source map is made when a diagnostic first needs a span, from the same text:
    # a file that checks clean never holds it (issue 15: 200,000 layers in under 1 GB)
    lazy = LazySpans(text, str(path), cls, tree)
    errors = len(diags.errors)
    msg, smap = to_message(tree, cls, diags, lazy=lazy)
    lazy.per_field = lazy.per_field and len(diags.errors) == errors
    del tree
    result = ("solver", (msg, smap)) if kind == "solver" else ("net", NetSource(msg, smap, (), str(path)))
    if own:
        diags.check()
    return result


def check_net(src: NetSource, state: NetState | None = None,
              input_shapes: dict[str, tuple] | None = None,
              diags: Diagnostics | None = None) -> CheckedNet:
    """Lower ``src`` for ``state`` and run every check pass; raise if any error."""
    diags = diags if diags is not None else Diagnostics()
    state = state or NetState()
    graph = lower(src, state, diags)
    cycle = graph.find_cycle()
    if cycle:
        first = graph.layer(cycle[0])
        diags.error("E0302", f"the net has a cycle: {describe_cycle(cycle)}",
                    src.span(first.path + ("name",)),
                    help=["a layer cannot read a blob that depends on its own output"])
        diags.check()
    shapes, blob_shapes = infer_shapes(graph, src, diags, input_shapes)
    losses = find_losses(graph, src, diags)
    if state.phase == caffe_pb2.TRAIN:
        check_unreached(graph, losses, src, diags)
    shared = check_sharing(graph, blob_shapes, src, diags)
    if diags.errors:
        raise NetspecError(diags.items)
    return CheckedNet(src, state, graph, shapes, blob_shapes, losses, shared, diags)
