"""Caffe's weight fillers (filler.hpp), exactly as defined there, on torch tensors.

Randomness comes from a ``torch.Generator`` so a ``seed`` gives reproducible
initialisation; the distributions and fan computations are Caffe's.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..proto import caffe_pb2

if TYPE_CHECKING:          # torch is imported where a filler runs: checking a net needs none
    import torch

FAN_IN = caffe_pb2.FillerParameter.FAN_IN
FAN_OUT = caffe_pb2.FillerParameter.FAN_OUT
AVERAGE = caffe_pb2.FillerParameter.AVERAGE


def _fans(t: torch.Tensor) -> tuple[float, float]:
    n = t.numel()
    fan_in = n / t.shape[0] if t.dim() > 0 and t.shape[0] else n
    fan_out = n / t.shape[1] if t.dim() > 1 and t.shape[1] else n
    return fan_in, fan_out


def _variance_n(t: torch.Tensor, p) -> float:
    fan_in, fan_out = _fans(t)
    if p.variance_norm == FAN_OUT:
        return fan_out
    if p.variance_norm == AVERAGE:
        return (fan_in + fan_out) / 2.0
    return fan_in


def _constant(t, p, g):
    t.fill_(p.value)


def _uniform(t, p, g):
    t.uniform_(p.min, p.max, generator=g)


def _gaussian(t, p, g):
    t.normal_(p.mean, p.std, generator=g)
    if p.sparse >= 0:
        # Caffe keeps each weight with probability sparse / num_outputs (num_outputs = shape[0])
        keep = min(1.0, p.sparse / t.shape[0]) if t.dim() else 1.0
        import torch            # in the functions: naming a filler (netspec check) needs no torch
        mask = torch.empty_like(t).bernoulli_(keep, generator=g)
        t.mul_(mask)


def _positive_unitball(t, p, g):
    t.uniform_(0, 1, generator=g)
    rows = t.view(t.shape[0], -1) if t.dim() else t.view(1, -1)
    rows.div_(rows.sum(dim=1, keepdim=True))


def _xavier(t, p, g):
    scale = math.sqrt(3.0 / _variance_n(t, p))
    t.uniform_(-scale, scale, generator=g)


def _msra(t, p, g):
    t.normal_(0.0, math.sqrt(2.0 / _variance_n(t, p)), generator=g)


def _bilinear(t, p, g):
    if t.dim() != 4 or t.shape[2] != t.shape[3]:
        raise ValueError("the bilinear filler needs a 4-D blob with square kernels")
    k = t.shape[3]
    f = math.ceil(k / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    import torch
    x = torch.arange(k, dtype=torch.float64)
    w1 = 1 - (x / f - c).abs()
    kernel = (w1[:, None] * w1[None, :]).to(t.dtype)
    t.copy_(kernel.expand_as(t))


FILLERS = {"constant": _constant, "uniform": _uniform, "gaussian": _gaussian,
           "positive_unitball": _positive_unitball, "xavier": _xavier, "msra": _msra,
           "bilinear": _bilinear}


def fill(t: torch.Tensor, p, generator: torch.Generator | None = None) -> None:
    """Fill ``t`` in place as Caffe's filler ``p`` (a FillerParameter) would."""
    fn = FILLERS.get(p.type)
    if fn is None:
        raise ValueError(f"unknown filler type '{p.type}'; known: {', '.join(sorted(FILLERS))}")
    import torch
    with torch.no_grad():
        fn(t, p, generator)
