"""Caffe's DataTransformer: ``transform_param`` applied to one record of top 0.

Per record, in Caffe's order: draw mirror (``Rand(2)``, in TRAIN *and* TEST, as
Caffe does when ``mirror: true``), pick the crop offsets (random in TRAIN,
centred in TEST), subtract the mean (``mean_file`` at the uncropped position,
or ``mean_value`` per channel), crop, mirror, then multiply by ``scale``.
"""
from __future__ import annotations


import numpy as np

from ..proto import caffe_pb2
from .site import LayerSite

LEGACY = ("scale", "mirror", "crop_size", "mean_file")   # old per-layer transform fields


def effective_transform(lp, param=None):
    """``transform_param`` with the legacy fields of DataParameter/ImageDataParameter
    folded in (Caffe's upgrade moves them the same way)."""
    tp = caffe_pb2.TransformationParameter()
    tp.CopyFrom(lp.transform_param)
    for name in LEGACY:
        if param is not None and name in param.DESCRIPTOR.fields_by_name \
                and param.HasField(name) and not tp.HasField(name):
            setattr(tp, name, getattr(param, name))
    return tp


def read_mean_file(path) -> np.ndarray:
    """A Caffe ``.binaryproto`` mean (BlobProto) as a float32 (C, H, W) array."""
    from ..interop.blobproto import blob_array
    blob = caffe_pb2.BlobProto()
    blob.ParseFromString(open(path, "rb").read())
    a = blob_array(blob)
    return a.reshape(a.shape[-3:]) if a.ndim >= 3 else a.reshape((1,) * (3 - a.ndim) + a.shape)


class Transformer:
    """The transform of one data layer; call it on (C, H, W) records."""

    def __init__(self, tp, phase: int, site: LayerSite):
        self.scale = tp.scale
        self.mirror = tp.mirror
        self.crop = tp.crop_size
        self.train = phase == caffe_pb2.TRAIN
        self.site = site
        self.mean_values = np.asarray(tp.mean_value, np.float32) if len(tp.mean_value) else None
        self.mean = self._mean(tp) if tp.mean_file else None

    def _mean(self, tp) -> np.ndarray:
        field = ("transform_param", "mean_file")
        path = self.site.resolve(tp.mean_file, field, "mean file")
        try:
            return read_mean_file(path)
        except Exception as e:     # protobuf DecodeError, shape mismatch: a bad file either way
            raise self.site.error("E0104", f"mean file '{path}' is not a Caffe .binaryproto BlobProto: {e}",
                                  field) from None

    @property
    def identity(self) -> bool:
        return (self.scale == 1 and not self.mirror and not self.crop
                and self.mean is None and self.mean_values is None)

    def out_shape(self, chw: tuple) -> tuple:
        c, h, w = chw
        return (c, self.crop, self.crop) if self.crop else (c, h, w)

    def __call__(self, x: np.ndarray, rng: np.random.Generator, record: str) -> np.ndarray:
        """Transform one record ``x`` of shape (C, H, W); ``record`` names it in errors."""
        x = np.asarray(x, np.float32)
        c, h, w = x.shape
        flip = bool(self.mirror and rng.integers(2))
        top, left = self._offsets(h, w, rng, record)
        x = x - self._mean_for(x.shape, record)
        if self.crop:
            x = x[:, top:top + self.crop, left:left + self.crop]
        if flip:
            x = x[:, :, ::-1]
        if self.scale != 1:
            x = x * np.float32(self.scale)
        return np.ascontiguousarray(x, np.float32)

    def _offsets(self, h: int, w: int, rng, record: str) -> tuple[int, int]:
        if not self.crop:
            return 0, 0
        if self.crop > h or self.crop > w:
            raise self.site.error("E0701", f"crop_size {self.crop} is larger than {record} ({h} x {w})",
                                  ("transform_param", "crop_size"))
        if self.train:
            return int(rng.integers(h - self.crop + 1)), int(rng.integers(w - self.crop + 1))
        return (h - self.crop) // 2, (w - self.crop) // 2

    def _mean_for(self, shape: tuple, record: str):
        if self.mean is not None:
            if self.mean.shape != shape:
                raise self.site.error(
                    "E0701", f"the mean file has shape {self.mean.shape} but {record} has shape {shape}",
                    ("transform_param", "mean_file"), help=["Caffe subtracts the mean before cropping: "
                                                            "it must have the uncropped record's shape"])
            return self.mean
        if self.mean_values is not None:
            mv = self.mean_values
            if len(mv) not in (1, shape[0]):
                raise self.site.error(
                    "E0701", f"{len(mv)} mean_value entries for {record} with {shape[0]} channels",
                    ("transform_param", "mean_value"), help=["give one mean_value, or one per channel"])
            return (mv if len(mv) == shape[0] else np.repeat(mv, shape[0]))[:, None, None]
        return np.float32(0)
