"""Common layers: InnerProduct, Concat, Eltwise, Softmax, reshaping, Accuracy and friends."""
from __future__ import annotations

from ..proto import caffe_pb2
from .base import Layer, LayerError, ShapeError, canonical_axis, count, fmt_shape, register


def same_shapes(layer: Layer, shapes: list) -> None:
    """Raise ShapeError unless every bottom has the shape of bottom 0 (Caffe's CHECK)."""
    for i, s in enumerate(shapes[1:], 1):
        if tuple(s) != tuple(shapes[0]):
            raise ShapeError(f"bottom {i} has shape {fmt_shape(s)} but bottom 0 has "
                             f"{fmt_shape(shapes[0])}; {layer.type} needs equal shapes",
                             help=["reshape or crop the bottoms to one shape first"])


def not_in_place(layer: Layer) -> None:
    """Caffe refuses top == bottom for layers whose top is a view of the bottom's data."""
    if layer.lp.top and layer.lp.bottom and layer.lp.top[0] == layer.lp.bottom[0]:
        raise LayerError(f"{layer.type} cannot run in place (top '{layer.lp.top[0]}' is its bottom)",
                         ("top", 0), help=["give the top a new name"])


def legacy_axis(layer: Layer, legacy: str) -> int:
    """``axis`` or the deprecated ``concat_dim``/``slice_dim`` (Caffe refuses both together)."""
    p = layer.p
    if p.HasField("axis") and p.HasField(legacy):
        raise LayerError(f"give either axis or {legacy}, not both", layer.field(legacy),
                         help=[f"{legacy} is deprecated: keep `axis`"])
    return getattr(p, legacy) if p.HasField(legacy) else p.axis


@register
class InnerProduct(Layer):
    """y = x W^T + b over the axes from ``axis`` on (W is (N, K), or (K, N) with transpose)."""

    type = "InnerProduct"
    param = "inner_product_param"
    blobs = ("weight", "bias")
    runtime = ("CaffeInnerProduct",)

    def setup(self):
        self.positive(self.p.num_output, "num_output")
        self.check_filler("weight_filler")
        self.check_filler("bias_filler")
        if not self.p.bias_term:
            self.blobs = ("weight",)

    def _k(self, shape):
        axis = canonical_axis(self.p.axis, len(shape), self, self.field("axis"))
        return axis, count(shape, axis)

    def infer(self, shapes):
        axis, _ = self._k(shapes[0])
        return [tuple(shapes[0][:axis]) + (self.p.num_output,)]

    def blob_shapes(self, shapes):
        _, k = self._k(shapes[0])
        n = self.p.num_output
        w = (k, n) if self.p.transpose else (n, k)
        return [w, (n,)] if self.p.bias_term else [w]

    def fillers(self):
        return [self.p.weight_filler, self.p.bias_filler][:len(self.blobs)]

    def module(self, shapes):
        axis, k = self._k(shapes[0])
        return (f"CaffeInnerProduct({k}, {self.p.num_output}, axis={axis}, "
                f"bias={self.p.bias_term}, transpose={self.p.transpose})")

    def forward(self, bottoms, shapes):
        return f"{self.mod()}({bottoms[0]})"


@register
class Embed(Layer):
    """A lookup table: top = weight[index] + bias, weight (input_dim, num_output)."""

    type = "Embed"
    param = "embed_param"
    blobs = ("weight", "bias")
    runtime = ("CaffeEmbed",)
    no_grad_bottoms = (0,)          # Caffe cannot back-propagate into the indices

    def setup(self):
        self.positive(self.p.num_output, "num_output")
        self.positive(self.p.input_dim, "input_dim")
        self.check_filler("weight_filler")
        self.check_filler("bias_filler")
        if not self.p.bias_term:
            self.blobs = ("weight",)

    def infer(self, shapes):
        return [tuple(shapes[0]) + (self.p.num_output,)]

    def blob_shapes(self, shapes):
        w = (self.p.input_dim, self.p.num_output)
        return [w, (self.p.num_output,)] if self.p.bias_term else [w]

    def fillers(self):
        return [self.p.weight_filler, self.p.bias_filler][:len(self.blobs)]

    def module(self, shapes):
        return f"CaffeEmbed({self.p.input_dim}, {self.p.num_output}, bias={self.p.bias_term})"

    def forward(self, bottoms, shapes):
        return f"{self.mod()}({bottoms[0]})"


_ELTWISE = caffe_pb2.EltwiseParameter


@register
class Eltwise(Layer):
    """Elementwise SUM (weighted by ``coeff``), PROD or MAX of equally shaped bottoms."""

    type = "Eltwise"
    param = "eltwise_param"
    bottoms = (2, None)

    def setup(self):
        self.op = _ELTWISE.EltwiseOp.Name(self.p.operation)
        coeff, n = list(self.p.coeff), len(self.lp.bottom)
        if coeff and self.op != "SUM":
            raise LayerError(f"coeff only applies to operation SUM, not {self.op}",
                             self.field("coeff", 0), help=["remove the coeff lines"])
        if coeff and len(coeff) != n:
            raise LayerError(f"{len(coeff)} coeff values for {n} bottoms", self.field("coeff", 0),
                             help=["give one coeff per bottom, or none (all 1)"])
        self.coeff = coeff or [1.0] * n
        self.runtime = ("caffe_eltwise_max",) if self.op == "MAX" else ()

    def infer(self, shapes):
        same_shapes(self, shapes)
        return [tuple(shapes[0])]

    def forward(self, bottoms, shapes):
        if self.op == "MAX":
            return f"caffe_eltwise_max({', '.join(bottoms)})"
        if self.op == "PROD":
            return " * ".join(bottoms)
        terms = [b if c == 1 else f"{c!r} * {b}" for b, c in zip(bottoms, self.coeff)]
        return " + ".join(terms)


@register
class Concat(Layer):
    """Joins the bottoms along ``axis`` (legacy ``concat_dim``); other axes must agree."""

    type = "Concat"
    param = "concat_param"
    bottoms = (1, None)

    def infer(self, shapes):
        first = shapes[0]
        axis = canonical_axis(legacy_axis(self, "concat_dim"), len(first), self, self.field("axis"))
        for i, s in enumerate(shapes[1:], 1):
            if len(s) != len(first) or any(a != b for j, (a, b) in enumerate(zip(s, first)) if j != axis):
                raise ShapeError(f"bottom {i} {fmt_shape(s)} does not match bottom 0 "
                                 f"{fmt_shape(first)} outside the concat axis {axis}",
                                 self.field("axis"), help=["only the concat axis may differ"])
        return [first[:axis] + (sum(s[axis] for s in shapes),) + first[axis + 1:]]

    def forward(self, bottoms, shapes):
        if len(bottoms) == 1:
            return bottoms[0]
        axis = legacy_axis(self, "concat_dim") % len(shapes[0])
        return f"torch.cat([{', '.join(bottoms)}], dim={axis})"


@register
class Slice(Layer):
    """Cuts the bottom along ``axis`` at ``slice_point``s, or into equal parts."""

    type = "Slice"
    param = "slice_param"
    tops = (1, None)

    def setup(self):
        points = list(self.p.slice_point)
        if points and len(points) != self.num_tops() - 1:
            raise LayerError(f"{len(points)} slice_point values for {self.num_tops()} tops",
                             self.field("slice_point", 0),
                             help=["give one slice_point fewer than there are tops, or none"])
        for i in range(1, len(points)):
            if points[i] <= points[i - 1]:
                raise LayerError(f"slice_point values must increase, got {points}",
                                 self.field("slice_point", i))
        if points and points[0] <= 0:
            raise LayerError("slice_point values must be positive", self.field("slice_point", 0))

    def _sizes(self, shape):
        axis = canonical_axis(legacy_axis(self, "slice_dim"), len(shape), self, self.field("axis"))
        dim, n, points = shape[axis], self.num_tops(), list(self.p.slice_point)
        if not points:
            if dim % n:
                raise ShapeError(f"axis {axis} has size {dim}, not divisible into {n} equal slices",
                                 self.field("axis"), help=["give slice_point values, or change the tops"])
            return axis, [dim // n] * n
        if points[-1] >= dim:
            raise ShapeError(f"slice_point {points[-1]} is not inside axis {axis} of size {dim}",
                             self.field("slice_point", len(points) - 1),
                             help=[f"slice points must lie in [1, {dim - 1}]"])
        edges = [0] + points + [dim]
        return axis, [b - a for a, b in zip(edges, edges[1:])]

    def infer(self, shapes):
        axis, sizes = self._sizes(shapes[0])
        return [shapes[0][:axis] + (s,) + shapes[0][axis + 1:] for s in sizes]

    def forward(self, bottoms, shapes):
        if self.num_tops() == 1:
            return bottoms[0]
        axis, sizes = self._sizes(shapes[0])
        return f"torch.split({bottoms[0]}, {sizes}, dim={axis})"


@register
class Split(Layer):
    """Copies its bottom to every top (the backward pass sums the top diffs)."""

    type = "Split"
    tops = (1, None)

    def forward(self, bottoms, shapes):
        return ", ".join([bottoms[0]] * self.num_tops())


@register
class Flatten(Layer):
    """Merges the axes ``axis`` .. ``end_axis`` (inclusive) into one."""

    type = "Flatten"
    param = "flatten_param"

    def setup(self):
        not_in_place(self)

    def _axes(self, shape):
        n = len(shape)
        start = canonical_axis(self.p.axis, n, self, self.field("axis"))
        end = canonical_axis(self.p.end_axis, n, self, self.field("end_axis"))
        # end == start - 1 flattens nothing and inserts a 1, as Caffe's count() does
        if end < start - 1:
            raise ShapeError(f"end_axis {end} comes before axis {start}", self.field("end_axis"),
                             help=["end_axis must not precede axis"])
        return start, end

    def infer(self, shapes):
        start, end = self._axes(shapes[0])
        s = shapes[0]
        return [s[:start] + (count(s, start, end + 1),) + s[end + 1:]]

    def forward(self, bottoms, shapes):
        start, end = self._axes(shapes[0])
        if end < start:
            return f"{bottoms[0]}.unsqueeze({start})"
        return f"{bottoms[0]}.flatten({start}, {end})"


@register
class Reshape(Layer):
    """Replaces axes [axis, axis + num_axes) by ``shape``: 0 copies a dim, -1 infers one."""

    type = "Reshape"
    param = "reshape_param"

    def setup(self):
        not_in_place(self)
        dims = list(self.p.shape.dim)
        for i, d in enumerate(dims):
            if d < -1:
                raise LayerError(f"shape dim {d} is invalid", self.field("shape", "dim", i),
                                 help=["use a positive size, 0 (copy) or -1 (infer)"])
        if dims.count(-1) > 1:
            raise LayerError("only one shape dim may be -1", self.field("shape", "dim", dims.index(-1)),
                             help=["give all but one size explicitly"])
        if self.p.num_axes < -1:
            raise LayerError(f"num_axes must be >= -1, got {self.p.num_axes}", self.field("num_axes"),
                             help=["-1 replaces every axis from `axis` on"])

    def _span(self, shape):
        n, axis = len(shape), self.p.axis
        start = axis if axis >= 0 else n + axis + 1
        end = n if self.p.num_axes == -1 else start + self.p.num_axes
        if not 0 <= start <= n or end > n:
            raise ShapeError(f"axis {axis} with num_axes {self.p.num_axes} is outside the "
                             f"{n} axes of the bottom {fmt_shape(shape)}", self.field("axis"),
                             help=[f"axis must lie in [{-n - 1}, {n}] and axis + num_axes <= {n}"])
        return start, end

    def _dims(self, shape):
        """The new dims for [start, end): copies resolved, -1 kept."""
        start, end = self._span(shape)
        dims = list(self.p.shape.dim)
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= len(shape):
                    raise ShapeError(f"shape dim {i} is 0 (copy) but the bottom {fmt_shape(shape)} "
                                     f"has no axis {start + i}", self.field("shape", "dim", i))
                dims[i] = shape[start + i]
        return start, end, dims

    def infer(self, shapes):
        s = shapes[0]
        start, end, dims = self._dims(s)
        known = count(s[:start]) * count(s[end:]) * count([d for d in dims if d != -1])
        if -1 in dims:
            if known == 0 or count(s) % known:
                raise ShapeError(f"cannot infer the -1 dim: {count(s)} elements of {fmt_shape(s)} "
                                 f"are not a multiple of {known}", self.field("shape"))
            dims[dims.index(-1)] = count(s) // known
        top = s[:start] + tuple(dims) + s[end:]
        if count(top) != count(s):
            raise ShapeError(f"the top {fmt_shape(top)} has {count(top)} elements but the bottom "
                             f"{fmt_shape(s)} has {count(s)}", self.field("shape"),
                             help=["the new dims must keep the element count"])
        return [top]

    def forward(self, bottoms, shapes):
        start, end = self._span(shapes[0])
        x, raw = bottoms[0], list(self.p.shape.dim)
        new = [f"{x}.shape[{start + i}]" if d == 0 else str(d) for i, d in enumerate(raw)]
        dims = ([f"{x}.shape[{i}]" for i in range(start)] + new
                + [f"{x}.shape[{i}]" for i in range(end, len(shapes[0]))])
        return f"{x}.reshape(({', '.join(dims)}{',' if len(dims) == 1 else ''}))"


@register
class Tile(Layer):
    """Repeats the blob ``tiles`` times along ``axis`` (whole blocks, like torch repeat)."""

    type = "Tile"
    param = "tile_param"

    def setup(self):
        self.positive(self.p.tiles, "tiles")

    def infer(self, shapes):
        s = shapes[0]
        axis = canonical_axis(self.p.axis, len(s), self, self.field("axis"))
        return [s[:axis] + (s[axis] * self.p.tiles,) + s[axis + 1:]]

    def forward(self, bottoms, shapes):
        n = len(shapes[0])
        reps = [1] * n
        reps[canonical_axis(self.p.axis, n, self, self.field("axis"))] = self.p.tiles
        return f"{bottoms[0]}.repeat({', '.join(map(str, reps))})"


_REDUCTIONS = {                       # expression over the axes flattened into the last one
    "SUM": "{x}.flatten({a}).sum(-1)",
    "ASUM": "{x}.abs().flatten({a}).sum(-1)",
    "SUMSQ": "{x}.square().flatten({a}).sum(-1)",
    "MEAN": "{x}.flatten({a}).mean(-1)",
}


@register
class Reduction(Layer):
    """SUM, ASUM, SUMSQ or MEAN over every axis from ``axis`` on, times ``coeff``."""

    type = "Reduction"
    param = "reduction_param"

    def setup(self):
        self.op = caffe_pb2.ReductionParameter.ReductionOp.Name(self.p.operation)

    def infer(self, shapes):
        axis = canonical_axis(self.p.axis, len(shapes[0]), self, self.field("axis"))
        return [tuple(shapes[0][:axis])]

    def forward(self, bottoms, shapes):
        axis = canonical_axis(self.p.axis, len(shapes[0]), self, self.field("axis"))
        expr = _REDUCTIONS[self.op].format(x=bottoms[0], a=axis)
        return expr if self.p.coeff == 1 else f"{self.p.coeff!r} * {expr}"


@register
class ArgMax(Layer):
    """Indices (and with ``out_max_val`` values) of the ``top_k`` largest entries."""

    type = "ArgMax"
    param = "argmax_param"
    runtime = ("caffe_argmax",)
    differentiable = False

    def setup(self):
        self.positive(self.p.top_k, "top_k")

    def _axis(self, shape):
        if not self.p.HasField("axis"):
            return None
        return canonical_axis(self.p.axis, len(shape), self, self.field("axis"))

    def infer(self, shapes):
        s, axis = tuple(shapes[0]), self._axis(shapes[0])
        dim = count(s, 1) if axis is None else s[axis]
        if self.p.top_k > dim:
            raise ShapeError(f"top_k {self.p.top_k} exceeds the {dim} candidates per "
                             f"{'sample' if axis is None else f'position along axis {axis}'}",
                             self.field("top_k"), help=[f"use top_k <= {dim}"])
        if axis is not None:
            return [s[:axis] + (self.p.top_k,) + s[axis + 1:]]
        top = (s[0], 2 if self.p.out_max_val else 1, self.p.top_k)
        return [top + (1,) * (len(s) - 3)]

    def forward(self, bottoms, shapes):
        return (f"caffe_argmax({bottoms[0]}, top_k={self.p.top_k}, "
                f"out_max_val={self.p.out_max_val}, axis={self._axis(shapes[0])})")


@register
class Softmax(Layer):
    """exp(x) / sum exp(x) along ``axis``."""

    type = "Softmax"
    param = "softmax_param"

    def infer(self, shapes):
        canonical_axis(self.p.axis, len(shapes[0]), self, self.field("axis"))
        return [tuple(shapes[0])]

    def forward(self, bottoms, shapes):
        axis = canonical_axis(self.p.axis, len(shapes[0]), self, self.field("axis"))
        return f"F.softmax({bottoms[0]}, dim={axis})"


@register
class Silence(Layer):
    """Consumes its bottoms and produces nothing (keeps blobs from being net outputs)."""

    type = "Silence"
    bottoms = (1, None)
    tops = (0, 0)

    def infer(self, shapes):
        return []

    def forward(self, bottoms, shapes):
        return "None"


@register
class Parameter(Layer):
    """No bottoms; its top is its own learnable blob ``weight`` of ``shape``."""

    type = "Parameter"
    param = "parameter_param"
    bottoms = (0, 0)
    blobs = ("weight",)
    runtime = ("CaffeParameter",)

    def setup(self):
        if any(d < 0 for d in self.p.shape.dim):
            raise LayerError(f"negative dimension in {list(self.p.shape.dim)}", self.field("shape"),
                             help=["every dim of a Parameter blob must be >= 0"])

    def infer(self, shapes):
        return [tuple(self.p.shape.dim)]

    def blob_shapes(self, shapes):
        return [tuple(self.p.shape.dim)]

    def module(self, shapes):
        return f"CaffeParameter({tuple(self.p.shape.dim)})"

    def forward(self, bottoms, shapes):
        return f"{self.mod()}()"


@register
class Accuracy(Layer):
    """Top-k classification accuracy (0-d), and optionally per-class accuracy (C,)."""

    type = "Accuracy"
    param = "accuracy_param"
    bottoms = (2, 2)
    tops = (1, 2)
    runtime = ("caffe_accuracy",)
    no_grad_bottoms = (1,)
    differentiable = False

    def setup(self):
        self.positive(self.p.top_k, "top_k")
        self.ignore = self.p.ignore_label if self.p.HasField("ignore_label") else None

    def infer(self, shapes):
        x, label = shapes
        axis = canonical_axis(self.p.axis, len(x), self, self.field("axis"))
        outer, inner = count(x, 0, axis), count(x, axis + 1)
        if count(label) != outer * inner:
            raise ShapeError(f"the label has {count(label)} elements but the scores need "
                             f"{outer} x {inner} = {outer * inner} (one per position outside axis {axis})",
                             help=["labels are (N,) or (N, H, W) class indices"])
        if self.p.top_k > x[axis]:
            raise ShapeError(f"top_k {self.p.top_k} exceeds the {x[axis]} classes",
                             self.field("top_k"), help=[f"use top_k <= {x[axis]}"])
        return [()] + ([(x[axis],)] if self.num_tops() == 2 else [])

    def forward(self, bottoms, shapes):
        axis = canonical_axis(self.p.axis, len(shapes[0]), self, self.field("axis"))
        return (f"caffe_accuracy({bottoms[0]}, {bottoms[1]}, top_k={self.p.top_k}, axis={axis}, "
                f"ignore_label={self.ignore!r}, per_class={self.num_tops() == 2})")


@register
class BatchReindex(Layer):
    """Rows of bottom 0 picked (and repeated) by the indices in bottom 1: top[i] = x[idx[i]]."""

    type = "BatchReindex"
    bottoms = (2, 2)
    runtime = ("caffe_batch_reindex",)
    no_grad_bottoms = (1,)          # Caffe cannot back-propagate into the indices

    def infer(self, shapes):
        x, idx = shapes
        if len(idx) != 1:
            raise ShapeError(f"bottom 1 (indices) must be 1-D, got {fmt_shape(idx)}",
                             help=["give the indices as a blob of shape (M,)"])
        if not x:
            raise ShapeError("bottom 0 must have at least one axis (the batch)")
        return [(idx[0],) + tuple(x[1:])]

    def forward(self, bottoms, shapes):
        return f"caffe_batch_reindex({bottoms[0]}, {bottoms[1]})"


@register
class Filter(Layer):
    """Items of bottoms 0..k-1 whose selector (the last bottom) is nonzero, one top each.

    The number of items passed is known only at run time; shapes are inferred, as Caffe
    reports them at set-up, with the full batch.
    """

    type = "Filter"
    bottoms = (2, None)
    tops = (1, None)
    runtime = ("caffe_filter",)

    def setup(self):
        nb, nt = len(self.lp.bottom), len(self.lp.top)
        if nt != nb - 1:
            raise LayerError(f"Filter needs one top per filtered bottom ({nb - 1}), got {nt}", ("top",),
                             help=["the last bottom is the selector; it has no top"])
        self.no_grad_bottoms = (nb - 1,)    # Caffe cannot back-propagate into the selector

    def infer(self, shapes):
        sel = shapes[-1]
        if not sel or any(d != 1 for d in sel[1:]):
            raise ShapeError(f"the selector (last bottom) must be (N,) or (N, 1, ...), got {fmt_shape(sel)}")
        for i, s in enumerate(shapes[:-1]):
            if not s or s[0] != sel[0]:
                raise ShapeError(f"bottom {i} has {fmt_shape(s)} but the selector has {sel[0]} items; "
                                 "every bottom needs the selector's first dimension")
        return [tuple(s) for s in shapes[:-1]]

    def forward(self, bottoms, shapes):
        call = f"caffe_filter({', '.join(bottoms)})"
        return call + "[0]" if self.num_tops() == 1 else call
