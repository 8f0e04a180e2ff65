"""Neuron layers: Caffe's definitions in numpy, gradients, shapes and the Caffe oracle."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from layer_util import compile_text
from netspec.diagnostics import NetspecError
from oracle_harness import ORACLE, manifest, run_case

NEURON_TYPES = {"ReLU", "PReLU", "Sigmoid", "TanH", "ELU", "AbsVal", "BNLL", "Power", "Exp",
                "Log", "Threshold", "Clip", "Swish", "Dropout"}


def net_text(type_, params="", shape=(2, 3, 4, 5)):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f"""
    name: "t"
    layer {{ name: "input" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }}
    layer {{ name: "l" type: "{type_}" bottom: "x" top: "y" {params} }}
    """


def compile_layer(type_, params="", shape=(2, 3, 4, 5), phase="TRAIN"):
    return compile_text(net_text(type_, params, shape), phase)


def run(compiled, x):
    return compiled.module(x=x)["y"]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def bnll(x):
    return np.where(x > 0, x + np.log1p(np.exp(-np.abs(x))), np.log1p(np.exp(np.minimum(x, 0))))


# (type, params, reference from Caffe's definition, input transform to stay in the domain)
CASES = {
    "relu": ("ReLU", "", lambda x: np.maximum(x, 0), None),
    "relu_leaky": ("ReLU", "relu_param { negative_slope: 0.1 }",
                   lambda x: np.maximum(x, 0) + 0.1 * np.minimum(x, 0), None),
    "sigmoid": ("Sigmoid", "", sigmoid, None),
    "tanh": ("TanH", "", np.tanh, None),
    "elu": ("ELU", "elu_param { alpha: 0.5 }",
            lambda x: np.maximum(x, 0) + 0.5 * (np.exp(np.minimum(x, 0)) - 1), None),
    "elu_default": ("ELU", "", lambda x: np.where(x > 0, x, np.exp(np.minimum(x, 0)) - 1), None),
    "absval": ("AbsVal", "", np.abs, None),
    "bnll": ("BNLL", "", bnll, None),
    "bnll_large": ("BNLL", "", bnll, lambda x: 60 * x),
    "power": ("Power", "power_param { power: 3 scale: 0.5 shift: -0.25 }",
              lambda x: (-0.25 + 0.5 * x) ** 3, None),
    "power_sqrt": ("Power", "power_param { power: 0.5 scale: 2 shift: 0.5 }",
                   lambda x: np.sqrt(0.5 + 2 * x), lambda x: x.abs()),
    "power_linear": ("Power", "power_param { scale: -1.5 shift: 2 }", lambda x: 2 - 1.5 * x, None),
    "power_default": ("Power", "", lambda x: x, None),
    "exp": ("Exp", "", np.exp, None),
    "exp_base": ("Exp", "exp_param { base: 3 scale: 0.5 shift: 0.25 }",
                 lambda x: 3.0 ** (0.25 + 0.5 * x), None),
    "exp_natural_shift": ("Exp", "exp_param { scale: -2 shift: 1 }", lambda x: np.exp(1 - 2 * x), None),
    "log": ("Log", "", np.log, lambda x: x.abs() + 0.1),
    "log_base2": ("Log", "log_param { base: 2 scale: 3 shift: 4 }",
                  lambda x: np.log2(4 + 3 * x), lambda x: x.clamp(-1, 1)),
    "clip": ("Clip", "clip_param { min: -0.5 max: 0.25 }", lambda x: np.clip(x, -0.5, 0.25), None),
    "swish": ("Swish", "", lambda x: x * sigmoid(x), None),
    "swish_beta": ("Swish", "swish_param { beta: 0.3 }", lambda x: x * sigmoid(0.3 * x), None),
    "threshold": ("Threshold", "threshold_param { threshold: 0.2 }",
                  lambda x: (x > 0.2).astype(x.dtype), None),
    "threshold_default": ("Threshold", "", lambda x: (x > 0).astype(x.dtype), None),
}
DIFFERENTIABLE = [k for k, c in CASES.items() if c[0] != "Threshold"]


def inputs(case, dtype=torch.float32, shape=(2, 3, 4, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    transform = CASES[case][3]
    return (transform(x) if transform else x).to(dtype)


@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_matches_caffe_definition(case):
    type_, params, ref, _ = CASES[case]
    x = inputs(case)
    y = run(compile_layer(type_, params), x)
    expected = ref(x.double().numpy())
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("case", sorted(DIFFERENTIABLE))
def test_gradcheck(case):
    type_, params, _, _ = CASES[case]
    module = compile_layer(type_, params, shape=(2, 3, 2)).module.double()
    x = inputs(case, torch.float64, (2, 3, 2))
    if type_ in ("ReLU", "AbsVal", "Clip"):
        # keep finite differences off the kinks (0, and Clip's bounds)
        x = torch.where((x.abs() < 0.05) | ((x + 0.5).abs() < 0.05) | ((x - 0.25).abs() < 0.05),
                        x + 0.2, x)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: module(x=t)["y"], (x,))


def prelu_ref(x, w):
    w = np.asarray(w).reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.maximum(x, 0) + w * np.minimum(x, 0)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5), (2, 3, 4, 5)])
def test_prelu_forward_and_blob(shared, shape):
    params = "prelu_param { channel_shared: true }" if shared else ""
    c = compile_layer("PReLU", params, shape)
    w = c.module.state_dict()[c.blob_key("l", 0)]
    assert tuple(w.shape) == (() if shared else (3,))
    assert torch.all(w == 0.25)                      # Caffe's default filler
    with torch.no_grad():
        w.copy_(torch.linspace(-0.5, 0.7, w.numel()).reshape(w.shape))
    x = torch.randn(shape)
    np.testing.assert_allclose(run(c, x).detach().numpy(), prelu_ref(x.numpy(), w.numpy()),
                               rtol=1e-6, atol=1e-7)


def test_prelu_filler_and_gradcheck():
    c = compile_layer("PReLU", 'prelu_param { filler { type: "uniform" min: -1 max: 1 } }',
                      (2, 3, 2, 2))
    module = c.module.double()
    w0 = module.state_dict()[c.blob_key("l", 0)]
    assert not torch.all(w0 == w0.flatten()[0])      # the filler ran, not the 0.25 default
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    x = torch.where(x.abs() < 0.05, x + 0.2, x).requires_grad_(True)
    w = w0.clone().requires_grad_(True)
    key = c.blob_key("l", 0)
    f = lambda t, s: torch.func.functional_call(module, {key: s}, kwargs={"x": t})["y"]
    assert torch.autograd.gradcheck(f, (x, w))


@pytest.mark.parametrize("shape", [(6,), (1, 2, 3, 4, 5)])
def test_prelu_refuses_what_caffe_refuses(shape):
    with pytest.raises(NetspecError, match="2 to 4 axes"):
        compile_layer("PReLU", "", shape)


# Caffe's backward at ties (x exactly on a kink), from the layers' Backward_cpu
TIES = [
    ("ReLU", "", 0.0, 0.0),
    ("ReLU", "relu_param { negative_slope: 0.3 }", 0.0, 0.3),
    ("AbsVal", "", 0.0, 0.0),
    ("BNLL", "", 0.0, 0.5),
    ("ELU", "elu_param { alpha: 0.7 }", 0.0, 0.7),
    ("Clip", "clip_param { min: -1 max: 2 }", -1.0, 1.0),
    ("Clip", "clip_param { min: -1 max: 2 }", 2.0, 1.0),
]


@pytest.mark.parametrize("type_, params, at, grad", TIES)
def test_gradient_at_ties_is_caffes(type_, params, at, grad):
    c = compile_layer(type_, params, (1, 1))
    x = torch.full((1, 1), at, requires_grad=True)
    run(c, x).sum().backward()
    assert x.grad.item() == pytest.approx(grad, abs=1e-7)


def test_power_constant_when_scale_or_power_is_zero():
    x = torch.randn(2, 3, requires_grad=True)
    y = run(compile_layer("Power", "power_param { power: 2 scale: 0 shift: 3 }", (2, 3)), x)
    assert torch.all(y == 9)
    y0 = run(compile_layer("Power", "power_param { power: 0 scale: 2 shift: -1 }", (2, 3)), x)
    assert torch.all(y0 == 1)
    assert not y.requires_grad and not y0.requires_grad   # Caffe's bottom diff is 0


def test_clip_min_above_max_is_constant_min():
    x = torch.randn(4, 5, requires_grad=True)
    y = run(compile_layer("Clip", "clip_param { min: 1 max: -1 }", (4, 5)), x)
    assert torch.all(y == 1)                          # Caffe: max(min, min(x, max))
    y.sum().backward()
    assert torch.all(x.grad == 0)                     # no x satisfies min <= x <= max


def test_prelu_gradient_at_zero():
    c = compile_layer("PReLU", "", (1, 2))
    w = dict(c.module.named_parameters())[c.blob_key("l", 0)]
    x = torch.zeros(1, 2, requires_grad=True)
    run(c, x).sum().backward()
    # Caffe: bottom diff slope where x <= 0; slope diff x * (x <= 0) = 0
    assert torch.equal(x.grad, torch.full((1, 2), 0.25)) and torch.equal(w.grad, torch.zeros(2))


@pytest.mark.parametrize("type_, params, match", [
    ("Exp", "exp_param { base: -2 }", "strictly positive"),
    ("Log", "log_param { base: 0 }", "strictly positive"),
    ("Log", "log_param { base: 1 }", "base 1"),
    ("Dropout", "dropout_param { dropout_ratio: 1 }", r"\[0, 1\)"),
    ("Dropout", "dropout_param { dropout_ratio: -0.1 }", r"\[0, 1\)"),
])
def test_invalid_params_are_layer_errors(type_, params, match):
    with pytest.raises(NetspecError, match=match):
        compile_layer(type_, params)


def test_threshold_is_not_differentiable():
    c = compile_layer("Threshold", "threshold_param { threshold: 0.3 }")
    assert c.net.graph.layer("l").impl.differentiable is False
    assert not run(c, torch.randn(2, 3, 4, 5, requires_grad=True)).requires_grad


def test_dropout_test_phase_is_identity():
    x = torch.randn(2, 3, 4, 5)
    c = compile_layer("Dropout", "dropout_param { dropout_ratio: 0.7 }", phase="TEST")
    assert torch.equal(run(c, x), x)


@pytest.mark.parametrize("ratio", [0.5, 0.2])
def test_dropout_train_scales_kept_units(ratio):
    torch.manual_seed(0)
    x = torch.rand(64, 8, 16, 16) + 0.5               # no zeros in the bottom
    c = compile_layer("Dropout", f"dropout_param {{ dropout_ratio: {ratio} }}", x.shape)
    y = run(c, x)
    kept = y != 0
    scale = 1 / (1 - np.float32(ratio))
    torch.testing.assert_close(y[kept], x[kept] * float(scale), rtol=1e-6, atol=0)
    n = x.numel()
    sd = math.sqrt(n * ratio * (1 - ratio))
    assert abs(kept.sum().item() - n * (1 - ratio)) < 5 * sd
    # the gradient goes through the same mask and scale
    x.requires_grad_(True)
    y = run(c, x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() * float(scale))


def test_dropout_default_ratio_is_half():
    x = torch.ones(100_000)
    y = run(compile_layer("Dropout", "", (100_000,)), x)
    assert set(torch.unique(y).tolist()) <= {0.0, 2.0}
    assert abs((y != 0).float().mean().item() - 0.5) < 0.01


@settings(max_examples=15, deadline=None)
@given(type_=st.sampled_from(sorted(NEURON_TYPES - {"PReLU"})),
       shape=st.lists(st.integers(1, 4), min_size=1, max_size=5))
def test_top_shape_is_bottom_shape(type_, shape):
    params = "clip_param { min: -1 max: 1 }" if type_ == "Clip" else ""
    c = compile_layer(type_, params, tuple(shape))
    top = c.net.graph.layer("l").tops[0]
    y = run(c, torch.rand(tuple(shape)) + 0.5)
    assert c.net.shapes[top] == tuple(shape) == tuple(y.shape)


@settings(max_examples=10, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4), shared=st.booleans())
def test_prelu_shapes(shape, shared):
    c = compile_layer("PReLU", "prelu_param { channel_shared: true }" if shared else "", tuple(shape))
    top = c.net.graph.layer("l").tops[0]
    assert c.net.shapes[top] == tuple(shape) == tuple(run(c, torch.randn(shape)).shape)
    w = c.module.state_dict()[c.blob_key("l", 0)]
    assert tuple(w.shape) == (() if shared else (shape[1],))


ORACLE_CASES = [c["dir"] for c in manifest()
                if c["kind"] == "layer" and NEURON_TYPES & set(c["layer_types"])]


@pytest.mark.skipif(not ORACLE_CASES, reason="no Caffe oracle data")
@pytest.mark.parametrize("case_dir", ORACLE_CASES)
def test_caffe_oracle(case_dir):
    mismatches = run_case(ORACLE / case_dir)
    assert not mismatches, "\n".join(map(str, mismatches))
