"""The prototxt grammar: Caffe's text format in full, with spans on every node."""
import math

import pytest

from netspec.diagnostics import NetspecError
from netspec.parse import parse_text
from netspec.syntax import ListValue, Message, Scalar


def fields(text):
    return {f.name: f.value for f in parse_text(text, "t.prototxt").fields}


def test_scalars_of_every_kind():
    v = fields('a: 12 b: -3 c: 0x1F d: 017 e: 1.5e-3 f: 2.f g: .5 h: inf i: -inf j: nan k: FOO l: true')
    assert [v[k].value for k in "abcdefg"] == [12, -3, 31, 15, 1.5e-3, 2.0, 0.5]
    assert v["h"].kind == "ident" and v["h"].value == "inf"
    assert v["i"].value == -math.inf
    assert v["k"].kind == "ident" and v["l"].value == "true"


def test_strings_quotes_escapes_and_concatenation():
    v = fields('''a: "x\\ty\\"z" b: 'it\\'s' c: "ab" 'cd' "ef" d: "\\x41\\101\\u00e9\\n"''')
    assert v["a"].value == 'x\ty"z'
    assert v["b"].value == "it's"
    assert v["c"].value == "abcdef"
    assert v["d"].value == "AAé\n"


def test_nested_message_forms_and_separators():
    tree = parse_text('m { a: 1, b: 2; } n: { a: 3 } o < a: 4 > p: [1, 2, 3] q: [{a: 1}, {a: 2}]', "t")
    m, n, o, p, q = (f.value for f in tree.fields)
    assert isinstance(m, Message) and isinstance(n, Message) and isinstance(o, Message)
    assert [f.value.value for f in m.fields] == [1, 2]
    assert isinstance(p, ListValue) and [s.value for s in p.items] == [1, 2, 3]
    assert all(isinstance(i, Message) for i in q.items)


def test_comments_are_ignored_everywhere():
    v = fields('# head\na: 1 # trailing "not a string\nb: "x#y" # another\n')
    assert v["a"].value == 1 and v["b"].value == "x#y"


def test_every_node_carries_its_span():
    tree = parse_text('layer {\n  name: "conv1"\n  convolution_param { kernel_size: 3 }\n}\n', "f.prototxt")
    layer = tree.fields[0]
    name = layer.value.fields[0]
    assert (layer.name_span.line, layer.name_span.col) == (1, 1)
    assert (name.name_span.line, name.name_span.col) == (2, 3)
    assert (name.value.span.line, name.value.span.col, name.value.span.end_col) == (2, 9, 16)
    k = layer.value.fields[1].value.fields[0]
    assert isinstance(k.value, Scalar) and (k.value.span.line, k.value.span.col) == (3, 36)
    assert str(k.value.span) == "f.prototxt:3:36"


@pytest.mark.parametrize("text, code, line, col", [
    ('layer { name: "x" ', "E0100", 1, 17),
    ('a: "abc\n', "E0101", 1, 4),
    ('a: "\\q"', "E0102", 1, 5),
    ('a: -foo', "E0103", 1, 4),
    ('a: 1 }', "E0100", 1, 6),
    ('a { b: 1 >', "E0100", 1, 10),
    ('a: @', "E0100", 1, 4),
])
def test_syntax_errors_are_located(text, code, line, col):
    with pytest.raises(NetspecError) as e:
        parse_text(text, "bad.prototxt")
    d = e.value.diagnostics[0]
    assert (d.code, d.span.line, d.span.col) == (code, line, col)
    assert d.render().startswith(f"bad.prototxt:{line}:{col}: error[{code}]")


@pytest.mark.parametrize("text, help", [
    ('name: "n"\nlayer {\n  name: "x"\n  top: "x"\n', "'layer {' at line 2, column 7 is never closed: add '}'"),
    ('layer { p { shape { dim: 1 } }\nlayer {\n', "'layer {' at line 2, column 7 is never closed"),
    ('layer { p { shape { dim: 1 }\n', "'p {' at line 1, column 11 is never closed"),
    ('a <\n b: 1', "'a <' at line 1, column 3 is never closed: add '>'"),
    ('a: [1, 2', "'a: [' at line 1, column 4 is never closed: add ']'"),
    ('base_lr: 0.1\nmomentum:\n', "the last field has no value: write `name: value`"),
    ('base_lr', "a field name needs `: value` or `{ ... }` after it"),
])
def test_an_early_end_of_file_says_what_is_missing(text, help):
    """At an early end of file the help names what the file lacks: the innermost bracket still
    open (with its field, line and column), a field's value, or the rest of a field."""
    with pytest.raises(NetspecError) as e:
        parse_text(text, "bad.prototxt")
    d = e.value.diagnostics[0]
    assert (d.code, d.message) == ("E0100", "unexpected end of file")
    assert len(d.help) == 1 and d.help[0].startswith(help), d.help


def test_grammar_is_lalr_and_kept_in_a_lark_file():
    from netspec.parse import parser
    assert parser._GRAMMAR.suffix == ".lark"
    assert parser._lark().options.parser == "lalr"
