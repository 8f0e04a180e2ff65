"""The syntax tree of a prototxt file: messages, fields and scalars, each with its span.

Spans are attached once, by the parser, and carried through every later stage
so that diagnostics can always point at the user's text.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .diagnostics import Span


@dataclass
class Scalar:
    """A literal: ``kind`` is 'string', 'number' or 'ident' (enum names, true, inf)."""

    kind: str
    value: Union[str, int, float]
    text: str
    span: Span


@dataclass
class Message:
    """A brace (or angle) delimited list of fields; the file itself is one too."""

    fields: list["Field"]
    span: Span

    def get(self, name: str) -> list["Field"]:
        return [f for f in self.fields if f.name == name]


@dataclass
class ListValue:
    """``field: [a, b, c]``: the text format's short form of a repeated field."""

    items: list[Union[Scalar, Message]]
    span: Span


@dataclass
class Field:
    name: str
    value: Union[Scalar, Message, ListValue]
    name_span: Span
    span: Span = field(repr=False)

    def values(self) -> list[Union[Scalar, Message]]:
        """The field's values, with the list short form expanded."""
        if isinstance(self.value, ListValue):
            return list(self.value.items)
        return [self.value]
