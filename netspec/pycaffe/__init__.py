"""pycaffe's Python-layer interface, so that layers written for Caffe run unchanged.

``Layer`` (pycaffe's ``caffe.Layer``), ``Blob``, ``TRAIN``/``TEST`` and
``layer_type_list()``; :class:`PythonLayer` runs such a layer as an ``nn.Module``.
Importing this package lets ``import caffe`` resolve to it when real pycaffe is not
installed (an installed pycaffe is always found first; see ``finder``).
"""
from .blob import Blob, BlobVec
from .finder import install
from .layer import TEST, TRAIN, Layer
from .runner import PythonLayer


def layer_type_list() -> list[str]:
    """Every layer type netspec knows (pycaffe's ``caffe.layer_type_list``)."""
    from ..layers import known_types
    return known_types()


__all__ = ["Blob", "BlobVec", "Layer", "PythonLayer", "TRAIN", "TEST", "layer_type_list"]

install()
