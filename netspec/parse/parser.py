"""Parse protobuf text format (Caffe's prototxt) into a span-carrying syntax tree."""
from __future__ import annotations

import functools
import math
import re
import sys
import threading
from pathlib import Path

from lark import Lark, Token, Transformer
from lark.exceptions import (UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken,
                             VisitError)

from ..diagnostics import Diagnostic, NetspecError, Span, register_source
from ..syntax import Field, ListValue, Message, Scalar

_GRAMMAR = Path(__file__).with_name("prototxt.lark")

# What the user would call each terminal, for "expected ..." help lines.
_TOKEN_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string",
    "SIGNED_NAME": "a signed name such as -inf", "COLON": "':'", "LBRACE": "'{'",
    "RBRACE": "'}'", "LESSTHAN": "'<'", "MORETHAN": "'>'", "LSQB": "'['", "RSQB": "']'",
    "COMMA": "','", "SEMICOLON": "';'", "$END": "end of file",
}


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    # the transformer runs inside the LALR parser (no intermediate parse tree); it is
    # re-pointed at each file before parsing, under a lock
    return Lark(_GRAMMAR.read_text(), parser="lalr", keep_all_tokens=True,
                maybe_placeholders=False, transformer=_BUILDER)


_LOCK = threading.Lock()


class _ParseFailure(Exception):
    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic


def parse_text(text: str, path: str = "<string>") -> Message:
    """Parse prototxt ``text``; raise NetspecError with a located diagnostic on failure."""
    register_source(path, text)
    try:
        with _LOCK:
            _BUILDER.reset(path, text)
            return _lark().parse(text)
    except UnexpectedInput as exc:
        raise NetspecError([_syntax_diagnostic(exc, text, path)]) from None
    except _ParseFailure as exc:
        raise NetspecError([exc.diagnostic]) from None
    except VisitError as exc:
        if isinstance(exc.orig_exc, _ParseFailure):
            raise NetspecError([exc.orig_exc.diagnostic]) from None
        raise


def parse_fragment(text: str, path: str, line: int, col: int) -> Message:
    """Parse ``text``, a piece of the file ``path`` that starts at ``line``:``col`` and parsed
    before, with spans in the whole file's lines and columns (for ``netspec.check.spans``)."""
    try:
        with _LOCK:
            _BUILDER.reset(path, text, line - 1, col - 1)
            return _lark().parse(text)
    except (UnexpectedInput, _ParseFailure, VisitError) as exc:
        raise ValueError(f"{path}:{line}:{col} does not start a complete field") from exc


def read_source(path: str | Path) -> str:
    """A prototxt file's text; E0104 when it cannot be read as UTF-8."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NetspecError([Diagnostic("E0104", f"cannot read '{path}': {_reason(exc)}",
                                       help=["check the path and that the file is UTF-8 text"])]) from None


def parse_file(path: str | Path) -> Message:
    """Read and parse a prototxt file."""
    return parse_text(read_source(path), str(path))


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def _point(path: str, line: int, col: int, width: int = 1) -> Span:
    return Span(path, line, col, line, col + width)


def _syntax_diagnostic(exc: UnexpectedInput, text: str, path: str) -> Diagnostic:
    line, col = getattr(exc, "line", 1) or 1, getattr(exc, "column", 1) or 1
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        if ch in "\"'":
            return Diagnostic("E0101", "unterminated string", _point(path, line, col),
                              help=[f"close the string with {ch} on the same line"])
        return Diagnostic("E0100", f"unexpected character {ch!r}", _point(path, line, col),
                          help=["prototxt holds `name: value` and `name { ... }` entries"])
    if isinstance(exc, UnexpectedEOF) or (isinstance(exc, UnexpectedToken) and exc.token.type == "$END"):
        end = text.rstrip()
        last = end.count("\n") + 1
        lcol = len(end.rsplit("\n", 1)[-1]) + 1
        return Diagnostic("E0100", "unexpected end of file", _point(path, last, max(1, lcol - 1)),
                          help=[_eof_help(set(getattr(exc, "expected", ())), text)])
    assert isinstance(exc, UnexpectedToken)
    tok = exc.token
    expected = sorted({_TOKEN_WORDS.get(t, repr(t)) for t in exc.expected})
    shown = tok.value if len(tok.value) < 40 else tok.value[:37] + "..."
    word = _TOKEN_WORDS.get(tok.type, tok.type)
    noun = re.sub(r"^an? ", "", word)         # "unexpected name 'x'", not "unexpected a name"
    what = word if word.startswith("'") else f"{noun} '{shown}'"
    return Diagnostic("E0100", f"unexpected {what}",
                      _point(path, line, col, len(tok.value.split("\n")[0]) or 1),
                      help=["expected " + ", ".join(expected)] if expected else [])


_CLOSERS = {"LBRACE": ("RBRACE", "{", "}"), "LESSTHAN": ("MORETHAN", "<", ">"), "LSQB": ("RSQB", "[", "]")}


def _eof_help(expected: set[str], text: str) -> str:
    """What the file lacks at its end: a field's value, the rest of a field, or the closing
    bracket of the innermost '{', '<' or '[' still open (named by line and column)."""
    if expected & {"NUMBER", "STRING", "SIGNED_NAME"}:
        return "the last field has no value: write `name: value`"
    if "COLON" in expected:
        return "a field name needs `: value` or `{ ... }` after it"
    opener = _innermost_open(text)
    if opener is None:
        return "a message opened with '{' or '<' is not closed"
    tok, field = opener
    _, open_ch, close_ch = _CLOSERS[tok.type]
    sep = ": " if tok.type == "LSQB" else " "           # a list is only ever a field's value
    what = f"'{field}{sep}{open_ch}'" if field else f"'{open_ch}'"
    return f"{what} at line {tok.line}, column {tok.column} is never closed: add '{close_ch}' after its last entry"


def _innermost_open(text: str):
    """(bracket token, the field name before it or None) of the innermost bracket still open
    at the end of ``text``; None if all close or the text does not lex."""
    stack, name = [], None
    try:
        for tok in _lark().lex(text):
            if tok.type in _CLOSERS:
                stack.append((tok, name))
            elif stack and tok.type == _CLOSERS[stack[-1][0].type][0]:
                stack.pop()
            if tok.type != "COLON":
                name = str(tok) if tok.type == "NAME" else None
    except UnexpectedInput:
        return None
    return stack[-1] if stack else None


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "'": "'", "\\": "\\", "?": "?",
            "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
_ESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|.)")


def unescape(body: str, span_of_offset) -> str:
    """Decode the text format's C-style escapes; ``span_of_offset`` locates errors."""
    def repl(m: re.Match) -> str:
        e = m.group(1)
        if e in _ESCAPES:
            return _ESCAPES[e]
        if e[0] in "xuU" and len(e) > 1 and int(e[1:], 16) <= 0x10FFFF:   # a bare \x is no escape
            return chr(int(e[1:], 16))
        if e[0] in "01234567":
            return chr(int(e, 8))
        raise _ParseFailure(Diagnostic(
            "E0102", f"invalid escape sequence '\\{e}'", span_of_offset(m.start(), 2),
            help=["valid escapes: \\n \\t \\r \\\\ \\\" \\' \\xHH \\ooo \\uXXXX"]))
    return _ESCAPE_RE.sub(repl, body)


def parse_number(text: str) -> int | float:
    """Text-format numbers: decimal, hex and octal ints; floats with an optional f."""
    t = text.lower()
    sign = -1 if t.startswith("-") else 1
    body = t.lstrip("+-")
    if body.startswith("0x"):
        return sign * int(body, 16)
    if re.fullmatch(r"0[0-7]+", body):
        return sign * int(body, 8)
    if re.fullmatch(r"[0-9]+", body):
        return sign * int(body)
    return sign * float(body.rstrip("f"))


_SPECIAL_FLOATS = {"inf": math.inf, "infinity": math.inf, "nan": math.nan}


class _ToAst(Transformer):
    """Builds the syntax tree while the LALR parser runs (``keep_all_tokens`` gives the
    punctuation tokens that delimit each span)."""

    def reset(self, path: str, text: str, dline: int = 0, dcol: int = 0) -> None:
        """Parse ``text`` of ``path`` next; a fragment starting at line 1 + ``dline``,
        column 1 + ``dcol`` of the file gets its spans shifted there."""
        self.path = path
        self.text = text
        self.dline, self.dcol = dline, dcol

    def _tspan(self, tok: Token) -> Span:
        if self.dline or self.dcol:
            dl, dc = self.dline, self.dcol
            return Span(self.path, tok.line + dl, tok.column + (dc if tok.line == 1 else 0),
                        tok.end_line + dl, tok.end_column + (dc if tok.end_line == 1 else 0))
        return Span(self.path, tok.line, tok.column, tok.end_line, tok.end_column)

    def _between(self, first, last) -> Span:
        a = first if isinstance(first, Token) else first.span
        b = last if isinstance(last, Token) else last.span
        if isinstance(a, Token):
            a = self._tspan(a)
        if isinstance(b, Token):
            b = self._tspan(b)
        return Span(self.path, a.line, a.col, b.end_line, b.end_col)

    @staticmethod
    def _nodes(children):
        return [c for c in children if not isinstance(c, Token)]

    def start(self, children):
        lines = self.text.count("\n") + 1
        return Message(self._nodes(children), Span(self.path, 1, 1, lines, 1))

    def message(self, children):
        return Message(self._nodes(children), self._between(children[0], children[-1]))

    def list(self, children):
        return ListValue(self._nodes(children), self._between(children[0], children[-1]))

    def _field(self, children):
        name, value = children[0], children[-1]
        # interned: the name also keys every source-map path, once per field of every layer
        return Field(sys.intern(str(name)), value, self._tspan(name))

    scalar_field = list_field = message_field = _field

    def scalar(self, children):
        return children[0]

    def number(self, children):
        tok = children[0]
        try:
            value = parse_number(tok.value)
        except ValueError:
            raise _ParseFailure(Diagnostic("E0103", f"invalid number '{tok.value}'",
                                           self._tspan(tok))) from None
        return Scalar("number", value, tok.value, self._tspan(tok))

    def ident(self, children):
        tok = children[0]
        return Scalar("ident", tok.value, tok.value, self._tspan(tok))

    def signed_ident(self, children):
        tok = children[0]
        name = tok.value[1:].lower()
        if name not in _SPECIAL_FLOATS:
            raise _ParseFailure(Diagnostic(
                "E0103", f"'{tok.value}' is not a number", self._tspan(tok),
                help=["only inf, infinity and nan may carry a sign"]))
        sign = -1.0 if tok.value[0] == "-" else 1.0
        return Scalar("number", sign * _SPECIAL_FLOATS[name], tok.value, self._tspan(tok))

    def string(self, toks):
        parts = []
        for tok in toks:
            body = tok.value[1:-1]
            if "\\" not in body:
                parts.append(body)
                continue
            def span_of(off, width, tok=tok):
                return Span(self.path, tok.line, tok.column + 1 + off, tok.line,
                            tok.column + 1 + off + width)
            parts.append(unescape(body, span_of))
        text = " ".join(t.value for t in toks)
        return Scalar("string", "".join(parts), text, self._between(toks[0], toks[-1]))


_BUILDER = _ToAst()
