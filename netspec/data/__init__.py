"""The data pipeline: Caffe's data layers read into torch tensors for training.

``Feeder(checked_net, phase, seed)`` gives endless batches (dict top name ->
tensor) for every data layer of a net; sources (``netspec.data.sources``) read
records, ``Transformer`` applies ``transform_param``, ``samplers`` order them.
"""
from .feeder import Feeder
from .site import LayerSite
from .transforms import Transformer, effective_transform, read_mean_file

__all__ = ["Feeder", "LayerSite", "Transformer", "effective_transform", "read_mean_file"]
