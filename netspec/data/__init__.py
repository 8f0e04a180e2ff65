"""The data pipeline: Caffe's data layers read into torch tensors for training.

``Feeder(checked_net, phase, seed)`` gives endless batches (dict top name ->
tensor) for every data layer of a net; sources (``netspec.data.sources``) read
records, ``Transformer`` applies ``transform_param``, ``samplers`` order them.
Names are imported on first use so that ``netspec check`` (which only needs
``netspec.data.paths``) does not pay for torch and the readers.
"""
from importlib import import_module

_EXPORTS = {"Feeder": "feeder", "LayerSite": "site", "Transformer": "transforms",
            "effective_transform": "transforms", "read_mean_file": "transforms"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'netspec.data' has no attribute '{name}'")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
