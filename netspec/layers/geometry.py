"""Caffe's window geometry as plain integer arithmetic, shared by shape inference (no torch)
and the runtime helpers (``netspec.runtime.vision`` re-exports them for generated code)."""


def caffe_pool_size(size, k, s, p, ceil=True):
    """Caffe's pooled size: ceil (or floor) rounding, then drop a last window starting in the padding."""
    n = size + 2 * p - k
    out = (-(-n // s) if ceil else n // s) + 1
    if p > 0 and (out - 1) * s >= size + p:
        out -= 1
    return out


def caffe_spp_level(size, level):
    """Caffe's SPP geometry for one pyramid level: (kernel = stride, pad) along one axis."""
    bins = 2 ** level
    k = -(-size // bins)
    return k, (k * bins - size + 1) // 2
