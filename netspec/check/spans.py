"""The source map of a loaded file, made when a diagnostic first asks for a span.

A file that checks clean never needs its source map, and for a 200,000-layer file the map
(millions of field paths) would be a third of the front end's memory (issue 15).  So
``load`` keeps only where each top-level field starts.  A span inside a ``layer { }``
(or any top-level repeated message) is found by parsing that one field's text again; any
other path parses the whole file again, once.  The spans are the ones the full map holds.
"""
from __future__ import annotations

import re
from array import array

from ..diagnostics import Diagnostics
from ..parse import parse_fragment, parse_text
from ..schema import SourceMap, to_message
from ..syntax import ListValue, Message

_LINE = 1 << 32         # a start position packs line * _LINE + column


class LazySpans:
    """``to_message(..., lazy=LazySpans(...))``: fills a lazy SourceMap on demand."""

    def __init__(self, text: str, path: str, cls, tree: Message):
        self.text, self.path, self.cls = text, path, cls
        self.names = [f.name for f in tree.fields]          # interned by the parser
        self.starts = array("Q", (f.name_span.line * _LINE + f.name_span.col for f in tree.fields))
        fields = cls.DESCRIPTOR.fields_by_name
        # one message per occurrence (no list form), so occurrence k is element k; the
        # loader turns this off when the schema check found errors (then some are not)
        self.per_field = not any(isinstance(f.value, ListValue) for f in tree.fields)
        self.repeated = {n for n in set(self.names) if n in fields and fields[n].message_type
                         and fields[n].is_repeated}
        self.done: set[tuple] = set()
        self._occurrences: dict[str, list[int]] | None = None
        self._line_starts: array | None = None

    def __call__(self, smap: SourceMap, path: tuple) -> bool:
        """Add what a lookup of ``path`` needs; True once the whole map is there."""
        if self.per_field and path[:1] and path[0] in self.repeated:
            if len(path) >= 2 and isinstance(path[1], int):
                self._one(smap, path[0], path[1])
            return False            # ("layer",) alone has no span of its own
        if self.per_field and not path:
            return False
        smap.merge(to_message(parse_text(self.text, self.path), self.cls, Diagnostics())[1])
        return True

    def _one(self, smap: SourceMap, name: str, k: int) -> None:
        if (name, k) in self.done:
            return
        self.done.add((name, k))
        if self._occurrences is None:
            self._occurrences = {}
            for i, n in enumerate(self.names):
                self._occurrences.setdefault(n, []).append(i)
        where = self._occurrences.get(name, [])
        if k >= len(where):
            return
        i = where[k]
        line, col = divmod(self.starts[i], _LINE)
        end = self._offset(*divmod(self.starts[i + 1], _LINE)) if i + 1 < len(self.starts) else len(self.text)
        (field,) = parse_fragment(self.text[self._offset(line, col):end], self.path, line, col).fields
        smap.add_name((name, k), field.name_span)
        smap.add_value((name, k), field.value.span)
        message = getattr(self.cls(), name).add()
        smap.merge(to_message(field.value, type(message), Diagnostics(), (name, k))[1])

    def _offset(self, line: int, col: int) -> int:
        """The character offset of ``line``:``col`` (1-based) in the text."""
        if self._line_starts is None:
            self._line_starts = array("q", [0] + [m.end() for m in re.finditer("\n", self.text)])
        return self._line_starts[line - 1] + col - 1

