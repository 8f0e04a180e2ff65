"""Caffe's ``Python`` layer, both kinds.

``python_param { module: "m" layer: "C" param_str: "..." }`` names a class:

* a pycaffe layer (a ``caffe.Layer`` subclass with setup/reshape/forward/backward on numpy
  blobs) runs unchanged through :class:`netspec.pycaffe.PythonLayer`;
* a torch ``nn.Module`` subclass whose constructor takes ``param_str`` is compiled like any
  layer: called on the bottoms, differentiated by autograd, imported by ``netspec convert``.

Modules load as in Caffe, from ``sys.path``, and also from the net file's directory and its
``layers/`` subdirectory.  Top shapes come from running the class on zero bottoms of the
known shapes at check time (Caffe's setup + reshape at Net construction).
"""
from __future__ import annotations

from .base import Layer, LayerError, register


@register
class Python(Layer):
    """A layer implemented in Python: pycaffe-style or a torch module (see module doc)."""

    type = "Python"
    param = "python_param"
    bottoms = (0, None)
    tops = (0, None)
    side_effect = True          # one without tops (a writer, a logger) still runs, as in Caffe

    _loaded = None
    _net_path = None
    _blob_shapes: list = []

    @property
    def net_path(self):
        return self._net_path

    @net_path.setter
    def net_path(self, path):
        # the lowering pass sets the net's path right after construction: load the class
        # then, as Caffe's Net does, so a bad module or class is reported on python_param
        self._net_path = path
        self._load()

    def _load(self):
        from ..pycaffe.loader import LoadError, load_class, search_dirs
        if self._loaded is None:
            try:
                self._loaded = load_class(self.p.module, self.p.layer, search_dirs(self._net_path))
            except LoadError as e:
                raise LayerError(e.message, self.field(e.field), help=e.help) from None
        return self._loaded

    @property
    def torch_native(self) -> bool:
        import torch.nn as nn       # here, not at the top: checking other nets needs no torch
        return issubclass(self._load().cls, nn.Module)

    def infer(self, shapes):
        if any(s is None for s in shapes):
            return [None] * self.num_tops()
        tops, params = self._run(shapes)
        self.blobs = tuple(name for name, _ in params)
        self._blob_shapes = [tuple(p.shape) for _, p in params]
        if len(tops) != self.num_tops():
            raise LayerError(f"class '{self.p.layer}' makes {len(tops)} top(s), the layer lists "
                             f"{self.num_tops()}", self.field("layer"),
                             help=["give one `top:` per output of the class"])
        return tops

    def _run(self, shapes):
        """(top shapes, [(state_dict name, parameter)]) from running the class once."""
        try:
            if self.torch_native:
                return _probe_module(self._load().cls, self.p.param_str, shapes)
            from ..pycaffe.runner import probe
            layer, _, top = probe(self._load().cls, self.p.param_str, self.phase, shapes, self.num_tops())
            return [t.shape for t in top], [(f"blob{i}", b.data) for i, b in enumerate(layer.blobs)]
        except LayerError:
            raise
        except Exception as e:      # the user's code failed: say where, as Caffe's Net would
            step = getattr(e, "netspec_step", "__init__/forward" if self.torch_native else "setup")
            raise LayerError(f"Python layer class '{self.p.layer}' raised {type(e).__name__} in "
                             f"{step}(){': ' + str(e) if str(e) else ''}", self.field("layer"),
                             help=["the class ran on zero-filled bottoms of the checked shapes"],
                             notes=_where(e)) from e

    def blob_shapes(self, shapes):
        return self._blob_shapes

    @property
    def imports(self) -> list[str]:
        """Lines the generated source needs before the class (``netspec convert`` output)."""
        loaded = self._load()
        lines = []
        if loaded.extra_dir and self.torch_native:
            # a standalone file finds the module where netspec did; compiling in-process the
            # module is loaded already and sys.path stays as it is
            top = self.p.module.split(".")[0]
            lines += ["import sys", f"if {top!r} not in sys.modules:",
                      f"    sys.path.append({loaded.extra_dir!r})  # python_param module beside the net"]
        if self.torch_native:
            lines.append(f"import {self.p.module}")
        else:
            lines.append("from netspec.pycaffe import PythonLayer  # runs pycaffe-style layers")
        return lines

    def module(self, shapes):
        if self.torch_native:
            return f"{self.p.module}.{self.p.layer}({self.p.param_str!r})"
        search = (self._load().extra_dir,) if self._load().extra_dir else ()
        return (f"PythonLayer({self.p.module!r}, {self.p.layer!r}, param_str={self.p.param_str!r}, "
                f"phase={self.phase}, bottom_shapes={[tuple(s) for s in shapes]!r}, "
                f"num_tops={self.num_tops()}, search={search!r})")

    def forward(self, bottoms, shapes):
        return f"{self.mod()}({', '.join(bottoms)})"


def _where(exc: BaseException) -> list[str]:
    """The innermost frame of the traceback: where the user's code raised."""
    import traceback
    frames = traceback.extract_tb(exc.__traceback__)
    return [f"raised at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}"] if frames else []


def _probe_module(cls, param_str: str, shapes):
    """Build the module and run it on zero bottoms: top shapes and its parameters."""
    import torch
    module = cls(param_str)
    with torch.no_grad():
        out = module(*[torch.zeros(s) for s in shapes])
    tops = list(out) if isinstance(out, (tuple, list)) else [] if out is None else [out]
    return [tuple(t.shape) for t in tops], list(module.named_parameters())
