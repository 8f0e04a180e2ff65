"""One Source class per Caffe data-layer type (see ``base.Source``)."""
from .base import Source
from .hdf5 import HDF5Source
from .imagelist import ImageListSource
from .lmdb_db import LMDBSource, datum_array
from .memory import MemorySource
from .tvision import TorchvisionSource

SOURCES = {"HDF5Data": HDF5Source, "ImageData": ImageListSource, "Data": LMDBSource,
           "MemoryData": MemorySource, "TorchvisionData": TorchvisionSource}

__all__ = ["Source", "SOURCES", "HDF5Source", "ImageListSource", "LMDBSource", "MemorySource",
           "TorchvisionSource", "datum_array"]
