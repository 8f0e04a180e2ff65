"""Check pass: parameter sharing by ``param { name }`` (Caffe's Net::AppendParam)."""
from __future__ import annotations

from ..diagnostics import Diagnostics
from ..graph import NetGraph
from ..layers.base import count, fmt_shape
from ..proto import caffe_pb2

PERMISSIVE = caffe_pb2.ParamSpec.PERMISSIVE


def check_sharing(graph: NetGraph, blob_shapes: dict, src, diags: Diagnostics) -> dict:
    """Map "layer/i" of every sharing blob to its owner (layer, i); check shapes."""
    owners: dict[str, tuple[str, int]] = {}
    shared: dict[str, tuple[str, int]] = {}
    for node in graph.layers():
        for i, spec in enumerate(node.lp.param):
            if not spec.name or i >= len(node.impl.blobs):
                continue
            owner = owners.setdefault(spec.name, (node.name, i))
            if owner == (node.name, i):
                continue
            shared[f"{node.name}/{i}"] = owner
            _compare(graph, blob_shapes, node, i, spec, owner, src, diags)
    return shared


def _compare(graph, blob_shapes, node, i, spec, owner, src, diags) -> None:
    mine = _shape(blob_shapes, node.name, i)
    theirs = _shape(blob_shapes, owner[0], owner[1])
    if mine is None or theirs is None:
        return
    permissive = spec.share_mode == PERMISSIVE
    same = count(mine) == count(theirs) if permissive else mine == theirs
    if not same:
        mode = "PERMISSIVE (equal counts)" if permissive else "STRICT (equal shapes)"
        diags.error("E0306", f"layer '{node.name}' shares param '{spec.name}' with layer "
                    f"'{owner[0]}', but the shapes differ: {fmt_shape(mine)} vs {fmt_shape(theirs)}",
                    src.span(node.path + ("param", i, "name")),
                    notes=[f"share_mode is {mode}"],
                    help=["make the layers' shapes agree, or use share_mode: PERMISSIVE "
                          "when only the element counts must match"])
    other = graph.layer(owner[0])
    if other.impl.lr_mult(owner[1]) != node.impl.lr_mult(i) and i < len(node.lp.param) \
            and node.lp.param[i].HasField("lr_mult"):
        diags.error("E0306", f"shared param '{spec.name}' has lr_mult {node.impl.lr_mult(i)} here "
                    f"but {other.impl.lr_mult(owner[1])} in layer '{owner[0]}'",
                    src.span(node.path + ("param", i, "lr_mult")),
                    help=["give shared params the same lr_mult, as Caffe requires"])


def _shape(blob_shapes, layer, i):
    shapes = blob_shapes.get(layer, [])
    return shapes[i] if i < len(shapes) else None
