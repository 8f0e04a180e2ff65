"""Data layers: registered so every Caffe net checks; their tops are net inputs.

Shape inference uses what the parameters say (batch size, crop, resize, colour)
and, when the data source is on disk, what it holds (HDF5 dataset shapes, the
first image of a list, the first Datum of an LMDB).  Sources that are absent or
unreadable leave the shape unknown (it can be given with ``--input-shape``);
reading the data itself, with its errors, is the job of ``netspec.data``.

Paths resolve as in Caffe against the working directory, then against the
prototxt's folder when the lowering pass sets ``net_path`` on the layer.
"""
from __future__ import annotations

from typing import Optional

from .base import Layer, LayerError, register


class DataLayer(Layer):
    bottoms = (0, 0)
    tops = (1, 2)
    is_data = True
    net_path: Optional[str] = None       # the prototxt naming this layer, when known

    def setup(self) -> None:
        tp = self.lp.transform_param
        if tp.HasField("mean_file") and len(tp.mean_value):
            raise LayerError("mean_file and mean_value cannot both be given",
                             ("transform_param", "mean_value"), help=["keep one of them"])

    def batch_size(self) -> int:
        return self.p.batch_size

    def crop(self) -> int:
        """transform_param.crop_size, or the legacy crop_size of the layer's own param."""
        legacy = getattr(self.p, "crop_size", 0) if self.p is not None else 0
        return self.lp.transform_param.crop_size or legacy

    def record_shape(self) -> Optional[tuple]:
        """(C, H, W) of one record before cropping, when known; None otherwise."""
        return None

    def image_shape(self) -> Optional[tuple]:
        """(C, H, W) of one record after the transform, when known."""
        try:
            chw = self.record_shape()
        except Exception:          # an unreadable source: the feeder reports it when training
            chw = None
        crop = self.crop()
        if chw is None:
            return None
        return (chw[0], crop, crop) if crop else tuple(chw)

    def resolve(self, path: str):
        from ..data.paths import resolve
        return resolve(path, self.net_path) if path else None

    def infer(self, shapes):
        n = self.batch_size()
        chw = self.image_shape()
        data = (n, *chw) if n and chw and None not in chw else None
        label = (n,) if n else None
        return [data, label][:self.num_tops()]


@register
class Data(DataLayer):
    """Caffe Data (LMDB of Datum records); channels and size come from the first Datum."""

    type = "Data"
    param = "data_param"

    def record_shape(self):
        path = self.resolve(self.p.source)
        if path is None:
            return None
        from ..data.sources.lmdb_db import datum_array, open_env
        from ..proto import caffe_pb2
        with open_env(path).begin() as txn:
            first = next(iter(txn.cursor()), None)
        if first is None:
            return None
        datum = caffe_pb2.Datum.FromString(first[1])
        return datum_array(datum, self.p.force_encoded_color).shape


@register
class ImageData(DataLayer):
    type = "ImageData"
    param = "image_data_param"

    def record_shape(self):
        c = 3 if self.p.is_color else 1
        if self.p.new_height and self.p.new_width:
            return (c, self.p.new_height, self.p.new_width)
        if self.crop():
            return (c, None, None)
        return self._first_image(c)

    def _first_image(self, c: int):
        listing = self.resolve(self.p.source)
        if listing is None:
            return None
        from ..data.sources.images import image_size
        with open(listing) as f:
            first = next((line.strip() for line in f if line.strip()), None)
        if first is None:
            return None
        root = self.p.root_folder
        found = self.resolve(root) if root else None
        root = (str(found) + ("/" if root.endswith("/") else "")) if found else root
        return (c, *image_size(root + first.rpartition(" ")[0])[1:])


@register
class WindowData(DataLayer):
    type = "WindowData"
    param = "window_data_param"

    def record_shape(self):
        return (3, None, None)


@register
class MemoryData(DataLayer):
    type = "MemoryData"
    param = "memory_data_param"

    def record_shape(self):
        p = self.p
        return (p.channels, p.height, p.width)


@register
class HDF5Data(DataLayer):
    """Caffe HDF5Data: shapes come from the datasets (named as the tops) in the listed .h5 files."""

    type = "HDF5Data"
    param = "hdf5_data_param"
    tops = (1, None)

    def infer(self, shapes):
        n = self.batch_size()
        try:
            found = self._dataset_shapes()
        except Exception:          # unreadable or wrong: the feeder reports it when training
            found = None
        if not n or found is None:
            return [None] * self.num_tops()
        out = [(n, *found[t][1:]) for t in self.lp.top]
        crop = self.crop()
        if crop and len(out[0]) == 4:
            out[0] = (n, out[0][1], crop, crop)
        return out

    def _dataset_shapes(self):
        listing = self.resolve(self.p.source)
        if listing is None:
            return None
        with open(listing) as f:
            first = next((line.strip() for line in f if line.strip()), None)
        if first is None:
            return None
        path = self.resolve(first) or self.resolve(str(listing.parent / first))
        if path is None:
            return None
        import h5py
        with h5py.File(path, "r") as h5:
            return {t: h5[t].shape for t in self.lp.top}


@register
class TorchvisionData(DataLayer):
    """netspec extension: a torchvision dataset already on disk (``torchvision_param``);
    never downloads.  Record shapes come from a table of the supported datasets."""

    type = "TorchvisionData"
    param = "torchvision_param"

    def setup(self) -> None:
        super().setup()
        from ..data.sources.tvision import SHAPES
        if self.p.dataset not in SHAPES:
            raise LayerError(f"unsupported torchvision dataset '{self.p.dataset}'",
                             ("torchvision_param", "dataset"),
                             help=["supported: " + ", ".join(SHAPES)])

    def record_shape(self):
        from ..data.sources.tvision import SHAPES
        return SHAPES[self.p.dataset]
