import math  # noqa: F401

import torch  # noqa: F401
import torch.nn as nn  # noqa: F401
import torch.nn.functional as F  # noqa: F401

# pure arithmetic, defined beside shape inference so that checking a net needs no torch
from ..layers.geometry import caffe_pool_size, caffe_spp_level  # noqa: E402

__all__ = ["caffe_pool_size", "caffe_torch_pool_size", "caffe_pool_padded", "caffe_window_sums",
           "caffe_ave_divisor", "caffe_max_pool", "caffe_pool2d", "caffe_spp_level", "caffe_spp",
           "caffe_mvn", "CaffeMVNFunction", "CaffeBatchNorm", "caffe_broadcast", "CaffeScale", "CaffeBias",
           "caffe_im2col"]
__all__ += ["caffe_max_pool_fast", "caffe_affine", "caffe_bn_affine", "caffe_fold"]   # inference build


def caffe_torch_pool_size(size, k, s, p, ceil):
    """torch's pooled size: Caffe's, except that torch drops a last window starting at or
    beyond the input even without padding."""
    out = (size + 2 * p - k + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


def caffe_pool_padded(x, kernel, stride, pad, out, value):
    """Pad (or crop) x so that window i covers padded rows [i*s, i*s + k) exactly."""
    after = [(o - 1) * s + k - n - p for o, s, k, n, p in zip(out, stride, kernel, x.shape[-2:], pad)]
    return F.pad(x, (pad[1], after[1], pad[0], after[0]), value=value)


def caffe_window_sums(x, kernel, stride, pad, out):
    """The sum over each of Caffe's pooling windows, zero padded."""
    xp = caffe_pool_padded(x, kernel, stride, pad, out, 0.0)
    return F.avg_pool2d(xp, kernel, stride, divisor_override=1)


def caffe_ave_divisor(x, kernel, stride, pad, out):
    """Caffe's AVE divisor: the window clipped to [-pad, size + pad), not to the image."""
    counts = []
    for o, s, k, n, p in zip(out, stride, kernel, x.shape[-2:], pad):
        start = torch.arange(o, device=x.device) * s - p
        counts.append(torch.clamp(start + k, max=n + p) - start)
    return (counts[0][:, None] * counts[1][None, :]).to(x.dtype)


def caffe_max_pool(x, kernel, stride, pad, out, ceil, fast, mask, indices=True):
    """MAX pooling; the gradient goes to the first maximum (row-major), as in Caffe.
    ``indices=False`` (inference, no mask top): the values only."""
    if not (mask or indices):
        if fast:
            return caffe_max_pool_fast(x, kernel, stride, pad, ceil)
        xp = caffe_pool_padded(x, kernel, stride, pad, out, -3.4028234663852886e38)
        return caffe_max_pool_fast(xp, kernel, stride, (0, 0), False)
    if fast:
        y, idx = F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil, return_indices=True)
    else:
        # -FLT_MAX, as Caffe: a window wholly outside the image gives -FLT_MAX and no argmax
        xp = caffe_pool_padded(x, kernel, stride, pad, out, -3.4028234663852886e38)
        y, idx = F.max_pool2d(xp, kernel, stride, return_indices=True)
        wp = xp.shape[-1]
        h, w = idx // wp - pad[0], idx % wp - pad[1]
        inside = (h >= 0) & (h < x.shape[-2]) & (w >= 0) & (w < x.shape[-1])
        idx = torch.where(inside, h * x.shape[-1] + w, -1)
    return (y, idx.to(x.dtype)) if mask else y


def caffe_pool2d(x, method, kernel=None, stride=(1, 1), pad=(0, 0), ceil=True, mask=False,
                 indices=True):
    """Caffe's Pooling on (N, C, H, W): MAX (optionally with the argmax plane index), AVE,
    or STOCHASTIC at test time (sum(x^2) / sum(x) per window).  ``kernel=None``: global.
    ``indices=False``: MAX computes no argmax at all (the inference build)."""
    kernel = tuple(x.shape[-2:]) if kernel is None else tuple(kernel)
    stride, pad = tuple(stride), tuple(pad)
    dims = list(zip(x.shape[-2:], kernel, stride, pad))
    out = [caffe_pool_size(n, k, s, p, ceil) for n, k, s, p in dims]
    fast = all(2 * p <= k and caffe_torch_pool_size(n, k, s, p, ceil) == o
               for (n, k, s, p), o in zip(dims, out))
    if method == "MAX":
        return caffe_max_pool(x, kernel, stride, pad, out, ceil, fast, mask, indices)
    if method == "AVE":
        if fast:
            return F.avg_pool2d(x, kernel, stride, pad, ceil_mode=ceil, count_include_pad=True)
        total = caffe_window_sums(x, kernel, stride, pad, out)
        return total / caffe_ave_divisor(x, kernel, stride, pad, out)
    total = caffe_window_sums(x, kernel, stride, pad, out)
    positive = total > 0
    weighted = caffe_window_sums(x * x, kernel, stride, pad, out) / torch.where(positive, total, 1.0)
    return torch.where(positive, weighted, 0.0)


def caffe_spp(x, height, method):
    """Caffe's SPP: pooling at 1, 2x2, 4x4, ... bins, each flattened, concatenated on axis 1."""
    tops = []
    for level in range(height):
        (kh, ph), (kw, pw) = (caffe_spp_level(n, level) for n in x.shape[-2:])
        y = caffe_pool2d(x, method, (kh, kw), (kh, kw), (ph, pw))
        if height == 1:
            return y
        tops.append(y.flatten(1))
    return torch.cat(tops, 1)


class CaffeMVNFunction(torch.autograd.Function):
    """Caffe MVN with variance normalisation on rows of ``flat``: y = (x - mean) / (std + eps).

    The backward is Caffe's MVNLayer::Backward_cpu,
    dx = (dy - (y * sum(y * dy) + sum(dy)) / dim) / (std + eps),
    the exact derivative only when eps is 0 (the exact one divides the y term by
    std * (std + eps) instead of (std + eps)^2): Caffe's gradient is the oracle.
    """

    @staticmethod
    def forward(ctx, flat, eps):
        centred = flat - flat.mean(1, keepdim=True)
        # Caffe adds eps to the standard deviation, not inside the square root
        denom = (centred * centred).mean(1, keepdim=True).sqrt() + eps
        y = centred / denom
        ctx.save_for_backward(y, denom)
        return y

    @staticmethod
    def backward(ctx, dy):
        y, denom = ctx.saved_tensors
        dim = y.shape[1]
        inner = y * (y * dy).sum(1, keepdim=True) + dy.sum(1, keepdim=True)
        return (dy - inner / dim) / denom, None


def caffe_mvn(x, across_channels=False, normalize_variance=True, eps=1e-9):
    """Caffe MVN: subtract the mean per sample (or per sample and channel); divide by std + eps."""
    rows = x.shape[0] if across_channels else x.shape[0] * (x.shape[1] if x.dim() > 1 else 1)
    flat = x.reshape(rows, -1)
    if normalize_variance:
        return CaffeMVNFunction.apply(flat, float(eps)).reshape(x.shape)
    return (flat - flat.mean(1, keepdim=True)).reshape(x.shape)


class CaffeBatchNorm(nn.Module):
    """Caffe BatchNorm (no affine part).  Buffers are Caffe's blobs: mean sum, variance sum and
    scale factor s; the statistics are mean/s and variance/s.  With batch statistics, forward
    updates them in place: s = maf*s + 1, mean = maf*mean + mu, variance = maf*variance + m/(m-1)*var."""

    def __init__(self, channels, use_global_stats, moving_average_fraction=0.999, eps=1e-5):
        super().__init__()
        self.use_global_stats, self.maf, self.eps = use_global_stats, moving_average_fraction, eps
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("variance", torch.zeros(channels))
        self.register_buffer("scale_factor", torch.zeros(1))

    def forward(self, x, weight=None, bias=None):
        """Normalise ``x``; ``weight``/``bias`` (per channel) are a following Scale layer's,
        applied in the same kernel when the compiler fuses the pair."""
        if x.dim() > 1 and (self.use_global_stats or x.numel() > x.shape[1]):
            return self._native(x, weight, bias)
        return self._elementwise(x, weight, bias)   # one value per channel or a 1-d blob

    def _elementwise(self, x, weight, bias):
        dims = [d for d in range(x.dim()) if d != 1] if x.dim() > 1 else [0]
        shape = [1, -1] + [1] * (x.dim() - 2) if x.dim() > 1 else [-1]
        if self.use_global_stats:
            mean, var = self._global_stats()
        else:
            mean, var, m = self._batch_moments(x, dims, shape)
            self._accumulate(mean, var * (m / (m - 1) if m > 1 else 1))
        y = (x - mean.view(shape)) / (var.view(shape) + self.eps).sqrt()
        y = y if weight is None else y * weight.view(shape)
        return y if bias is None else y + bias.view(shape)

    def _batch_moments(self, x, dims, shape):
        """Batch mean, biased variance and the count m behind them (SyncBN overrides it)."""
        mean = x.mean(dims)
        return mean, ((x - mean.view(shape)) ** 2).mean(dims), x.numel() // mean.numel()

    def _global_stats(self):
        """The stored statistics: Caffe's sums divided by the scale factor (0 while empty)."""
        s = self.scale_factor
        inv = torch.where(s == 0, 0.0, 1 / s)
        return self.mean * inv, self.variance * inv

    def _accumulate(self, mean, unbiased_var):
        with torch.no_grad():
            self.scale_factor.mul_(self.maf).add_(1)
            self.mean.mul_(self.maf).add_(mean)
            self.variance.mul_(self.maf).add_(unbiased_var)

    def _native(self, x, weight, bias):
        # The same arithmetic (biased batch variance, eps inside the square root) in
        # F.batch_norm's native kernels rather than a chain of elementwise ops, which made a
        # compiled ResNet-56 1.4x slower than nn.BatchNorm2d (issue 8).
        if self.use_global_stats:
            return F.batch_norm(x, *self._global_stats(), weight, bias, False, 0.0, self.eps)
        # momentum 1 makes the kernel store the batch mean and the unbiased (m/(m-1))
        # variance, which is what Caffe adds to its sums: no second pass over x.
        mean, var = self.mean.new_zeros(self.mean.shape), self.variance.new_zeros(self.variance.shape)
        y = F.batch_norm(x, mean, var, weight, bias, True, 1.0, self.eps)
        self._accumulate(mean, var)
        return y


def caffe_broadcast(blob, axis, ndim):
    """Align a blob covering axes [axis, axis + blob.dim()) with a bottom of ndim axes."""
    return blob.reshape(tuple(blob.shape) + (1,) * (ndim - axis - blob.dim()))


class CaffeScale(nn.Module):
    """Caffe Scale: x * scale (+ bias), scale covering axes [axis, axis + scale.dim()) of x.
    ``shape`` None: the scale is the second bottom, not a learned blob."""

    def __init__(self, shape, axis, bias=False, bias_shape=None):
        super().__init__()
        self.axis = axis
        self.weight = nn.Parameter(torch.ones(shape)) if shape is not None else None
        self.bias = nn.Parameter(torch.zeros(bias_shape if shape is None else shape)) if bias else None

    def forward(self, x, scale=None):
        scale = self.weight if scale is None else scale
        axis = 0 if scale.dim() == 0 else self.axis
        if self.bias is None:
            return x * caffe_broadcast(scale, axis, x.dim())
        # one fused op (bias + x * scale) instead of two: a pass less over x each way
        return torch.addcmul(caffe_broadcast(self.bias, axis, x.dim()), x, caffe_broadcast(scale, axis, x.dim()))


class CaffeBias(nn.Module):
    """Caffe Bias with a learned blob: x + bias, bias covering axes [axis, axis + bias.dim())."""

    def __init__(self, shape, axis):
        super().__init__()
        self.axis = axis
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, x):
        return x + caffe_broadcast(self.bias, 0 if self.bias.dim() == 0 else self.axis, x.dim())


def caffe_im2col(x, kernel, stride, pad, dilation):
    """Caffe Im2col: (N, C, H, W) -> (N, C*kh*kw, H', W'), channel-major as Caffe lays out
    the columns (the same order as F.unfold)."""
    cols = F.unfold(x, kernel, dilation=dilation, padding=pad, stride=stride)
    out = [(n + 2 * p - (d * (k - 1) + 1)) // s + 1
           for n, k, s, p, d in zip(x.shape[-2:], kernel, stride, pad, dilation)]
    return cols.reshape(x.shape[0], cols.shape[1], out[0], out[1])


# -- the inference build (netspec.compile.inference) ------------------------------------------

def caffe_max_pool_fast(x, kernel, stride, pad, ceil):
    """MAX pooling values without the argmax: torch's CPU kernel for NCHW always computes
    indices too (up to 16x slower); oneDNN's pooling (same windows, same values) does not."""
    if x.is_cpu and x.dtype == torch.float32 and x.dim() == 4 and x.is_contiguous() \
            and not torch.jit.is_tracing() and not torch.compiler.is_compiling():   # export: plain torch
        return torch.mkldnn_max_pool2d(x.to_mkldnn(), kernel, stride, pad, (1, 1), ceil).to_dense()
    return F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil)


def caffe_affine(a, b, *more):
    """Compose per-channel affines y = a*x + b, applied left to right, into one (a, b)."""
    for a2, b2 in zip(more[::2], more[1::2]):
        a, b = a * a2, b * a2 + b2
    return a, b


def caffe_bn_affine(bn):
    """A CaffeBatchNorm with stored statistics as a per-channel (a, b), in float64:
    (x - mean) / sqrt(var + eps) with Caffe's sums divided by the scale factor."""
    s = bn.scale_factor.double()
    inv = torch.where(s == 0, 0.0, 1 / s)
    a = 1 / (bn.variance.double() * inv + bn.eps).sqrt()
    return a, -bn.mean.double() * inv * a


def caffe_fold(weight, bias, a, b, ndim=2, transpose=False, dtype=None):
    """Fold the per-channel affine (a, b) that follows ``F.conv*d``/``F.linear`` with
    (weight, bias) into new (weight, bias), computed in float64.  ``weight`` None: the
    affine alone in ``dtype``, shaped to broadcast over channel axis 1 of an ``ndim``-axis blob."""
    if weight is None:
        shape = (-1,) + (1,) * (ndim - 2)
        return a.reshape(shape).to(dtype), b.reshape(shape).to(dtype)
    w = weight.t() if transpose else weight
    a, b = a.double(), b.double()
    folded = w.double() * a.reshape((-1,) + (1,) * (w.dim() - 1))
    shift = b if bias is None else bias.double() * a + b
    return folded.to(weight.dtype).contiguous(), shift.to(weight.dtype)
