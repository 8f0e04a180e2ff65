"""netspec: a Caffe-style declarative network compiler on PyTorch.

For notebooks, in the spirit of pycaffe::

    import netspec
    net = netspec.Net("models/digits/deep_plain.prototxt", phase="TEST")
    solver = netspec.Solver("models/digits/solver_relay.prototxt")

``Net`` and ``Solver`` are imported on first use, so ``import netspec`` (and the
``netspec`` command's start-up) does not pay for torch until they are needed.
"""
__version__ = "0.1.0"
__all__ = ["Net", "Solver", "__version__"]

_LAZY = {"Net": ("netspec.api", "Net"), "Solver": ("netspec.solve.solver", "Solver")}


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
