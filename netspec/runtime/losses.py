"""Runtime helpers of the loss layers, and DummyData's top generator.

Every loss returns its *unweighted* value as a 0-d tensor; loss_weight is applied by
the caller.  Where Caffe's backward is not the exact derivative of its forward (log
clamps, ContrastiveLoss's 1e-4), the helpers reproduce Caffe's gradient with a
value/gradient split: ``value.detach() + (surrogate - surrogate.detach())``.
Label-like bottoms are detached: Caffe never back-propagates into them.
"""
import math  # noqa: F401

import torch  # noqa: F401
import torch.nn as nn  # noqa: F401
import torch.nn.functional as F  # noqa: F401

__all__ = ["caffe_normalizer", "caffe_log_floor", "caffe_softmax_loss", "caffe_euclidean_loss",
           "caffe_sigmoid_cross_entropy_loss", "caffe_hinge_loss", "caffe_infogain_loss",
           "CaffeInfogainLoss", "caffe_multinomial_logistic_loss", "caffe_contrastive_loss",
           "CaffeDummyData"]


def caffe_normalizer(mode, outer, inner, valid):
    """Caffe's LossLayer::GetNormalizer, clamped to >= 1."""
    if mode == "FULL":
        n = outer * inner
    elif mode == "VALID":
        n = valid
    elif mode == "BATCH_SIZE":
        n = outer
    else:
        n = 1
    return torch.clamp(torch.as_tensor(n, dtype=torch.float32), min=1.0)


def caffe_log_floor(logp, floor):
    """log(max(p, floor)) in value, with the gradient of the unclamped ``logp``.

    Caffe clamps the probability inside its forward log only; its backward uses
    the exact softmax gradient, which is that of the unclamped log-softmax.
    """
    return logp + (logp.clamp_min(math.log(floor)) - logp).detach()


def caffe_softmax_loss(x, label, axis=1, ignore_label=None, normalization="VALID"):
    """SoftmaxWithLoss: -sum log softmax(x)[label] / normalizer, as a 0-d tensor."""
    outer = math.prod(x.shape[:axis])
    inner = math.prod(x.shape[axis + 1:])
    # F.cross_entropy wants (N, C) or (N, C, d): Caffe's (outer, channels, inner) view
    shape = (outer, x.shape[axis]) if inner == 1 else (outer, x.shape[axis], inner)
    x = x.reshape(shape)
    label = label.detach().reshape(shape[:1] + shape[2:]).long()
    # one fused log-softmax + NLL kernel; ignored labels contribute exactly 0, and without
    # ignore_label the index is one no label can equal, so out-of-range labels still raise
    nll = F.cross_entropy(x, label, reduction="none",
                          ignore_index=-(2 ** 63) if ignore_label is None else int(ignore_label))
    # Caffe takes log(max(prob, FLT_MIN)) in its forward only: clamp the value, keep the gradient
    nll = nll + (nll.clamp_max(87.33654475055310898657) - nll).detach()
    if ignore_label is None:        # every label valid: the normaliser is a plain number
        n = {"FULL": outer * inner, "VALID": outer * inner, "BATCH_SIZE": outer}.get(normalization, 1)
        return nll.sum() / max(1, n)
    valid = (label != int(ignore_label)).sum()
    return nll.sum() / caffe_normalizer(normalization, outer, inner, valid).to(nll.dtype)


def caffe_euclidean_loss(a, b):
    """EuclideanLoss: sum((a - b)^2) / (2 N), N = a.shape[0]; both bottoms get gradient."""
    diff = a - b.reshape(a.shape)
    return (diff * diff).sum() / a.shape[0] / 2


def caffe_sigmoid_cross_entropy_loss(x, target, ignore_label=None, normalization="BATCH_SIZE"):
    """SigmoidCrossEntropyLoss with Caffe's overflow-free formula; targets equal (as int)
    to ``ignore_label`` contribute neither loss nor gradient nor count."""
    t = target.detach().reshape(x.shape).to(x.dtype)
    pos = (x >= 0).to(x.dtype)
    term = -(x * (t - pos) - torch.log(1 + torch.exp(x - 2 * x * pos)))
    valid = torch.ones_like(t, dtype=torch.bool) if ignore_label is None else t.trunc() != ignore_label
    total = torch.where(valid, term, torch.zeros_like(term)).sum()
    outer = x.shape[0] if x.dim() else 1
    norm = caffe_normalizer(normalization, outer, x.numel() // max(outer, 1), valid.sum())
    return total / norm.to(x.dtype)


def caffe_hinge_loss(x, label, norm="L1"):
    """HingeLoss: margins max(0, 1 - x[label]) and max(0, 1 + x[other]), per sample;
    L1 sums them, L2 sums their squares; divided by N."""
    n = x.shape[0]
    x = x.reshape(n, -1)
    label = label.detach().reshape(-1)[:n].long()
    sign = 1 - 2 * F.one_hot(label, x.shape[1]).to(x.dtype)
    margin = F.relu(1 + sign * x)
    return (margin if norm == "L1" else margin * margin).sum() / n


def caffe_infogain_loss(x, label, H, axis=1, ignore_label=None, normalization="VALID"):
    """InfogainLoss: -sum_l H[label, l] log(max(softmax(x)_l, 1e-20)) / normalizer."""
    logp = caffe_log_floor(F.log_softmax(x, dim=axis), 1e-20)
    outer = math.prod(x.shape[:axis])
    inner = math.prod(x.shape[axis + 1:])
    logp = logp.movedim(axis, -1).reshape(outer * inner, x.shape[axis])
    label = label.detach().reshape(outer * inner).long()
    valid = torch.ones_like(label, dtype=torch.bool) if ignore_label is None else label != ignore_label
    rows = H.detach().reshape(x.shape[axis], x.shape[axis]).to(logp.dtype)[torch.where(valid, label, 0)]
    total = -(rows * logp * valid.to(logp.dtype)[:, None]).sum()
    return total / caffe_normalizer(normalization, outer, inner, valid.sum()).to(logp.dtype)


class CaffeInfogainLoss(nn.Module):
    """InfogainLoss with H read from ``infogain_loss_param.source`` (a fixed buffer)."""

    def __init__(self, H, axis=1, ignore_label=None, normalization="VALID"):
        super().__init__()
        self.axis, self.ignore_label, self.normalization = axis, ignore_label, normalization
        # not a Caffe blob: kept out of the state_dict, but moved by .to()/.double()
        self.register_buffer("H", torch.tensor(H, dtype=torch.float32), persistent=False)

    def forward(self, x, label):
        return caffe_infogain_loss(x, label, self.H, self.axis, self.ignore_label, self.normalization)


def caffe_multinomial_logistic_loss(p, label):
    """MultinomialLogisticLoss on probabilities: -sum log(max(p[label], 1e-20)) / N.

    Caffe's gradient is -1 / max(p, 1e-20) even where the clamp is active.
    """
    n = p.shape[0]
    picked = p.reshape(n, -1).gather(1, label.detach().reshape(n, 1).long())[:, 0]
    floored = picked + (picked.clamp_min(1e-20) - picked).detach()
    return -torch.log(floored).sum() / n


def caffe_contrastive_loss(a, b, y, margin=1.0, legacy=False):
    """ContrastiveLoss: similar pairs (int(y) != 0) d^2, dissimilar max(0, m - d)^2
    (legacy: max(0, m - d^2)), summed and divided by 2N.

    Caffe's backward for dissimilar pairs divides by (d + 1e-4), not d: reproduced.
    """
    n = a.shape[0]
    diff = (a - b).reshape(n, -1)
    dsq = (diff * diff).sum(1)
    similar = y.detach().reshape(-1)[:n].trunc() != 0
    if legacy:
        dissimilar = F.relu(margin - dsq)
    else:
        dist = dsq.detach().sqrt()
        mdist = F.relu(margin - dist)
        # value mdist^2; gradient -2 mdist (diff / (d + 1e-4)), i.e. Caffe's beta
        surrogate = -(mdist / (dist + 1e-4)) * dsq
        dissimilar = (mdist * mdist) + (surrogate - surrogate.detach())
    return torch.where(similar, dsq, dissimilar).sum() / n / 2


class CaffeDummyData(nn.Module):
    """DummyData: fresh tops on every forward, filled as Caffe's fillers do.

    ``tops`` holds (shape, filler type, a, b) per top: constant (value a), uniform
    (min a, max b) or gaussian (mean a, std b).  Tops follow the module's device/dtype.
    """

    def __init__(self, tops):
        super().__init__()
        self.tops = [(tuple(s), kind, a, b) for s, kind, a, b in tops]
        self.register_buffer("anchor", torch.zeros(()), persistent=False)

    def forward(self):
        out = []
        for shape, kind, a, b in self.tops:
            t = torch.empty(shape, dtype=self.anchor.dtype, device=self.anchor.device)
            if kind == "constant":
                t.fill_(a)
            elif kind == "uniform":
                t.uniform_(a, b)
            else:
                t.normal_(a, b)
            out.append(t)
        return tuple(out)
