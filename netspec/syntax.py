"""The syntax tree of a prototxt file: messages, fields and scalars, each with its span.

Spans are attached once, by the parser, and carried through every later stage
so that diagnostics can always point at the user's text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from .diagnostics import Span


@dataclass(slots=True)
class Scalar:
    """A literal: ``kind`` is 'string', 'number' or 'ident' (enum names, true, inf)."""

    kind: str
    value: Union[str, int, float]
    text: str
    span: Span


@dataclass(slots=True)
class Message:
    """A brace (or angle) delimited list of fields; the file itself is one too."""

    fields: list["Field"]
    span: Span

    def get(self, name: str) -> list["Field"]:
        return [f for f in self.fields if f.name == name]


@dataclass(slots=True)
class ListValue:
    """``field: [a, b, c]``: the text format's short form of a repeated field."""

    items: list[Union[Scalar, Message]]
    span: Span


@dataclass(slots=True)
class Field:
    name: str
    value: Union[Scalar, Message, ListValue]
    name_span: Span

    @property
    def span(self) -> Span:
        """From the field's name to the end of its value (computed: one Span less per field)."""
        a, b = self.name_span, self.value.span
        return Span(a.path, a.line, a.col, b.end_line, b.end_col)

    def values(self) -> list[Union[Scalar, Message]]:
        """The field's values, with the list short form expanded."""
        if isinstance(self.value, ListValue):
            return list(self.value.items)
        return [self.value]
