"""LSTM, RNN, LSTMUnit, Im2col, BatchReindex and Filter beyond the single-forward oracle
cases: Caffe's hidden-state carry-over between forwards, expose_hidden, LSTMUnit's own
backward, Im2col against convolution, and the diagnostics for bad shapes."""
import pytest
import torch
import torch.nn.functional as F

from netspec.diagnostics import NetspecError
from netspec.layers import REGISTRY
from netspec.runtime import CaffeLSTMUnitFunction

from layer_util import compile_text

# BVLC Caffe 1.0's layer registry (REGISTER_LAYER_CLASS / REGISTER_LAYER_CREATOR), Python included
BVLC_TYPES = """AbsVal Accuracy ArgMax BNLL BatchNorm BatchReindex Bias Clip Concat ContrastiveLoss
Convolution Crop Data Deconvolution Dropout DummyData ELU Eltwise Embed EuclideanLoss Exp Filter
Flatten HDF5Data HDF5Output HingeLoss Im2col ImageData InfogainLoss InnerProduct Input LRN LSTM
LSTMUnit Log MVN MemoryData MultinomialLogisticLoss PReLU Parameter Pooling Power Python RNN ReLU
Reduction Reshape SPP Scale Sigmoid SigmoidCrossEntropyLoss Silence Slice Softmax SoftmaxWithLoss
Split Swish TanH Threshold Tile WindowData""".split()


def test_every_bvlc_layer_type_is_registered():
    missing = sorted(set(BVLC_TYPES) - set(REGISTRY))
    assert not missing, f"BVLC Caffe 1.0 layer types without a netspec class: {missing}"


def recurrent_net(kind, t, n, d, h, static=0, expose=False):
    shapes = f"shape {{ dim: {t} dim: {n} dim: {d} }} shape {{ dim: {t} dim: {n} }}"
    tops = 'top: "x" top: "cont"'
    bottoms = 'bottom: "x" bottom: "cont"'
    if static:
        shapes += f" shape {{ dim: {n} dim: {static} }}"
        tops += ' top: "xs"'
        bottoms += ' bottom: "xs"'
    states = ("h", "c") if kind == "LSTM" else ("h",)
    out_tops = 'top: "y"'
    if expose:
        for s in states:
            shapes += f" shape {{ dim: 1 dim: {n} dim: {h} }}"
            tops += f' top: "{s}0"'
            bottoms += f' bottom: "{s}0"'
            out_tops += f' top: "{s}T"'
    return f"""
layer {{ name: "in" type: "Input" {tops} input_param {{ {shapes} }} }}
layer {{ name: "rec" type: "{kind}" {bottoms} {out_tops}
  recurrent_param {{ num_output: {h} expose_hidden: {str(expose).lower()}
    weight_filler {{ type: "uniform" min: -0.5 max: 0.5 }}
    bias_filler {{ type: "uniform" min: -0.5 max: 0.5 }} }} }}
"""


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_hidden_state_carries_into_the_next_forward_as_in_caffe(kind):
    """Caffe copies h_T (and c_T) into h_0 before each forward: two halves of a sequence
    with cont = 1 at the seam give the whole sequence's output; cont = 0 resets."""
    torch.manual_seed(0)
    whole = compile_text(recurrent_net(kind, 6, 2, 3, 4)).module
    halves = compile_text(recurrent_net(kind, 3, 2, 3, 4)).module
    halves.load_state_dict(whole.state_dict())
    x, cont = torch.randn(6, 2, 3), torch.ones(6, 2)
    cont[0] = 0
    y = whole(x=x, cont=cont)["y"]
    first = halves(x=x[:3], cont=cont[:3])["y"]
    second = halves(x=x[3:], cont=cont[3:])["y"]
    torch.testing.assert_close(torch.cat([first, second]), y, rtol=1e-6, atol=1e-6)
    fresh = halves(x=x[3:], cont=torch.zeros(3, 2))["y"]     # cont 0 at t=0: state dropped
    restart = compile_text(recurrent_net(kind, 3, 2, 3, 4)).module
    restart.load_state_dict(whole.state_dict())
    torch.testing.assert_close(fresh, restart(x=x[3:], cont=torch.zeros(3, 2))["y"])


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_expose_hidden_feeds_the_final_state_back(kind):
    torch.manual_seed(1)
    plain = compile_text(recurrent_net(kind, 4, 3, 2, 5, static=3)).module
    exposed = compile_text(recurrent_net(kind, 2, 3, 2, 5, static=3, expose=True)).module
    exposed.load_state_dict(plain.state_dict())
    x, xs, cont = torch.randn(4, 3, 2), torch.randn(3, 3), torch.ones(4, 3)
    y = plain(x=x, cont=cont, xs=xs)["y"]
    zeros = torch.zeros(1, 3, 5)
    states = {"h0": zeros} if kind == "RNN" else {"h0": zeros, "c0": zeros}
    a = exposed(x=x[:2], cont=cont[:2], xs=xs, **states)
    carried = {"h0": a["hT"]} if kind == "RNN" else {"h0": a["hT"], "c0": a["cT"]}
    b = exposed(x=x[2:], cont=cont[2:], xs=xs, **carried)
    torch.testing.assert_close(torch.cat([a["y"], b["y"]]), y, rtol=1e-6, atol=1e-6)
    assert not a["hT"].requires_grad        # Caffe shares data only: no gradient across batches


def test_lstm_unit_backward_is_caffes():
    """For binary cont, Caffe's hand-written backward equals autograd's derivative (float64)."""
    torch.manual_seed(2)
    c = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    x = torch.randn(1, 3, 16, dtype=torch.float64, requires_grad=True)
    cont = torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda c, x: CaffeLSTMUnitFunction.apply(c, x, cont), (c, x))


def test_lstm_unit_forget_gate_gradient_follows_caffe_for_fractional_cont():
    """Caffe's backward uses f * (1 - f) with f = cont * sigmoid(x_f); autograd would not."""
    c = torch.full((1, 1, 1), 2.0, dtype=torch.float64)
    x = torch.zeros(1, 1, 4, dtype=torch.float64, requires_grad=True)
    cont = torch.tensor([[0.5]], dtype=torch.float64)
    new_c, _ = CaffeLSTMUnitFunction.apply(c, x, cont)
    new_c.sum().backward()
    f = 0.5 * 0.5                               # cont * sigmoid(0)
    assert x.grad[0, 0, 1].item() == pytest.approx(2.0 * f * (1 - f))


def test_im2col_columns_times_weights_is_a_convolution():
    net = """
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 7 dim: 6 } } }
layer { name: "cols" type: "Im2col" bottom: "x" top: "cols"
  convolution_param { kernel_h: 3 kernel_w: 2 stride: 2 pad: 1 dilation: 2 } }
"""
    x = torch.randn(2, 3, 7, 6)
    cols = compile_text(net).module(x=x)["cols"]
    w = torch.randn(5, 3, 3, 2)
    conv = F.conv2d(x, w, stride=2, padding=1, dilation=2)
    assert cols.shape == (2, 18, conv.shape[2], conv.shape[3])
    torch.testing.assert_close(torch.einsum("ok,nkhw->nohw", w.reshape(5, -1), cols), conv,
                               rtol=1e-5, atol=1e-5)


def test_filter_single_top_and_batch_reindex_repeat():
    net = """
layer { name: "in" type: "Input" top: "x" top: "sel" top: "idx"
  input_param { shape { dim: 4 dim: 2 } shape { dim: 4 dim: 1 } shape { dim: 3 } } }
layer { name: "f" type: "Filter" bottom: "x" bottom: "sel" top: "fx" }
layer { name: "r" type: "BatchReindex" bottom: "x" bottom: "idx" top: "rx" }
"""
    x = torch.arange(8.0).reshape(4, 2).requires_grad_()
    out = compile_text(net).module(x=x, sel=torch.tensor([[0.0], [2.0], [0.0], [1.0]]),
                                   idx=torch.tensor([3.0, 3.0, 0.0]))
    assert out["fx"].tolist() == [[2.0, 3.0], [6.0, 7.0]]
    assert out["rx"].tolist() == [[6.0, 7.0], [6.0, 7.0], [0.0, 1.0]]
    out["rx"].sum().backward()
    assert x.grad.tolist() == [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [2.0, 2.0]]


@pytest.mark.parametrize("body, message", [
    ('layer { name: "f" type: "Filter" bottom: "x" bottom: "sel" top: "a" top: "b" }',
     "Filter needs one top per filtered bottom"),
    ('layer { name: "f" type: "Filter" bottom: "x" bottom: "idx" top: "a" }',
     "every bottom needs the selector's first dimension"),
    ('layer { name: "r" type: "BatchReindex" bottom: "x" bottom: "x" top: "a" }',
     "bottom 1 (indices) must be 1-D"),
    ('layer { name: "l" type: "LSTM" bottom: "x" bottom: "idx" top: "a" '
     'recurrent_param { num_output: 2 } }', "bottom 1 (cont) must be (timesteps, streams)"),
    ('layer { name: "l" type: "LSTM" bottom: "x" bottom: "sel" top: "a" top: "b" '
     'recurrent_param { num_output: 2 } }', "LSTM has 1 top(s) here"),
    ('layer { name: "u" type: "LSTMUnit" bottom: "x" bottom: "x" bottom: "sel" top: "c" top: "h" }',
     "bottom 0 (c_prev) must be (1, N, D)"),
])
def test_bad_shapes_and_arity_are_diagnostics(body, message):
    net = ('layer { name: "in" type: "Input" top: "x" top: "sel" top: "idx" input_param { '
           'shape { dim: 4 dim: 2 } shape { dim: 4 dim: 1 } shape { dim: 3 } } }\n' + body)
    with pytest.raises(NetspecError) as err:
        compile_text(net)
    assert message in str(err.value)
