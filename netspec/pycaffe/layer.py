"""pycaffe's ``caffe.Layer``: the base class of layers written in Python for Caffe."""
from __future__ import annotations

from .blob import BlobVec

TRAIN, TEST = 0, 1


class Layer:
    """Base class of a Python layer (``type: "Python"``), as pycaffe's ``caffe.Layer``.

    Caffe calls ``setup(bottom, top)`` once, then ``reshape`` before every ``forward``,
    and ``backward(top, propagate_down, bottom)``; ``bottom``/``top`` are lists of
    :class:`~netspec.pycaffe.blob.Blob`.  ``param_str`` is ``python_param.param_str``,
    ``phase`` is 0 (TRAIN) or 1 (TEST), ``blobs`` holds the learnable blobs
    (``self.blobs.add_blob(*shape)`` in ``setup``).
    """

    def __init__(self, *args, **kwargs):
        self.blobs = BlobVec()
        self.param_str = ""
        self.phase = TRAIN

    def setup(self, bottom, top):
        """Read ``param_str`` and check the bottoms (called once)."""

    def reshape(self, bottom, top):
        """Size the tops for these bottoms (called before every forward)."""
        raise NotImplementedError(f"{type(self).__name__} does not define reshape()")

    def forward(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def backward(self, top, propagate_down, bottom):
        raise NotImplementedError(f"{type(self).__name__} does not define backward()")


def new_layer(cls: type, param_str: str, phase: int):
    """An instance of a user's layer class with Caffe's attributes set before ``setup``."""
    obj = cls()
    if not hasattr(obj, "blobs"):            # a subclass __init__ that skipped ours
        obj.blobs = BlobVec()
    obj.param_str, obj.phase = param_str, phase
    return obj
