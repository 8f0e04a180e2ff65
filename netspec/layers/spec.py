"""The machinery of pycaffe's ``NetSpec`` API (public face: ``netspec/net_spec.py``).

``Top``/``Function`` build layers, ``to_proto`` names and collects them, ``pycaffe_text``
prints what pycaffe prints.  It lives in the layer library because ``netspec.layers`` is
also pycaffe's ``caffe.layers`` (``netspec.layers.Convolution(...)``), and it needs
nothing above the layer registry, so neither imports the compiler.

``L.<Type>(*bottoms, **fields)`` is one layer: ``ntop`` tops (default 1, 0 returns
the layer itself), ``in_place=True`` writes its top over its bottom.  Keyword
arguments go to the layer's ``<type>_param`` message when it has that field, else to
LayerParameter itself (``param=[dict(lr_mult=1)]``, ``loss_weight``, ``include``,
netspec's ``gradient_scope``); ``*_param`` names go to LayerParameter directly.
Lists fill repeated fields, dicts fill messages, a scalar given to a repeated field
is a one-element list.  ``P.Pooling.MAX`` is ``PoolingParameter.MAX``.

Unnamed tops and layers are named as pycaffe names them: ``<Type><n>`` counting per
type in the order ``to_proto`` first reaches them; a layer takes the name of its
first top.  Assigning to a ``NetSpec`` attribute names the top (and its layer).
"""
from __future__ import annotations

from collections import Counter, OrderedDict

from google.protobuf import text_encoding
from google.protobuf.descriptor import FieldDescriptor

from ..diagnostics import Diagnostic, NetspecError, did_you_mean
from ..proto import caffe_pb2
from .base import REGISTRY

__all__ = ["NetSpec", "NetProto", "Top", "Function", "layers", "params", "to_proto", "pycaffe_text"]


# -- the text pycaffe prints ----------------------------------------------------------
def pycaffe_text(message, indent: int = 0) -> str:
    """``message`` in protobuf text format as pycaffe's protobuf (3.x) printed it.

    Today's protobuf prints float32 fields by their shortest round-trip form
    (``0.00392156886``, ``104``); the protobuf pycaffe ran on printed Python's ``str``
    of the value widened to double (``0.003921568859368563``, ``104.0``), which is
    what every generated prototxt in the wild holds.  Both read back to the same float.
    """
    out = []
    pad = " " * indent
    for fd, value in message.ListFields():
        values = value if fd.is_repeated else [value]
        for v in values:
            if fd.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
                out.append(f"{pad}{fd.name} {{\n{pycaffe_text(v, indent + 2)}{pad}}}\n")
            else:
                out.append(f"{pad}{fd.name}: {_scalar_text(fd, v)}\n")
    return "".join(out)


def _scalar_text(fd, v) -> str:
    if fd.cpp_type == FieldDescriptor.CPPTYPE_ENUM:
        ev = fd.enum_type.values_by_number.get(v)
        return ev.name if ev is not None else str(v)
    if fd.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        raw = v.encode("utf-8") if isinstance(v, str) else v
        return '"' + text_encoding.CEscape(raw, False) + '"'
    if fd.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
        return "true" if v else "false"
    return str(v)


class NetProto:
    """A ``caffe_pb2.NetParameter`` whose ``str()`` is the text pycaffe prints.

    Attribute access goes to the message (``proto.layer[6].top``, ``SerializeToString()``);
    ``.message`` is the plain protobuf message, for APIs that need the real type
    (``other.MergeFrom(proto.message)``).  Generated protobuf classes cannot be
    subclassed, hence the wrapper.
    """

    __slots__ = ("message",)

    def __init__(self, message=None):
        object.__setattr__(self, "message", message if message is not None else caffe_pb2.NetParameter())

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "message"), name)

    def __setattr__(self, name, value):
        setattr(self.message, name, value)

    def __dir__(self):
        return sorted(set(dir(self.message)) | {"message"})

    def __eq__(self, other):
        return self.message == (other.message if isinstance(other, NetProto) else other)

    __hash__ = None

    def __reduce__(self):              # pickle rebuilds the wrapper around the message
        return NetProto, (self.message,)

    def __copy__(self):                # (else copy would find the message's own, via __getattr__)
        message = caffe_pb2.NetParameter()
        message.CopyFrom(self.message)
        return NetProto(message)

    def __deepcopy__(self, memo):
        return self.__copy__()

    def __str__(self):
        return pycaffe_text(self.message)

    def __repr__(self):
        return f"<NetProto of {len(self.message.layer)} layers>"


# -- which parameter message a keyword belongs to ---------------------------------------
def _pycaffe_param_names() -> dict[str, str]:
    """Type name -> ``*_param`` field, derived from the message names as pycaffe does
    (``ConvolutionParameter`` <- ``convolution_param`` gives ``Convolution``)."""
    names = {}
    for fd in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if fd.name.endswith("_param") and fd.message_type is not None:
            names[fd.message_type.name[:-len("Parameter")]] = fd.name[:-len("_param")]
    return names


_PARAM_NAMES = _pycaffe_param_names()


def _param_messages(type_name: str) -> list[str]:
    """The ``*_param`` fields a keyword of ``type_name`` may belong to, in order.

    pycaffe's name rule first; then, for types it cannot map (``Deconvolution`` ->
    ``convolution_param``, ``SoftmaxWithLoss`` -> ``softmax_param``, ``loss_param``),
    the field netspec's layer class reads.  Where pycaffe's rule maps, nothing changes.
    """
    found = []
    if type_name in _PARAM_NAMES:
        found.append(_PARAM_NAMES[type_name] + "_param")
    impl = REGISTRY.get(type_name)
    if impl is not None:
        if impl.param and impl.param not in found:
            found.append(impl.param)
        if impl.is_loss and "loss_param" not in found:
            found.append("loss_param")
    return found


def _has_field(message, name: str) -> bool:
    return name in message.DESCRIPTOR.fields_by_name


def assign_proto(proto, name: str, val) -> None:
    """Assign a Python value to field ``name`` of ``proto``, recursively: lists fill
    repeated fields (dicts in them add messages), dicts fill messages, a scalar
    given to a repeated field is a one-element list."""
    fd = proto.DESCRIPTOR.fields_by_name.get(name)
    if fd is None:
        raise _unknown_field(proto, name)
    is_message = fd.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE
    if fd.is_repeated and not isinstance(val, (list, tuple)):
        val = [val]
    try:
        if fd.is_repeated and is_message:
            for item in val:
                _assign_dict(getattr(proto, name).add(), name, item)
        elif fd.is_repeated:
            getattr(proto, name).extend(val)
        elif is_message:
            _assign_dict(getattr(proto, name), name, val)
        else:
            setattr(proto, name, val)
    except (TypeError, ValueError) as e:
        raise NetspecError([Diagnostic("E0201", f"bad value {val!r} for {proto.DESCRIPTOR.name}.{name}: {e}")]) \
            from None


def _assign_dict(message, name: str, item) -> None:
    if not isinstance(item, dict):
        raise NetspecError([Diagnostic(
            "E0205", f"{message.DESCRIPTOR.name} field '{name}' is a message: give it as a dict",
            help=[f"e.g. {name}=dict(...)"])])
    for k, v in item.items():
        assign_proto(message, k, v)


def _unknown_field(proto, name: str) -> NetspecError:
    fields = list(proto.DESCRIPTOR.fields_by_name)
    guesses = did_you_mean(name, fields)
    help_ = [f"did you mean {' or '.join(repr(g) for g in guesses)}?"] if guesses else []
    return NetspecError([Diagnostic("E0200", f"unknown field '{name}' in {proto.DESCRIPTOR.name}", help=help_)])


# -- Top, Function, NetSpec --------------------------------------------------------------
class Top:
    """One output blob of a layer (``n``-th top of Function ``fn``)."""

    def __init__(self, fn: "Function", n: int):
        self.fn = fn
        self.n = n

    def to_proto(self) -> NetProto:
        """The net of every layer needed to compute this top, names generated."""
        return to_proto(self)

    def _to_proto(self, layers, names, autonames) -> None:
        self.fn._to_proto(layers, names, autonames)


class Function:
    """One layer: its type, its input Tops and its fields (keyword arguments)."""

    def __init__(self, type_name: str, inputs, params: dict):
        self.type_name = type_name
        for index, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                raise TypeError(f"{type_name} input {index} is not a Top (type is {type(inp)})")
        self.inputs = tuple(inputs)
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))
        self._fill(caffe_pb2.LayerParameter())       # bad fields fail here, at the call

    def _get_name(self, names, autonames) -> str:
        if self not in names:
            if self.ntop > 0:
                names[self] = self._get_top_name(self.tops[0], names, autonames)
            else:
                autonames[self.type_name] += 1
                names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    @staticmethod
    def _get_top_name(top: Top, names, autonames) -> str:
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _fill(self, layer) -> None:
        """Assign the keyword fields to ``layer`` (see the module docstring for where)."""
        targets = [getattr(layer, f) for f in _param_messages(self.type_name)]
        for k, v in self.params.items():
            if k.endswith("param"):
                assign_proto(layer, k, v)
                continue
            owner = next((m for m in targets if _has_field(m, k)), layer)
            if owner is layer and not _has_field(layer, k):
                raise _unknown_kwarg(self.type_name, k, targets)
            assign_proto(owner, k, v)

    def _to_proto(self, layers, names, autonames) -> None:
        if self in layers:
            return
        bottoms = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottoms.append(layers[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            layer.top.extend(self._get_top_name(t, names, autonames) for t in self.tops)
        layer.name = self._get_name(names, autonames)
        self._fill(layer)
        layers[self] = layer


def _unknown_kwarg(type_name: str, key: str, targets) -> NetspecError:
    where = [m.DESCRIPTOR.name for m in targets] + ["LayerParameter"]
    fields = [f for m in targets for f in m.DESCRIPTOR.fields_by_name]
    fields += list(caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name)
    guesses = did_you_mean(key, fields)
    help_ = [f"did you mean {' or '.join(repr(g) for g in guesses)}?"] if guesses else []
    return NetspecError([Diagnostic("E0200", f"{type_name} has no field '{key}' (looked in {', '.join(where)})",
                                    help=help_)])


def to_proto(*tops) -> NetProto:
    """The net of every layer needed to compute ``tops``, unnamed blobs named ``<Type><n>``."""
    layers: OrderedDict = OrderedDict()
    autonames: Counter = Counter()
    for top in tops:
        top._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return NetProto(net)


class NetSpec:
    """Named tops (``netspec.NetSpec`` adds ``to_net``): ``n.conv1 = L.Convolution(n.data, ...)`` names the top and its layer."""

    def __init__(self):
        object.__setattr__(self, "tops", OrderedDict())

    def __setattr__(self, name, value):
        if not isinstance(value, (Top, Function)):
            raise TypeError(f"NetSpec.{name} must be a Top (or a Function with ntop=0), "
                                f"not {type(value)}; unpack several tops: n.a, n.b = L.X(..., ntop=2)")
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.__dict__["tops"][name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top '{name}'") from None

    def __delattr__(self, name):
        del self.tops[name]

    __setitem__ = __setattr__
    __delitem__ = __delattr__

    def __getitem__(self, name):
        return self.tops[name]

    def __contains__(self, name):
        return name in self.tops

    def keys(self) -> list[str]:
        return list(self.tops)

    def to_proto(self) -> NetProto:
        """Every layer the named tops need, in the order they were named."""
        names = {v: k for k, v in self.tops.items()}
        autonames: Counter = Counter()
        layers: OrderedDict = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return NetProto(net)


class Layers:
    """``layers.<Type>(*bottoms, **fields)``: a Top, a tuple of ``ntop`` Tops, or the
    Function itself when ``ntop=0``."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)

        def layer_fn(*args, **kwargs):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            return fn.tops[0] if fn.ntop == 1 else fn.tops
        layer_fn.__name__ = name
        return layer_fn


class Parameters:
    """``params.<Type>.<ENUM_VALUE>``: e.g. ``params.Pooling.MAX`` is ``PoolingParameter.MAX``."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _EnumScope(name)


class _EnumScope:
    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, value):
        cls = getattr(caffe_pb2, self._name + "Parameter", None)
        if cls is None:
            raise AttributeError(f"caffe_pb2 has no message {self._name}Parameter")
        return getattr(cls, value)


layers = Layers()
params = Parameters()
