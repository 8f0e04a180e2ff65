"""Stage 2: check a syntax tree against the protobuf descriptors and build real messages.

Nothing here knows Caffe's fields by heart: every name, type, label and enum
comes from ``proto/caffe.proto`` through the generated descriptors.  The
result is a protobuf message plus a :class:`SourceMap` from field paths
(``("layer", 3, "convolution_param", "kernel_size", 0)``) back to the text.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from google.protobuf.descriptor import FieldDescriptor as FD

from .dialects import fork_param_note
from .diagnostics import Diagnostics, Span, did_you_mean
from .syntax import ListValue, Message, Scalar

Path = tuple

_INT_RANGES = {
    FD.TYPE_INT32: (-2**31, 2**31 - 1), FD.TYPE_SINT32: (-2**31, 2**31 - 1),
    FD.TYPE_SFIXED32: (-2**31, 2**31 - 1), FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1), FD.TYPE_INT64: (-2**63, 2**63 - 1),
    FD.TYPE_SINT64: (-2**63, 2**63 - 1), FD.TYPE_SFIXED64: (-2**63, 2**63 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1), FD.TYPE_FIXED64: (0, 2**64 - 1),
}
_TYPE_WORDS = {FD.TYPE_STRING: "a string", FD.TYPE_BYTES: "a string", FD.TYPE_BOOL: "true or false",
               FD.TYPE_FLOAT: "a number", FD.TYPE_DOUBLE: "a number", FD.TYPE_ENUM: "an enum name"}
_BOOLS = {"true": True, "false": False, "True": True, "False": False, "t": True, "f": False}


_BITS = 32                           # per line or column number in a packed span
_MASK = (1 << _BITS) - 1


def _pack(span: Span) -> int:
    return span.line | span.col << _BITS | span.end_line << 2 * _BITS | span.end_col << 3 * _BITS


def _unpack(path: str, packed: int) -> Span:
    return Span(path, packed & _MASK, packed >> _BITS & _MASK, packed >> 2 * _BITS & _MASK,
                packed >> 3 * _BITS & _MASK)


@dataclass
class SourceMap:
    """Where each field path came from in the text.

    A 200,000-layer file has millions of field paths, so each path keeps one int that
    packs its name's and its value's span (they are in ``root``'s file); a Span object is
    made only when a diagnostic asks.  Spans from elsewhere are kept as they are."""

    root: Span | None = None
    # path -> has_value | name span << 1 | value span << 129 (4 x 32 bits each)
    _packed: dict[Path, int] = field(default_factory=dict)
    _other: dict[Path, list] = field(default_factory=dict)     # [name span, value span]
    # a lazy map starts empty and calls this before each lookup with the path asked for; it
    # adds what that needs (a file that checks clean never asks, and its map would be a
    # third of its front end's memory) and returns True once the map is complete
    _lazy: Callable[["SourceMap", Path], bool] | None = None

    def _ensure(self, path: Path) -> None:
        if self._lazy is not None and self._lazy(self, path):
            self._lazy = None

    def merge(self, other: "SourceMap") -> None:
        """Add ``other``'s spans (for paths this map does not have yet)."""
        for key, packed in other._packed.items():
            if not self.has_own(key):
                self._packed[key] = packed
        for key, entry in other._other.items():
            if not self.has_own(key):
                self._other[key] = entry

    def has_own(self, path: Path) -> bool:
        """Whether ``path`` is recorded now (a lazy map is not asked to add it)."""
        return path in self._packed or path in self._other

    def _packable(self, span: Span | None) -> bool:
        return (span is not None and self.root is not None and span.path == self.root.path
                and max(span.line, span.col, span.end_line, span.end_col) <= _MASK)

    def add_name(self, path: Path, span: Span | None) -> None:
        """Record the span of the field name at ``path`` (the first one given is kept)."""
        if path in self._packed or path in self._other:
            return
        if self._packable(span):
            self._packed[path] = _pack(span) << 1
        else:
            self._other[path] = [span, None]

    def add_value(self, path: Path, span: Span | None) -> None:
        """Record the span of ``path``'s value (after its name's, ``add_name``)."""
        packed = self._packed.get(path)
        if packed is not None and self._packable(span):
            self._packed[path] = (packed & ((1 << 4 * _BITS + 1) - 1)) | 1 | _pack(span) << (4 * _BITS + 1)
            return
        entry = self._other.setdefault(path, [self._name(path), None])
        if packed is not None:
            del self._packed[path]
        entry[1] = span

    def _name(self, key: Path) -> Span | None:
        packed = self._packed.get(key)
        if packed is not None:
            return _unpack(self.root.path, packed >> 1 & ((1 << 4 * _BITS) - 1))
        other = self._other.get(key)
        return other[0] if other else None

    def _value(self, key: Path) -> Span | None:
        packed = self._packed.get(key)
        if packed is not None:
            return _unpack(self.root.path, packed >> (4 * _BITS + 1)) if packed & 1 else None
        other = self._other.get(key)
        return other[1] if other else None

    def span(self, path: Path) -> Span | None:
        """The span of ``path``'s value, or of the nearest enclosing path that has one."""
        self._ensure(path)
        for n in range(len(path), -1, -1):
            s = self._value(path[:n])
            if s is not None:
                return s
        return self.root

    def name_span(self, path: Path) -> Span | None:
        """The span of the field name at ``path`` (falls back to the value span)."""
        self._ensure(path)
        for key in (path, path[:-1]):
            if self.has_own(key):
                return self._name(key)
        return self.span(path)

    def has(self, path: Path) -> bool:
        self._ensure(path)
        return self.has_own(path)


def to_message(node: Message, msg_class, diags: Diagnostics, path: Path = (),
               lazy: Callable[[SourceMap, Path], bool] | None = None) -> tuple[object, SourceMap]:
    """Check ``node`` against ``msg_class``'s descriptor; fill and return a message.

    With ``lazy`` the map records nothing now: ``lazy(smap, path)`` adds spans when they
    are first asked for (``netspec.check.spans`` parses the text again for them)."""
    smap = SourceMap(root=node.span, _lazy=lazy)
    pb = msg_class()
    _Filler(diags, smap, record=lazy is None).fill(pb, node, path)
    return pb, smap


class _Filler:
    def __init__(self, diags: Diagnostics, smap: SourceMap, record: bool = True):
        self.diags = diags
        self.smap = smap
        self.record = record

    def fill(self, pb, node: Message, path: Path) -> None:
        desc = pb.DESCRIPTOR
        seen: dict[str, Span] = {}
        for f in node.fields:
            fd = desc.fields_by_name.get(f.name)
            if fd is None:
                self._unknown_field(desc, f, path)
                continue
            repeated = fd.is_repeated
            if not repeated:
                if f.name in seen:
                    self.diags.error("E0202", f"'{f.name}' is not a repeated field but is given twice",
                                     f.name_span, notes=[f"first given at {seen[f.name]}"],
                                     help=["remove one of them"])
                    continue
                if isinstance(f.value, ListValue):
                    self.diags.error("E0201", f"'{f.name}' takes one value, not a list", f.value.span)
                    continue
                seen[f.name] = f.name_span
            for v in f.values():
                self._one(pb, fd, f.name, v, path, f.name_span, repeated)

    def _one(self, pb, fd, name, v, path, name_span, repeated) -> None:
        sub_path = path + (name, len(getattr(pb, name))) if repeated else path + (name,)
        if self.record:
            self.smap.add_name(sub_path, name_span)
        is_msg = fd.type in (FD.TYPE_MESSAGE, FD.TYPE_GROUP)
        if is_msg != isinstance(v, Message):
            want = f"a message `{name} {{ ... }}`" if is_msg else _want(fd)
            self.diags.error("E0205", f"'{name}' expects {want}", v.span,
                             help=[f"write `{name} {{ ... }}`" if is_msg else f"write `{name}: <value>`"])
            return
        if self.record:
            self.smap.add_value(sub_path, v.span)
        if is_msg:
            target = getattr(pb, name).add() if repeated else getattr(pb, name)
            target.SetInParent()
            self.fill(target, v, sub_path)
            return
        value = self._convert(fd, name, v)
        if value is None:
            return
        if repeated:
            getattr(pb, name).append(value)
        else:
            setattr(pb, name, value)

    def _unknown_field(self, desc, f, path) -> None:
        names = list(desc.fields_by_name)
        help_ = did_you_mean(f.name, names)
        notes = []
        fork = fork_param_note(f.name) if desc.name == "LayerParameter" else None
        if fork:                         # a known fork's block: name it, no misleading suggestion
            notes, help_ = [fork], ["remove the layer, or replace it with BVLC layers"]
        elif f.name.endswith("_param") and desc.name == "LayerParameter":
            notes.append("this parameter block is not part of BVLC Caffe 1.0; it may come from a "
                         "fork (for example SSD's prior_box_param) that netspec does not support")
        if not help_:
            notes.append(f"{desc.name} has fields: " + _shortlist(names))
        self.diags.error("E0200", f"unknown field '{f.name}' in {desc.name}", f.name_span,
                         help=help_, notes=notes)

    def _convert(self, fd, name, v: Scalar):
        conv = _CONVERTERS.get(fd.type)
        result = conv(fd, v) if conv else _bad
        if result is _bad:
            self._wrong_type(fd, name, v)
            return None
        if isinstance(result, _OutOfRange):
            self.diags.error("E0204", f"{v.text} is out of range for '{name}' ({result.why})", v.span)
            return None
        return result

    def _wrong_type(self, fd, name, v: Scalar) -> None:
        if fd.type == FD.TYPE_ENUM and v.kind == "ident":
            valid = [e.name for e in fd.enum_type.values]
            self.diags.error("E0203", f"unknown value '{v.value}' for enum {fd.enum_type.name} in '{name}'",
                             v.span, help=did_you_mean(str(v.value), valid),
                             notes=["valid values: " + ", ".join(valid)])
            return
        found = {"string": "a string", "number": "a number", "ident": f"the name {v.value}"}[v.kind]
        help_ = []
        if fd.type == FD.TYPE_STRING and v.kind != "string":
            help_.append(f'quote it: {name}: "{v.text}"')
        elif fd.type == FD.TYPE_ENUM:
            help_.append("valid values: " + ", ".join(e.name for e in fd.enum_type.values))
        self.diags.error("E0201", f"'{name}' expects {_want(fd)}, found {found}", v.span, help=help_)


class _OutOfRange:
    def __init__(self, why: str):
        self.why = why


_bad = object()


def _want(fd) -> str:
    if fd.type in _INT_RANGES:
        lo = _INT_RANGES[fd.type][0]
        return "a non-negative integer" if lo == 0 else "an integer"
    if fd.type == FD.TYPE_ENUM:
        return f"one of {', '.join(e.name for e in fd.enum_type.values)}"
    return _TYPE_WORDS.get(fd.type, "a value")


def _conv_int(fd, v: Scalar):
    if v.kind != "number" or not isinstance(v.value, int):
        return _bad
    lo, hi = _INT_RANGES[fd.type]
    if not lo <= v.value <= hi:
        return _OutOfRange(f"must lie in [{lo}, {hi}]")
    return v.value


def _conv_float(fd, v: Scalar):
    if v.kind == "number":
        return float(v.value)
    if v.kind == "ident" and v.value.lower() in ("inf", "infinity", "nan"):
        return math.nan if v.value.lower() == "nan" else math.inf
    return _bad


def _conv_bool(fd, v: Scalar):
    if v.kind == "ident" and v.value in _BOOLS:
        return _BOOLS[v.value]
    if v.kind == "number" and v.value in (0, 1) and isinstance(v.value, int):
        return bool(v.value)
    return _bad


def _conv_enum(fd, v: Scalar):
    if v.kind == "ident":
        ev = fd.enum_type.values_by_name.get(v.value)
        return ev.number if ev is not None else _bad
    if v.kind == "number" and isinstance(v.value, int):
        return v.value if v.value in fd.enum_type.values_by_number else _bad
    return _bad


def _conv_string(fd, v: Scalar):
    return v.value if v.kind == "string" else _bad


def _conv_bytes(fd, v: Scalar):
    return v.value.encode("latin-1", "replace") if v.kind == "string" else _bad


_CONVERTERS = {t: _conv_int for t in _INT_RANGES}
_CONVERTERS.update({FD.TYPE_FLOAT: _conv_float, FD.TYPE_DOUBLE: _conv_float, FD.TYPE_BOOL: _conv_bool,
                    FD.TYPE_ENUM: _conv_enum, FD.TYPE_STRING: _conv_string, FD.TYPE_BYTES: _conv_bytes})


def _shortlist(names: list[str], limit: int = 12) -> str:
    names = sorted(names)
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f", ... ({more} more)" if more > 0 else "")
