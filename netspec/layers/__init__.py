"""The layer library: one class per Caffe layer type, registered by type name."""
from .base import REGISTRY, Layer, LayerError, ShapeError, known_types, register
from . import common, data, inputs, losses, neurons, vision  # noqa: F401  (registration)

__all__ = ["REGISTRY", "Layer", "LayerError", "ShapeError", "known_types", "register"]
