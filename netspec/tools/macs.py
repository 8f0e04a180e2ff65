"""Multiply-accumulates per sample, from Caffe's shape formulas (``netspec check``'s MACs column).

Only the layers that multiply by learned weights count, as in the usual GMAC figures and as
``torch.utils.flop_counter`` counts (its FLOPs are 2 x these MACs): Convolution
(output elements x C_in/group x kernel area), Deconvolution (input elements x
C_out/group x kernel area) and InnerProduct (outer positions x K x num_output).  Everything
else (pooling, normalisation, activations, losses) is 0.  Figures are per sample: the
count for the blob shapes divided by the batch (axis 0).

An exit is a loss (or, in a net without losses, a net output); its cost is the MACs of every
layer it needs, so the exits of a multi-exit net share their trunk's MACs.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..check import CheckedNet
from ..layers.base import count


def layer_macs(net: CheckedNet, node) -> int | None:
    """MACs of one forward of ``node`` per sample; None when a bottom's shape is unknown."""
    shapes = [net.shapes.get(b) for b in node.bottoms]
    if node.type not in ("Convolution", "Deconvolution", "InnerProduct"):
        return 0
    if not shapes or any(s is None for s in shapes) or not shapes[0]:
        return None
    x, batch = shapes[0], max(shapes[0][0], 1)
    if node.type == "InnerProduct":
        axis = node.impl._k(x)[0]
        return count(x, 0, axis) * count(x, axis) * node.impl.p.num_output * len(shapes) // batch
    axis, kernel, *_ = node.impl.geometry(x)
    area, group = count(tuple(kernel)), node.impl.p.group
    if node.type == "Convolution":
        out = net.shapes.get(node.tops[0])
        return count(out) * (x[axis] // group) * area * len(shapes) // batch
    return count(x) * (node.impl.p.num_output // group) * area * len(shapes) // batch


@dataclass
class Exit:
    """One exit: its name (the loss layer, or the output blob), the MACs and the parameters
    (shared blobs once) of the layers it needs: what ``netspec export --exit`` keeps."""

    name: str
    macs: int | None
    layers: set
    params: int = 0


def net_macs(net: CheckedNet) -> dict[str, int | None]:
    """Layer name -> MACs per sample (None where shapes are unknown), in net order."""
    return {n.name: layer_macs(net, n) for n in net.graph.layers()}


def exits(net: CheckedNet, per_layer: dict[str, int | None] | None = None) -> list[Exit]:
    """Every exit of ``net`` with the MACs of the layers it needs, in net order."""
    per_layer = per_layer if per_layer is not None else net_macs(net)
    if net.losses:
        heads = [(loss.layer, loss.layer) for loss in net.losses]
    else:
        from ..compile.codegen import default_outputs
        heads = [(b.name, net.graph.producer[b]) for b in default_outputs(net)]
    out = []
    for name, layer in heads:
        needed = net.graph.ancestors(layer) | {layer}
        values = [per_layer[n] for n in needed]
        params = sum(_count(shape) for n in needed for i, shape in enumerate(net.blob_shapes.get(n, []))
                     if f"{n}/{i}" not in net.shared)
        out.append(Exit(name, None if None in values else sum(values), needed, params))
    return out


def _count(shape) -> int:
    return count(tuple(shape))


def fmt_macs(macs: int | None, unit: str = "", sep: str = " ") -> str:
    """Three significant digits: '0.725 GMAC', '105 MMAC', '3.2 KMAC' (``unit`` 'MAC'), '105M'
    (``sep`` '', no unit) for a column."""
    if macs is None:
        return "?"
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if macs >= scale:
            return f"{macs / scale:.3g}{sep}{prefix}{unit}"
    return f"{macs}{sep}{unit}".rstrip()


def exit_lines(net: CheckedNet, per_layer: dict[str, int | None] | None = None) -> list[str]:
    """'MACs per sample: ...' and one line per exit with its share of the main (costliest) exit."""
    per_layer = per_layer if per_layer is not None else net_macs(net)
    known = [m for m in per_layer.values() if m is not None]
    total = sum(known) if len(known) == len(per_layer) else None
    lines = [f"MACs per sample: {fmt_macs(total, 'MAC')} (convolutions and inner products)"]
    found = exits(net, per_layer)
    if len(found) < 2 or total is None:
        return lines
    main = max(found, key=lambda e: e.macs or 0)
    for e in found:
        share = f", {100 * e.macs / main.macs:.0f}% of main" if e.macs and main.macs and e is not main \
            else " (main)" if e is main else ""
        lines.append(f"  {e.name}: {fmt_macs(e.macs, 'MAC')}{share}; {e.params:,} parameters")
    return lines
