"""Caffe's ``HDF5Output`` layer: writes its two bottoms to an HDF5 file, has no tops."""
from __future__ import annotations

import functools
import io

from .base import Layer, LayerError, ShapeError, fmt_shape, register


@register
class HDF5Output(Layer):
    """Writes bottom 0 as dataset ``data`` and bottom 1 as ``label`` to ``file_name``.

    As BVLC Caffe 1.0's ``HDF5OutputLayer``: float32 datasets in the blobs' legacy 4-axis
    shape (N, C, H, W, missing axes 1), written at every forward pass (Caffe writes them in
    ``Forward``; netspec rewrites the whole file, atomically, so a later pass replaces the
    last batch where Caffe 1.0 would abort on the existing dataset).  No gradient flows.
    """

    type = "HDF5Output"
    param = "hdf5_output_param"
    bottoms = (2, 2)
    tops = (0, 0)
    differentiable = False
    no_grad_bottoms = (0, 1)
    side_effect = True          # has no tops, yet must run: the compiler keeps it
    imports = ("from netspec.layers.hdf5_output import CaffeHDF5Output  # writes the HDF5 file",)

    def setup(self):
        if not self.p.file_name:
            raise LayerError("HDF5Output needs a file_name", self.field("file_name"),
                             help=['hdf5_output_param { file_name: "out.h5" }'])

    def infer(self, shapes):
        for i, s in enumerate(shapes):
            if len(s) > 4:
                raise ShapeError(f"bottom {i} has {len(s)} axes {fmt_shape(s)}; HDF5Output writes "
                                 "Caffe's legacy 4-axis blobs", help=["reshape it to at most 4 axes"])
        if _legacy(shapes[0])[0] != _legacy(shapes[1])[0]:
            raise ShapeError(f"data {fmt_shape(shapes[0])} and label {fmt_shape(shapes[1])} differ in "
                             "batch size (axis 0)", help=["HDF5Output writes one label row per data row"])
        return []

    def module(self, shapes):
        return f"CaffeHDF5Output({self.p.file_name!r})"

    def forward(self, bottoms, shapes):
        return f"{self.mod()}({bottoms[0]}, {bottoms[1]})"


def _legacy(shape) -> tuple:
    """Caffe's LegacyShape: (num, channels, height, width), 1 for missing axes."""
    return tuple(shape) + (1,) * (4 - len(shape))


def __getattr__(name: str):
    # ``from netspec.layers.hdf5_output import CaffeHDF5Output`` (generated code) builds the
    # torch module on first use, so that checking a net never imports torch
    if name == "CaffeHDF5Output":
        return _writer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.lru_cache(maxsize=1)
def _writer_class():
    import torch
    import torch.nn as nn

    class CaffeHDF5Output(nn.Module):
        """Writes ``data`` and ``label`` as Caffe's HDF5OutputLayer does (float32, 4 axes)."""

        def __init__(self, file_name: str):
            super().__init__()
            self.file_name = file_name

        def forward(self, data: torch.Tensor, label: torch.Tensor) -> None:
            import h5py
            from ..fileio import write_atomic
            buf = io.BytesIO()
            with h5py.File(buf, "w") as f:
                for name, t in (("data", data), ("label", label)):
                    arr = t.detach().to("cpu", torch.float32).numpy()
                    f.create_dataset(name, data=arr.reshape(_legacy(arr.shape)))
            write_atomic(self.file_name, buf.getvalue())

    CaffeHDF5Output.__qualname__ = "CaffeHDF5Output"     # picklable as a module attribute
    return CaffeHDF5Output
