"""Property tests: print -> parse round trips, and mutated inputs only ever give diagnostics."""
import math

from google.protobuf import text_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netspec.check import check_net, load
from netspec.diagnostics import Diagnostics, NetspecError
from netspec.lower import NetSource, NetState
from netspec.parse import parse_text
from netspec.proto import caffe_pb2
from netspec.schema import to_message

names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
ints = st.integers(min_value=0, max_value=2**31 - 1)
floats = st.floats(allow_nan=False, width=32)


@st.composite
def filler(draw):
    f = caffe_pb2.FillerParameter(type=draw(st.sampled_from(["constant", "gaussian", "xavier", "msra"])))
    if draw(st.booleans()):
        f.std = draw(floats)
    if draw(st.booleans()):
        f.variance_norm = draw(st.sampled_from([0, 1, 2]))
    return f


@st.composite
def layer(draw):
    lp = caffe_pb2.LayerParameter(name=draw(names), type=draw(st.sampled_from(
        ["Convolution", "Pooling", "ReLU", "InnerProduct", "SoftmaxWithLoss", "Eltwise"])))
    lp.bottom.extend(draw(st.lists(names, max_size=3)))
    lp.top.extend(draw(st.lists(names, max_size=2)))
    lp.loss_weight.extend(draw(st.lists(floats, max_size=2)))
    lp.propagate_down.extend(draw(st.lists(st.booleans(), max_size=2)))
    for _ in range(draw(st.integers(0, 2))):
        spec = lp.param.add(lr_mult=draw(floats))
        if draw(st.booleans()):
            spec.name = draw(names)
    if draw(st.booleans()):
        cp = lp.convolution_param
        cp.num_output = draw(ints)
        cp.kernel_size.extend(draw(st.lists(st.integers(0, 2**32 - 1), max_size=3)))
        cp.bias_term = draw(st.booleans())
        if draw(st.booleans()):
            cp.weight_filler.CopyFrom(draw(filler()))
    if draw(st.booleans()):
        lp.pooling_param.pool = draw(st.sampled_from([0, 1, 2]))
        lp.pooling_param.global_pooling = draw(st.booleans())
    if draw(st.booleans()):
        rule = lp.include.add(phase=draw(st.sampled_from([0, 1])))
        rule.stage.extend(draw(st.lists(names, max_size=2)))
    if draw(st.booleans()):
        lp.gradient_scope.stop_at.extend(draw(st.lists(names, max_size=2)))
        lp.gradient_scope.max_depth = draw(st.integers(0, 50))
    return lp


@st.composite
def net(draw):
    n = caffe_pb2.NetParameter(name=draw(names), force_backward=draw(st.booleans()))
    n.input_dim.extend(draw(st.lists(st.integers(-2**31, 2**31 - 1), max_size=4)))
    n.layer.extend(draw(st.lists(layer(), max_size=4)))
    return n


def _same(a, b) -> bool:
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(net(), st.booleans(), st.booleans(), st.booleans())
def test_print_then_parse_gives_the_same_message(msg, one_line, short_repeated, pointy):
    text = text_format.MessageToString(msg, as_one_line=one_line, pointy_brackets=pointy,
                                       use_short_repeated_primitives=short_repeated, as_utf8=True)
    diags = Diagnostics()
    parsed, _ = to_message(parse_text(text, "<print>"), caffe_pb2.NetParameter, diags)
    assert not diags.errors, [d.render() for d in diags]
    assert _same(parsed, msg), text


@settings(max_examples=60, deadline=None)
@given(st.floats(width=32), st.booleans())
def test_special_floats_round_trip(value, one_line):
    msg = caffe_pb2.FillerParameter(std=value)
    text = text_format.MessageToString(msg, as_one_line=one_line)
    diags = Diagnostics()
    parsed, _ = to_message(parse_text(text, "<f>"), caffe_pb2.FillerParameter, diags)
    assert not diags.errors
    assert (math.isnan(parsed.std) and math.isnan(value)) or parsed.std == value


BASE = """name: "m"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip" inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"
  gradient_scope { stop_at: "conv1" } }
"""

_pieces = st.sampled_from(['{', '}', '<', '>', ':', '"', "'", '\\', '#', ',', ';', '[', ']', '-',
                           'inf', 'nan', '0x', '1e999', 'layer', 'bottom: "x"', 'top: "conv1"',
                           'type: "Pooling"', '\n', ' ', '99999999999999999999', 'é', '\x00'])


@st.composite
def mutated(draw):
    text = BASE
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 12)))
        text = text[:i] + draw(st.one_of(st.just(""), _pieces)) + text[j:]
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_input_only_raises_diagnostics(text):
    try:
        diags = Diagnostics()
        msg, smap = to_message(parse_text(text, "<mutant>"), caffe_pb2.NetParameter, diags)
        diags.check()
        check_net(NetSource(msg, smap, (), "<mutant>"), NetState())
    except NetspecError as e:
        assert e.diagnostics and all(d.code for d in e.diagnostics)
        for d in e.diagnostics:
            d.render()


def test_load_detects_solver_files(tmp_path):
    p = tmp_path / "s.prototxt"
    p.write_text('net: "n.prototxt"\nbase_lr: 0.1\n')
    assert load(p)[0] == "solver"
