"""Compiler-quality diagnostics: spans, codes, caret rendering and JSON.

Every user-facing problem becomes a :class:`Diagnostic` that points at the
user's text.  Passes collect diagnostics in a :class:`Diagnostics` bag and only
fail (with :class:`NetspecError`) once everything that can be reported has been.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Iterable, Iterator

# Error codes, grouped by pipeline stage.  The table doubles as documentation
# (``netspec check --explain`` style) and keeps codes from being reused.
CODES = {
    # syntax
    "E0100": "syntax error",
    "E0101": "unterminated string",
    "E0102": "invalid escape sequence",
    "E0103": "invalid number",
    "E0104": "file cannot be read",
    # schema
    "E0200": "unknown field",
    "E0201": "wrong value type",
    "E0202": "singular field given more than once",
    "E0203": "unknown enum value",
    "E0204": "value out of range",
    "E0205": "field is a message, not a scalar (or the reverse)",
    # graph
    "E0300": "unknown bottom blob",
    "E0301": "top produced by more than one layer",
    "E0302": "cycle in the network",
    "E0304": "unknown layer type",
    "E0305": "wrong number of bottoms or tops",
    "E0306": "inconsistent parameter sharing",
    "E0307": "loss_weight / propagate_down count mismatch",
    "E0308": "bad input declaration",
    # scopes
    "E0400": "stop_at blob is not an ancestor of its loss",
    "E0401": "gradient scope holds no learnable parameter",
    "E0402": "gradient_scope on a layer that is not a loss",
    "E0403": "gradient_scope names a mode that never applies scopes",
    # shapes and layer parameters
    "E0500": "impossible shape",
    "E0501": "invalid layer parameter",
    # solver
    "E0600": "invalid solver setting",
    "E0601": "solver names a missing net",
    # weights and runtime
    "E0700": "invalid weight file",
    "E0701": "runtime error in a layer",
    "E0702": "non-finite loss or gradient in training",
    "E0703": "out of memory",
    # tools
    "E0800": "wrong kind of file or unsupported output format",
    "E0801": "CUDA requested but not available",
    "E0802": "command-line usage error",
    "E0803": "file cannot be written",
    "E0804": "exits cannot be added as asked (netspec add-exits)",
    # distributed training
    "E0900": "a rank of a distributed job failed or timed out",
    # warnings
    "W0300": "layer reaches no loss",
    "W0301": "gradient_scope that the solver's bp_mode ignores",
    "W0303": "duplicate layer name",
    "W0500": "shape unknown",
    "W0501": "deprecated or dialect field",
    "W0800": "auxiliary exits closer than MW-BP advises (tau < 5)",
    "W0601": "solver names a net file that is absent (check only)",
    "W0700": "one batch needs more memory than the device has",
}


@dataclass(frozen=True, slots=True)      # slots: a 200k-layer file holds millions of spans
class Span:
    """A region of a source file; lines and columns are 1-based."""

    path: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


_SOURCES: dict[str, str] = {}


def register_source(path: str, text: str) -> None:
    """Remember a file's text so diagnostics can quote it later."""
    _SOURCES[path] = text


def source_line(path: str, line: int) -> str | None:
    text = _SOURCES.get(path)
    if text is None:
        return None
    lines = text.splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else None


@dataclass
class Diagnostic:
    """One problem, with where it is and what would be valid."""

    code: str
    message: str
    span: Span | None = None
    severity: str = "error"
    help: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def render(self) -> str:
        where = f"{self.span}: " if self.span else ""
        out = [f"{where}{self.severity}[{self.code}]: {self.message}"]
        out += _caret_block(self.span)
        out += [f"  help: {h}" for h in self.help]
        out += [f"  note: {n}" for n in self.notes]
        return "\n".join(out)

    def to_json(self) -> dict:
        span = None
        if self.span:
            s = self.span
            span = {"path": s.path, "line": s.line, "col": s.col,
                    "end_line": s.end_line, "end_col": s.end_col}
        return {"severity": self.severity, "code": self.code, "message": self.message,
                "span": span, "help": list(self.help), "notes": list(self.notes)}


def _caret_block(span: Span | None) -> list[str]:
    if span is None:
        return []
    text = source_line(span.path, span.line)
    if text is None:
        return []
    text = text.replace("\t", " ")
    width = (span.end_col - span.col) if span.end_line == span.line else len(text) - span.col + 1
    width = max(1, min(width, max(1, len(text) - span.col + 1)))
    gutter = " " * len(str(span.line))
    return [f"{gutter} |", f"{span.line} | {text}",
            f"{gutter} | {' ' * (span.col - 1)}{'^' * width}"]


class NetspecError(Exception):
    """Raised with every diagnostic collected so far; never shown as a traceback."""

    def __init__(self, diagnostics: Iterable[Diagnostic]):
        self.diagnostics = list(diagnostics)
        super().__init__(self.render())

    def render(self) -> str:
        return render_all(self.diagnostics)


def _where(d: Diagnostic) -> tuple:
    s = d.span
    return (0, s.path, s.line, s.col) if s else (1, "", 0, 0)


def render_all(diags: Iterable[Diagnostic]) -> str:
    """Every diagnostic in source order, then the error/warning counts."""
    diags = sorted(diags, key=_where)
    body = "\n\n".join(d.render() for d in diags)
    n_err = sum(d.is_error for d in diags)
    n_warn = len(diags) - n_err
    if n_err:
        tail = f"{n_err} error{'s' * (n_err != 1)}"
        if n_warn:
            tail += f", {n_warn} warning{'s' * (n_warn != 1)}"
        body += f"\n\n{tail} found"
    return body


def to_json(diags: Iterable[Diagnostic]) -> str:
    return json.dumps([d.to_json() for d in diags], indent=2)


class Diagnostics:
    """A bag that passes add to; ``check()`` raises if any error was added."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def __iter__(self) -> Iterator[Diagnostic]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def error(self, code: str, message: str, span: Span | None = None, *,
              help: Iterable[str] = (), notes: Iterable[str] = ()) -> Diagnostic:
        return self._add(Diagnostic(code, message, span, "error", list(help), list(notes)))

    def warning(self, code: str, message: str, span: Span | None = None, *,
                help: Iterable[str] = (), notes: Iterable[str] = ()) -> Diagnostic:
        return self._add(Diagnostic(code, message, span, "warning", list(help), list(notes)))

    def _add(self, d: Diagnostic) -> Diagnostic:
        assert d.code in CODES, d.code
        self.items.append(d)
        return d

    def extend(self, other: Iterable[Diagnostic]) -> None:
        self.items.extend(other)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.is_error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if not d.is_error]

    def check(self) -> None:
        """Raise NetspecError carrying every diagnostic if any is an error."""
        if self.errors:
            raise NetspecError(self.items)


def did_you_mean(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Close matches for a misspelt name, as help lines."""
    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    if not close:
        return []
    return ["did you mean " + " or ".join(f"'{c}'" for c in close) + "?"]
