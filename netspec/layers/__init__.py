"""The layer library: one class per Caffe layer type, registered by type name."""
from .base import REGISTRY, Layer, LayerError, ShapeError, known_types, register
from . import common, data, inputs, losses, neurons, recurrent, vision  # noqa: F401  (registration)
from . import hdf5_output, python  # noqa: F401  (registration: HDF5Output, Python)

__all__ = ["REGISTRY", "Layer", "LayerError", "ShapeError", "known_types", "register"]


def __getattr__(name: str):
    """pycaffe's ``caffe.layers``: ``netspec.layers.Convolution(bottom, ...)`` builds a layer
    for ``netspec.NetSpec`` / ``netspec.to_proto`` (see ``netspec/layers/spec.py``)."""
    if name[:1].isupper():
        from .spec import layers as spec_layers
        return getattr(spec_layers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
