"""Runtime helpers of the neuron layers: PReLU's slopes, Caffe's BNLL and Clip."""
import math  # noqa: F401

import torch  # noqa: F401
import torch.nn as nn  # noqa: F401
import torch.nn.functional as F  # noqa: F401

__all__ = ["CaffePReLU", "caffe_bnll", "caffe_clip"]


class CaffePReLU(nn.Module):
    """Caffe PReLU: slopes over axis 1, shape (C,), or () when channel_shared."""

    def __init__(self, shape):
        super().__init__()
        self.weight = nn.Parameter(torch.full(tuple(shape), 0.25))

    def forward(self, x):
        return F.prelu(x, self.weight)


def caffe_bnll(x):
    """Caffe BNLL: x + log(1 + exp(-x)) for x > 0, else log(1 + exp(x)).

    Written as where(x > 0, x, 0) + log(1 + exp(z)) with z = -|x| so that
    autograd gives Caffe's gradient exp(x) / (1 + exp(x)) everywhere, 1/2 at 0.
    """
    pos = x > 0
    z = torch.where(pos, -x, x)
    return torch.where(pos, x, torch.zeros_like(x)) + torch.log(1 + torch.exp(z))


def caffe_clip(x, lo, hi):
    """Caffe Clip: max(lo, min(x, hi)) (the constant lo when lo > hi).

    Caffe's gradient is 1 where lo <= x <= hi, bounds included; torch.clamp's
    is 0 on the bounds, so the inside values come straight from ``x``.
    """
    inside = (x >= lo) & (x <= hi)
    return torch.where(inside, x, torch.clamp(x, max=hi).clamp(min=lo).detach())
