"""The Layer base class and the registry: one class per Caffe layer type.

A layer class keeps, side by side:

* its parameter message (``param``: the ``*_param`` field of LayerParameter),
* its arity (``bottoms`` / ``tops``: (min, max), max None = unbounded),
* its learnable blobs in Caffe order (``blobs``: names that become state_dict keys),
* ``setup()``: read and validate parameters (raise :class:`LayerError`),
* ``infer()``: output shapes from input shapes (Caffe's exact formulas),
* ``blob_shapes()`` and ``fillers()``: learnable blob shapes and their fillers,
* ``module()`` / ``forward()``: the torch code the compiler emits, as source text,
  so that compiled modules and ``netspec convert`` output are the same code.

Registering a type is one line: ``@register`` on the class.
"""
from __future__ import annotations

from typing import ClassVar, Optional, Sequence

from ..proto import caffe_pb2

Shape = Optional[tuple]          # a blob shape, or None when unknown
TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST

REGISTRY: dict[str, type["Layer"]] = {}


def register(cls: type["Layer"]) -> type["Layer"]:
    """Class decorator: make ``cls`` the implementation of Caffe type ``cls.type``."""
    REGISTRY[cls.type] = cls
    return cls


def known_types() -> list[str]:
    return sorted(REGISTRY)


class LayerError(Exception):
    """A problem with one layer's parameters or input shapes.

    ``field`` is a path inside the LayerParameter, e.g. ("convolution_param", "kernel_size", 0),
    used to point the caret at the offending value.
    """

    def __init__(self, message: str, field: tuple = (), help: Sequence[str] = (),
                 code: str = "E0501", notes: Sequence[str] = ()):
        super().__init__(message)
        self.message = message
        self.field = tuple(field)
        self.help = list(help)
        self.notes = list(notes)
        self.code = code


class ShapeError(LayerError):
    def __init__(self, message: str, field: tuple = (), help: Sequence[str] = (),
                 notes: Sequence[str] = ()):
        super().__init__(message, field, help, "E0500", notes)


class Layer:
    """Base class of every layer type; see the module docstring for the contract."""

    type: ClassVar[str] = ""
    param: ClassVar[Optional[str]] = None
    bottoms: ClassVar[tuple] = (1, 1)
    tops: ClassVar[tuple] = (1, 1)
    blobs: ClassVar[tuple] = ()
    is_loss: ClassVar[bool] = False          # Caffe *Loss layers: loss_weight 1 on top 0 by default
    is_data: ClassVar[bool] = False          # produces net inputs (Input, data layers)
    generates: ClassVar[bool] = False        # a data layer that computes its tops (DummyData)
    runtime: ClassVar[tuple] = ()            # helpers from netspec.runtime the code needs
    # bottoms that Caffe never back-propagates into (labels, indices); by index
    no_grad_bottoms: ClassVar[tuple] = ()
    # whether Caffe can back-propagate at all (ArgMax, Accuracy, Threshold cannot)
    differentiable: ClassVar[bool] = True

    def __init__(self, lp, phase: int = TRAIN):
        self.lp = lp
        self.name = lp.name
        self.phase = phase
        self.p = getattr(lp, self.param) if self.param else None
        self.warnings: list[LayerError] = []     # setup() may add dialect/deprecation notes
        self.setup()

    # -- parameters -----------------------------------------------------------------
    def setup(self) -> None:
        """Read and validate the parameter message; raise LayerError on bad values."""

    def field(self, *path) -> tuple:
        """A field path inside this layer's parameter message, for LayerError."""
        return ((self.param,) if self.param else ()) + path

    def check_filler(self, name: str) -> None:
        """Validate the FillerParameter ``name`` of this layer's parameter message."""
        from .fillers import FILLERS
        if self.p.HasField(name) and getattr(self.p, name).type not in FILLERS:
            raise LayerError(f"unknown filler type '{getattr(self.p, name).type}'",
                             self.field(name, "type"), help=["known fillers: " + ", ".join(FILLERS)])

    def positive(self, value, *path) -> None:
        """Raise unless ``value`` > 0 (``path``: the field inside the parameter message)."""
        if value <= 0:
            raise LayerError(f"{path[0] if path else 'value'} must be positive, got {value}",
                             self.field(*path))

    # -- shapes ---------------------------------------------------------------------
    def infer(self, shapes: list[Shape]) -> list[Shape]:
        """Top shapes from bottom shapes.  The default keeps the first bottom's shape."""
        return [shapes[0]] * self.num_tops()

    def blob_shapes(self, shapes: list[Shape]) -> list[tuple]:
        """Shapes of the learnable blobs, in Caffe order (matching ``blobs``)."""
        return []

    def fillers(self) -> list:
        """One FillerParameter (or None for 'leave as constructed') per learnable blob."""
        return [None] * len(self.blobs)

    def lr_mult(self, i: int) -> float:
        return self.lp.param[i].lr_mult if i < len(self.lp.param) else 1.0

    def decay_mult(self, i: int) -> float:
        return self.lp.param[i].decay_mult if i < len(self.lp.param) else 1.0

    def learnable(self, i: int) -> bool:
        """Whether blob ``i`` is trained (Caffe: lr_mult != 0)."""
        return self.lr_mult(i) != 0

    def num_tops(self) -> int:
        return len(self.lp.top)

    # -- code generation --------------------------------------------------------------
    def module(self, shapes: list[Shape]) -> Optional[str]:
        """Source of an nn.Module constructor holding this layer's blobs, or None."""
        return None

    def forward(self, bottoms: list[str], shapes: list[Shape]) -> str:
        """Source of an expression computing the tops (a tuple when there are several).

        ``bottoms`` are variable names; the layer's own module is ``self.<attr>``,
        available as ``self.attr`` via :meth:`mod`.
        """
        raise NotImplementedError(self.type)

    attr: str = ""   # set by the compiler: the attribute name of this layer's module

    def mod(self) -> str:
        return f"self.{self.attr}"


def need_shapes(shapes: list[Shape]) -> bool:
    """True when every bottom shape is known (layers pass unknown shapes through)."""
    return all(s is not None for s in shapes)


def canonical_axis(axis: int, ndim: int, layer: Layer, field: tuple) -> int:
    """Caffe's CanonicalAxisIndex: negative axes count from the end."""
    if not -ndim <= axis < ndim:
        raise ShapeError(f"axis {axis} is out of range for a blob with {ndim} axes", field,
                         help=[f"use an axis in [{-ndim}, {ndim - 1}]"])
    return axis % ndim


def count(shape: tuple, start: int = 0, end: Optional[int] = None) -> int:
    n = 1
    for d in shape[start:end]:
        n *= d
    return n


def fmt_shape(shape: Shape) -> str:
    return "?" if shape is None else "(" + ", ".join(str(d) for d in shape) + ")"
