"""netspec: a Caffe-style declarative network compiler on PyTorch.

For notebooks, in the spirit of pycaffe::

    import netspec
    net = netspec.Net("models/digits/deep_plain.prototxt", phase="TEST")
    solver = netspec.Solver("models/digits/solver_relay.prototxt")

``Net`` and ``Solver`` are imported on first use, so ``import netspec`` (and the
``netspec`` command's start-up) does not pay for torch until they are needed.
"""
__version__ = "0.1.0"
__all__ = ["Net", "Solver", "NetSpec", "layers", "params", "to_proto", "TRAIN", "TEST", "__version__"]

# pycaffe's caffe.TRAIN / caffe.TEST (Caffe's Phase values); netspec.Net takes them as it
# takes "TRAIN" / "TEST": netspec.Net(path, netspec.TEST)
TRAIN, TEST = 0, 1

_LAZY = {"Net": ("netspec.api", "Net"), "Solver": ("netspec.solve.solver", "Solver"),
         "EarlyExit": ("netspec.tools.early_exit", "EarlyExit"),       # anytime prediction
         # pycaffe's NetSpec API: ``from netspec import layers as L, params as P, to_proto``
         # (``netspec.layers`` is the layer library package; it forwards L.<Type> to net_spec)
         "NetSpec": ("netspec.net_spec", "NetSpec"), "params": ("netspec.net_spec", "params"),
         "to_proto": ("netspec.net_spec", "to_proto")}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'netspec' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
