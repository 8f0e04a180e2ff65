"""Data layers: registered so every Caffe net checks; their tops are net inputs.

Shape inference uses what the parameters say (batch size, crop, resize, colour);
whatever depends on a data source that is not on disk stays unknown and can be
given with ``--input-shape``.  Reading the data itself is the job of the data
pipeline (``netspec.data``), which feeds these tops as forward() arguments.
"""
from __future__ import annotations

from .base import Layer, register


class DataLayer(Layer):
    bottoms = (0, 0)
    tops = (1, 2)
    is_data = True

    def batch_size(self) -> int:
        return self.p.batch_size

    def image_shape(self):
        """(C, H, W) when the parameters determine it, else None."""
        crop = self.lp.transform_param.crop_size
        return (None, crop, crop) if crop else None

    def infer(self, shapes):
        n = self.batch_size()
        chw = self.image_shape()
        data = (n, *chw) if n and chw and None not in chw else None
        label = (n,) if n else None
        return [data, label][:self.num_tops()]


@register
class Data(DataLayer):
    """Caffe Data (LMDB/LevelDB of Datum records); channels come from the database."""

    type = "Data"
    param = "data_param"


@register
class ImageData(DataLayer):
    type = "ImageData"
    param = "image_data_param"

    def image_shape(self):
        c = 3 if self.p.is_color else 1
        crop = self.lp.transform_param.crop_size or self.p.crop_size
        if crop:
            return (c, crop, crop)
        if self.p.new_height and self.p.new_width:
            return (c, self.p.new_height, self.p.new_width)
        return None


@register
class WindowData(DataLayer):
    type = "WindowData"
    param = "window_data_param"

    def image_shape(self):
        crop = self.lp.transform_param.crop_size or self.p.crop_size
        return (3, crop, crop) if crop else None


@register
class MemoryData(DataLayer):
    type = "MemoryData"
    param = "memory_data_param"

    def image_shape(self):
        p = self.p
        return (p.channels, p.height, p.width)


@register
class HDF5Data(DataLayer):
    """Caffe HDF5Data: shapes come from the datasets in the listed .h5 files."""

    type = "HDF5Data"
    param = "hdf5_data_param"
    tops = (1, None)

    def infer(self, shapes):
        return [None] * self.num_tops()
