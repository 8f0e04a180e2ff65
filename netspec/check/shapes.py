"""Check pass: shape inference before anything is allocated, and parameter counts."""
from __future__ import annotations

from ..diagnostics import Diagnostics
from ..graph import Blob, NetGraph
from ..layers.base import LayerError, Shape, count, fmt_shape


def infer_shapes(graph: NetGraph, src, diags: Diagnostics,
                 overrides: dict[str, tuple] | None = None) -> tuple[dict, dict]:
    """Return (blob shapes, learnable blob shapes per layer); problems go to ``diags``.

    ``overrides`` maps net-input blob names to shapes (``--input-shape``); unknown
    input shapes propagate as None with one warning per input.
    """
    overrides = dict(overrides or {})
    shapes: dict[Blob, Shape] = {}
    params: dict[str, list[tuple]] = {}
    for node in graph.layers():
        bottoms = [shapes.get(b) for b in node.bottoms]
        tops = _layer_tops(node, bottoms, src, diags)
        failed = tops is None
        if failed:
            tops = [None] * len(node.tops)
        if node.impl.is_data:
            tops = [_input_shape(node, j, t, overrides, src, diags) for j, t in enumerate(tops)]
        for blob, shape in zip(node.tops, tops):
            shapes[blob] = shape
        # a layer whose shapes were rejected would report the same error again for its blobs
        params[node.name] = [] if failed else _blob_shapes(node, bottoms, src, diags)
    return shapes, params


def _layer_tops(node, bottoms: list[Shape], src, diags) -> list[Shape] | None:
    """The layer's top shapes (None each where a bottom's is unknown); None when the layer
    rejects its bottoms (the error is in ``diags``)."""
    n = len(node.tops)
    if not node.impl.is_data and any(b is None for b in bottoms):
        return [None] * n
    try:
        tops = list(node.impl.infer(bottoms))
    except LayerError as e:
        shown = ", ".join(f"{b}: {fmt_shape(s)}" for b, s in zip(node.lp.bottom, bottoms))
        diags.error(e.code, f"layer '{node.name}' ({node.type}): {e.message}",
                    src.span(node.path + e.field) if e.field else src.span(node.path + ("name",)),
                    help=e.help, notes=([f"bottom shapes: {shown}"] if shown else []) + e.notes)
        return None
    assert len(tops) == n, f"{node.type}.infer returned {len(tops)} shapes for {n} tops"
    return tops


def _input_shape(node, j: int, shape: Shape, overrides, src, diags) -> Shape:
    name = node.lp.top[j]
    if name in overrides:
        return tuple(overrides[name])
    if shape is None:
        diags.warning("W0500", f"the shape of input blob '{name}' (layer '{node.name}', {node.type}) "
                      "is unknown", src.span(node.path + ("name",)),
                      help=[f"give it with --input-shape {name}=N,C,H,W"],
                      notes=["shapes that depend on it are reported as '?'"])
    return shape


def _blob_shapes(node, bottoms, src, diags) -> list[tuple]:
    if not node.impl.blobs or any(b is None for b in bottoms):
        return []
    try:
        return [tuple(s) for s in node.impl.blob_shapes(bottoms)]
    except LayerError as e:
        diags.error(e.code, f"layer '{node.name}' ({node.type}): {e.message}",
                    src.span(node.path + e.field), help=e.help, notes=e.notes)
        return []


def param_count(blob_shapes: list[tuple]) -> int:
    return sum(count(s) for s in blob_shapes)
