"""Net inputs: Input and DummyData (data-reading layers live in netspec.data)."""
from __future__ import annotations

from .base import Layer, LayerError, fmt_shape, register


@register
class Input(Layer):
    """Caffe's Input layer: each top is a forward() argument of the given shape."""

    type = "Input"
    param = "input_param"
    bottoms = (0, 0)
    tops = (1, None)
    is_data = True

    def setup(self):
        n, k = len(self.lp.top), len(self.p.shape)
        if k not in (0, 1, n):
            raise LayerError(f"{k} shapes for {n} tops; give one shape, or one per top",
                             self.field("shape", 0))
        for i, s in enumerate(self.p.shape):
            if any(d < 0 for d in s.dim):
                raise LayerError(f"negative dimension in {list(s.dim)}", self.field("shape", i))

    def infer(self, shapes):
        dims = [tuple(s.dim) for s in self.p.shape]
        if not dims:
            return [None] * self.num_tops()
        return dims * self.num_tops() if len(dims) == 1 else dims


@register
class DummyData(Layer):
    """Caffe's DummyData: tops of fixed shapes, re-filled on every forward pass.

    ``data_filler`` (none: constant 0; one for all tops; or one per top) supports
    constant, uniform and gaussian; shapes come from ``shape`` or the legacy
    num/channels/height/width lists (each with one entry or one per top).
    """

    type = "DummyData"
    param = "dummy_data_param"
    bottoms = (0, 0)
    tops = (1, None)
    is_data = True
    generates = True
    runtime = ("CaffeDummyData",)
    LEGACY = ("num", "channels", "height", "width")
    FILLERS = {"constant": ("value", "value"), "uniform": ("min", "max"), "gaussian": ("mean", "std")}

    def setup(self):
        n = self.num_tops()
        self._counts("data_filler", n)
        for i, f in enumerate(self.p.data_filler):
            if f.type not in self.FILLERS:
                raise LayerError(f"DummyData does not support the '{f.type}' filler",
                                 self.field("data_filler", i, "type"),
                                 help=["use one of: " + ", ".join(self.FILLERS)])
            if f.type == "gaussian" and f.sparse >= 0:
                raise LayerError("DummyData does not support sparse gaussian fillers",
                                 self.field("data_filler", i, "sparse"), help=["remove `sparse`"])
        legacy = [k for k in self.LEGACY if len(getattr(self.p, k))]
        if legacy and len(self.p.shape):
            raise LayerError("both `shape` and the legacy num/channels/height/width were given",
                             self.field(legacy[0], 0), help=["give the shapes one way only"])
        for k in (self.LEGACY if legacy else ("shape",)):
            self._counts(k, n, allow_zero=False)
        self.shapes = [self._shape(i, bool(legacy)) for i in range(n)]

    def _counts(self, name, n, allow_zero=True):
        k = len(getattr(self.p, name))
        if k not in ((0,) if allow_zero else ()) + (1, n):
            raise LayerError(f"{k} `{name}` entries for {n} tops; give one, or one per top",
                             self.field(name, max(k - 1, 0)) if k else self.field(),
                             help=[f"DummyData needs `{name}` once, or once per top"])

    def _shape(self, i, legacy):
        def pick(rep):          # one entry serves every top
            return rep[0] if len(rep) == 1 else rep[i]
        shape = (tuple(pick(getattr(self.p, k)) for k in self.LEGACY) if legacy
                 else tuple(pick(self.p.shape).dim))
        if any(d < 0 for d in shape):
            raise LayerError(f"negative dimension in {fmt_shape(shape)}", self.field("shape", i))
        return shape

    def infer(self, shapes):
        return list(self.shapes)

    def _filler(self, i):
        fs = self.p.data_filler
        if not fs:
            return ("constant", 0.0, 0.0)
        f = fs[0] if len(fs) == 1 else fs[i]
        a, b = self.FILLERS[f.type]
        return (f.type, float(getattr(f, a)), float(getattr(f, b)))

    def module(self, shapes):
        tops = [(s,) + self._filler(i) for i, s in enumerate(self.shapes)]
        return f"CaffeDummyData({tops!r})"

    def forward(self, bottoms, shapes):
        return f"{self.mod()}()" + ("[0]" if self.num_tops() == 1 else "")
