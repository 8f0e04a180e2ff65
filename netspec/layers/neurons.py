"""Neuron layers: elementwise activations (top shape = bottom shape).

Each ``forward`` is a plain torch expression where torch computes exactly Caffe's
function *and* Caffe's gradient (ties such as ReLU at 0 included); runtime helpers
cover the rest.  Parameters are Caffe floats (float32); they are written into the
generated code with their shortest float32 spelling, which reads back identically.
"""
from __future__ import annotations

import math

import numpy as np

from ..proto import caffe_pb2
from .base import TRAIN, Layer, LayerError, ShapeError, fmt_shape, register


def lit(value: float) -> str:
    """Source text of a float32 parameter: shortest round-trip spelling ('0.2', not 0.2000000029…)."""
    v = np.float32(value)
    if math.isnan(v):
        return "math.nan"
    if math.isinf(v):
        return "math.inf" if v > 0 else "-math.inf"
    return repr(float(str(v)))


class Neuron(Layer):
    """One bottom, one top of the same shape; may run in place."""

    bottoms = (1, 1)
    tops = (1, 1)


@register
class ReLU(Neuron):
    """max(x, 0) + negative_slope * min(x, 0); gradient negative_slope at x == 0, as Caffe."""

    type = "ReLU"
    param = "relu_param"

    def forward(self, bottoms, shapes):
        slope = self.p.negative_slope
        if slope == 0:
            return f"F.relu({bottoms[0]})"
        return f"F.leaky_relu({bottoms[0]}, {lit(slope)})"


@register
class PReLU(Neuron):
    """ReLU with learnable slopes over axis 1: one per channel, or one 0-d blob if shared."""

    type = "PReLU"
    param = "prelu_param"
    blobs = ("weight",)
    runtime = ("CaffePReLU",)

    def setup(self):
        self.check_filler("filler")

    def infer(self, shapes):
        shape = shapes[0]
        if shape is not None and not 2 <= len(shape) <= 4:
            # Caffe: CHECK_GE(num_axes, 2) in setup, and legacy accessors refuse > 4 axes
            raise ShapeError(f"PReLU needs a bottom with 2 to 4 axes, got {fmt_shape(shape)}",
                             help=["reshape the bottom to (N, C), (N, C, L) or (N, C, H, W)"])
        return [shape]

    def blob_shapes(self, shapes):
        # Caffe's legacy channels(): 1 when the bottom has no axis 1 (infer reports that)
        channels = shapes[0][1] if len(shapes[0]) > 1 else 1
        return [()] if self.p.channel_shared else [(channels,)]

    def fillers(self):
        if self.p.HasField("filler"):
            return [self.p.filler]
        return [caffe_pb2.FillerParameter(type="constant", value=0.25)]   # Caffe's default

    def module(self, shapes):
        return f"CaffePReLU({self.blob_shapes(shapes)[0]!r})"

    def forward(self, bottoms, shapes):
        return f"{self.mod()}({bottoms[0]})"


@register
class Sigmoid(Neuron):
    """1 / (1 + exp(-x))."""

    type = "Sigmoid"
    param = "sigmoid_param"

    def forward(self, bottoms, shapes):
        return f"torch.sigmoid({bottoms[0]})"


@register
class TanH(Neuron):
    """tanh(x)."""

    type = "TanH"
    param = "tanh_param"

    def forward(self, bottoms, shapes):
        return f"torch.tanh({bottoms[0]})"


@register
class ELU(Neuron):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""

    type = "ELU"
    param = "elu_param"

    def forward(self, bottoms, shapes):
        return f"F.elu({bottoms[0]}, {lit(self.p.alpha)})"


@register
class AbsVal(Neuron):
    """|x|; gradient sign(x), 0 at x == 0 (Caffe's caffe_cpu_sign)."""

    type = "AbsVal"

    def forward(self, bottoms, shapes):
        return f"torch.abs({bottoms[0]})"


@register
class BNLL(Neuron):
    """Binomial normal log likelihood log(1 + exp(x)), Caffe's overflow-safe form."""

    type = "BNLL"
    runtime = ("caffe_bnll",)

    def forward(self, bottoms, shapes):
        return f"caffe_bnll({bottoms[0]})"


@register
class Power(Neuron):
    """(shift + scale * x) ** power."""

    type = "Power"
    param = "power_param"

    def forward(self, bottoms, shapes):
        p, x = self.p, bottoms[0]
        if p.power * p.scale == 0:
            # Caffe ignores the bottom then: a constant top, and a zero bottom diff
            value = 1.0 if p.power == 0 else float(np.float32(p.shift) ** np.float32(p.power))
            return f"torch.full_like({x}, {lit(value)})"
        # Caffe skips the identity steps; so does the generated code (readability)
        base = x if p.scale == 1 else f"{lit(p.scale)} * {x}"
        base = base if p.shift == 0 else f"({lit(p.shift)} + {base})"
        return base if p.power == 1 else f"torch.pow({base}, {lit(p.power)})"


def log_base(layer: Layer) -> float:
    """ln(base) of Exp/Log in float32 (base -1 means e); raise unless base > 0 or -1."""
    base = layer.p.base
    if base == -1:
        return 1.0
    if not base > 0 or math.isinf(base):
        raise LayerError(f"base must be strictly positive (or -1 for e), got {base}",
                         layer.field("base"), help=["use base: -1 (e), 2, 10, ..."])
    return float(np.log(np.float32(base)))


@register
class Exp(Neuron):
    """base ** (shift + scale * x), computed as Caffe does: outer * exp(inner * x)."""

    type = "Exp"
    param = "exp_param"

    def setup(self):
        p = self.p
        self.inner = float(np.float32(log_base(self)) * np.float32(p.scale))
        if p.shift == 0:
            self.outer = 1.0
        elif p.base == -1:
            self.outer = float(np.exp(np.float32(p.shift)))
        else:
            self.outer = float(np.float32(p.base) ** np.float32(p.shift))

    def forward(self, bottoms, shapes):
        x = bottoms[0] if self.inner == 1 else f"{lit(self.inner)} * {bottoms[0]}"
        y = f"torch.exp({x})"
        return y if self.outer == 1 else f"{lit(self.outer)} * {y}"


@register
class Log(Neuron):
    """log_base(shift + scale * x), computed as Caffe does: ln(shift + scale * x) / ln(base)."""

    type = "Log"
    param = "log_param"

    def setup(self):
        if self.p.base == 1:
            raise LayerError("base 1 has no logarithm (ln(1) = 0 would divide by zero)",
                             self.field("base"), help=["use base: -1 (e), 2, 10, ..."])
        self.base_scale = float(np.float32(1) / np.float32(log_base(self)))

    def forward(self, bottoms, shapes):
        p, x = self.p, bottoms[0]
        x = x if p.scale == 1 else f"{lit(p.scale)} * {x}"
        x = x if p.shift == 0 else f"{lit(p.shift)} + {x}"
        y = f"torch.log({x})"
        return y if self.base_scale == 1 else f"{lit(self.base_scale)} * {y}"


@register
class Threshold(Neuron):
    """1 where x > threshold, else 0.  Caffe has no backward for it."""

    type = "Threshold"
    param = "threshold_param"
    differentiable = False

    def forward(self, bottoms, shapes):
        x = bottoms[0]
        return f"({x} > {lit(self.p.threshold)}).to({x}.dtype)"


@register
class Clip(Neuron):
    """max(min, min(x, max)); gradient 1 where min <= x <= max (bounds included)."""

    type = "Clip"
    param = "clip_param"
    runtime = ("caffe_clip",)

    def setup(self):
        for name in ("min", "max"):
            if not self.p.HasField(name):
                raise LayerError(f"clip_param.{name} is required", self.field(),
                                 help=[f"add `{name}: <value>` to clip_param"])

    def forward(self, bottoms, shapes):
        return f"caffe_clip({bottoms[0]}, {lit(self.p.min)}, {lit(self.p.max)})"


@register
class Swish(Neuron):
    """x * sigmoid(beta * x)."""

    type = "Swish"
    param = "swish_param"

    def forward(self, bottoms, shapes):
        x, beta = bottoms[0], self.p.beta
        if beta == 1:
            return f"F.silu({x})"
        return f"{x} * torch.sigmoid({lit(beta)} * {x})"


@register
class Dropout(Neuron):
    """TRAIN: zero each unit with probability dropout_ratio, scale the kept by 1/(1 - ratio).

    TEST: the identity (Caffe does not rescale at test time).
    """

    type = "Dropout"
    param = "dropout_param"

    def setup(self):
        ratio = self.p.dropout_ratio
        if not 0 <= ratio < 1:
            raise LayerError(f"dropout_ratio must be in [0, 1), got {ratio:g}",
                             self.field("dropout_ratio"),
                             help=["the fraction of units dropped, e.g. dropout_ratio: 0.5"])

    def forward(self, bottoms, shapes):
        if self.phase != TRAIN:
            return bottoms[0]
        return f"F.dropout({bottoms[0]}, {lit(self.p.dropout_ratio)}, training=True)"
