"""pycaffe's ``Blob`` as Python layers see it: ``data`` and ``diff``, numpy arrays of one shape."""
from __future__ import annotations

import numpy as np


class Blob:
    """A Caffe blob for Python layers: ``data``/``diff`` are writable numpy arrays
    (``blob.data[...] = x``), ``reshape(*shape)`` reallocates both, and the legacy
    ``num``/``channels``/``height``/``width`` accessors follow Caffe's ``LegacyShape``."""

    def __init__(self, shape=(), dtype=np.float32):
        self._data = np.zeros(tuple(shape), dtype)
        self._diff = np.zeros(tuple(shape), dtype)

    @property
    def data(self) -> np.ndarray:
        return self._data

    @property
    def diff(self) -> np.ndarray:
        return self._diff

    def bind(self, data: np.ndarray, diff: np.ndarray | None = None) -> None:
        """Point the blob at netspec's arrays (a view of a tensor where possible)."""
        self._data = data
        self._diff = np.zeros_like(data) if diff is None else diff

    def astype(self, dtype) -> None:
        """Keep ``data``/``diff`` in ``dtype`` (the net's precision: float32, or float64)."""
        if self._data.dtype != dtype:
            self._data, self._diff = self._data.astype(dtype), self._diff.astype(dtype)

    def reshape(self, *shape: int) -> None:
        """Caffe's Blob::Reshape: new zeroed storage when the shape changes."""
        shape = tuple(int(d) for d in shape)
        if shape != self._data.shape:
            self._data = np.zeros(shape, self._data.dtype)
            self._diff = np.zeros(shape, self._diff.dtype)

    @property
    def shape(self) -> tuple:
        return tuple(self._data.shape)

    @property
    def count(self) -> int:
        return int(self._data.size)

    def _legacy(self, i: int) -> int:
        return self.shape[i] if i < len(self.shape) else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def __repr__(self) -> str:
        return f"Blob{self.shape}"


class BlobVec(list):
    """A layer's learnable blobs (pycaffe's ``self.blobs``): a list with ``add_blob``."""

    def add_blob(self, *shape: int) -> Blob:
        """Append a zero-filled blob of ``shape`` (as pycaffe's ``add_blob``)."""
        blob = Blob(tuple(int(d) for d in shape))
        self.append(blob)
        return blob
