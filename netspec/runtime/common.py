import math  # noqa: F401

import torch  # noqa: F401
import torch.nn as nn  # noqa: F401
import torch.nn.functional as F  # noqa: F401

__all__ = ["CaffeInnerProduct", "CaffeEmbed", "CaffeParameter", "caffe_eltwise_max",
           "caffe_topk", "caffe_argmax", "caffe_accuracy", "caffe_batch_reindex", "caffe_filter"]


class CaffeInnerProduct(nn.Module):
    """Caffe InnerProduct: flattens the axes from ``axis`` on; weight (N, K) or (K, N)."""

    def __init__(self, k, n, axis=1, bias=True, transpose=False):
        super().__init__()
        self.axis, self.transpose = axis, transpose
        self.weight = nn.Parameter(torch.zeros((k, n) if transpose else (n, k)))
        self.bias = nn.Parameter(torch.zeros(n)) if bias else None

    def forward(self, x):
        x = x.flatten(self.axis)          # a no-op when only one axis follows
        w = self.weight.t() if self.transpose else self.weight
        return F.linear(x, w, self.bias)


class CaffeEmbed(nn.Module):
    """Caffe Embed: top = weight[index] + bias; indices arrive as floats holding integers."""

    def __init__(self, input_dim, num_output, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(input_dim, num_output))
        self.bias = nn.Parameter(torch.zeros(num_output)) if bias else None

    def forward(self, x):
        index = x.detach().long()
        k = self.weight.shape[0]
        # Caffe only DCHECKs these; a bad index would read outside the table
        if not torch.equal(index.to(x.dtype), x.detach()):
            raise ValueError("Embed indices must be whole numbers; got fractional values")
        if index.numel() and (index.min() < 0 or index.max() >= k):
            bad = index[(index < 0) | (index >= k)][0].item()
            raise IndexError(f"Embed index {bad} is out of range [0, {k}) (input_dim {k})")
        top = F.embedding(index, self.weight)
        return top + self.bias if self.bias is not None else top


class CaffeParameter(nn.Module):
    """Caffe Parameter layer: its single top is its own learnable blob (zeros until loaded)."""

    def __init__(self, shape):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(shape))

    def forward(self):
        return self.weight


def caffe_eltwise_max(*xs):
    """Eltwise MAX with Caffe's tie rule: bottom 1 wins a tie with bottom 0, later bottoms
    must be strictly greater; the gradient goes to the winning bottom only."""
    top = xs[1].detach()
    mask = torch.where(xs[0].detach() > top, 0, 1)
    top = torch.maximum(xs[0].detach(), top)
    for i, x in enumerate(xs[2:], 2):
        mask = torch.where(x.detach() > top, i, mask)
        top = torch.maximum(x.detach(), top)
    return torch.stack(xs).gather(0, mask[None])[0]


def caffe_topk(x, k, dim):
    """(values, indices) of the k largest along ``dim``, ordered as Caffe's
    std::greater on (value, index) pairs: among equal values the larger index first."""
    n = x.shape[dim]
    values, flipped = torch.sort(x.flip(dim), dim=dim, descending=True, stable=True)
    return values.narrow(dim, 0, k), (n - 1 - flipped).narrow(dim, 0, k)


def caffe_argmax(x, top_k=1, out_max_val=False, axis=None):
    """Caffe ArgMax (not differentiable); indices are returned as floats like Caffe's blobs."""
    x = x.detach()
    if axis is not None:
        values, index = caffe_topk(x, top_k, axis)
        return values if out_max_val else index.to(x.dtype)
    values, index = caffe_topk(x.reshape(x.shape[0], -1), top_k, 1)
    top = torch.stack([index.to(x.dtype), values], 1) if out_max_val else index.to(x.dtype)[:, None]
    return top.reshape(top.shape + (1,) * (x.dim() - 3))


def caffe_accuracy(x, label, top_k=1, axis=1, ignore_label=None, per_class=False):
    """Caffe Accuracy: correct when fewer than ``top_k`` other classes score >= the true
    class (ties count against it); 0 when every label is ignored."""
    x, c = x.detach(), x.shape[axis]
    scores = x.movedim(axis, -1).reshape(-1, c)
    label = label.detach().reshape(-1).long()          # truncates like static_cast<int>
    valid = torch.ones_like(label, dtype=torch.bool) if ignore_label is None else label != ignore_label
    if bool(((label < 0) | (label >= c))[valid].any()):
        bad = label[valid & ((label < 0) | (label >= c))][0].item()
        raise IndexError(f"Accuracy label {bad} is out of range [0, {c})")
    safe = torch.where(valid, label, 0)
    true = scores.gather(1, safe[:, None])
    hit = valid & ((scores >= true).sum(1) - 1 < top_k)
    acc = hit.sum().to(x.dtype) / valid.sum().clamp(min=1).to(x.dtype)
    if not per_class:
        return acc
    seen = torch.bincount(label[valid], minlength=c).to(x.dtype)
    right = torch.bincount(label[hit], minlength=c).to(x.dtype)
    return acc, torch.where(seen > 0, right / seen.clamp(min=1), torch.zeros_like(seen))


def caffe_batch_reindex(x, index):
    """Caffe BatchReindex: top[i] = x[index[i]]; the backward sums into repeated rows."""
    idx = index.detach().long()
    n = x.shape[0]
    if idx.numel() and (idx.min() < 0 or idx.max() >= n):
        bad = idx[(idx < 0) | (idx >= n)][0].item()
        raise IndexError(f"BatchReindex index {bad} is out of range [0, {n})")
    return x.index_select(0, idx)


def caffe_filter(*bottoms):
    """Caffe Filter: keep the items (rows along axis 0) of every bottom whose selector
    (the last bottom) is nonzero; the backward writes zeros into the dropped rows."""
    keep = torch.nonzero(bottoms[-1].detach().reshape(bottoms[-1].shape[0]) != 0).reshape(-1)
    return tuple(x.index_select(0, keep) for x in bottoms[:-1])
