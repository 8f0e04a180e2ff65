"""Caffe-exactness corners: MVN's backward with eps (Caffe's formula, not the exact
derivative), the float32 lr policies bit for bit, and `netspec check` with unknown shapes."""
import ctypes
import ctypes.util
import math

import numpy as np
import pytest
import torch

from netspec.cli.main import main
from netspec.proto import caffe_pb2
from netspec.runtime import caffe_mvn
from netspec.solve.lr_policy import learning_rate

from layer_util import compile_text


# -- MVN ------------------------------------------------------------------------------------

def caffe_mvn_backward(x, top_diff, rows, eps):
    """MVNLayer::Backward_cpu (normalize_variance) step by step in float64, on (rows, dim)."""
    x = x.reshape(rows, -1).astype(np.float64)
    dy = top_diff.reshape(rows, -1).astype(np.float64)
    dim = x.shape[1]
    centred = x - x.mean(1, keepdims=True)
    variance = np.sqrt((centred ** 2).mean(1, keepdims=True)) + eps     # Forward's variance_
    top = centred / variance
    bottom_diff = top * dy                                               # caffe_mul
    bottom_diff = np.broadcast_to(bottom_diff.sum(1, keepdims=True), x.shape)   # gemv + gemm
    bottom_diff = top * bottom_diff                                      # caffe_mul
    bottom_diff = bottom_diff + dy.sum(1, keepdims=True)                 # gemv + gemm (beta 1)
    bottom_diff = dy - bottom_diff / dim                                 # axpby(1, top_diff, -1/dim)
    return bottom_diff / variance                                        # caffe_div


@pytest.mark.parametrize("across", [False, True])
@pytest.mark.parametrize("eps", [1e-3, 0.1, 1e-9])
def test_mvn_backward_is_caffes(across, eps):
    g = np.random.default_rng(3)
    x = g.normal(0.5, 0.2, size=(2, 3, 4, 5))
    dy = g.normal(size=x.shape)
    xt = torch.tensor(x, requires_grad=True)
    caffe_mvn(xt, across_channels=across, eps=eps).backward(torch.tensor(dy))
    rows = 2 if across else 6
    want = caffe_mvn_backward(x, dy, rows, eps).reshape(x.shape)
    np.testing.assert_allclose(xt.grad.numpy(), want, rtol=1e-10, atol=1e-12)


def test_mvn_backward_differs_from_the_exact_derivative_with_eps():
    """The reason for the custom backward: at eps 0.001 on rows with std 0.01, Caffe's
    gradient is percents away from autograd's exact one (its y term is 10% smaller)."""
    g = np.random.default_rng(5)
    x = torch.tensor(g.normal(0, 0.01, size=(2, 3, 4, 4)), requires_grad=True)
    dy = torch.tensor(g.normal(size=(2, 3, 4, 4)))
    caffe_mvn(x, eps=1e-3).backward(dy)
    flat = x.detach().reshape(6, -1).requires_grad_()
    c = flat - flat.mean(1, keepdim=True)
    (c / ((c * c).mean(1, keepdim=True).sqrt() + 1e-3)).backward(dy.reshape(6, -1))
    rel = (x.grad.reshape(6, -1) - flat.grad).norm() / flat.grad.norm()
    assert rel > 0.01


def test_mvn_with_eps_zero_is_the_exact_derivative():
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: caffe_mvn(t, eps=0.0), (x,))


def test_mvn_layer_in_a_net_uses_caffes_backward():
    compiled = compile_text('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 '
                            'dim: 4 } } }\nlayer { name: "m" type: "MVN" bottom: "x" top: "y" '
                            'mvn_param { eps: 0.001 } }')
    x = np.random.default_rng(1).normal(0, 0.05, size=(2, 3, 4)).astype(np.float32)
    dy = np.random.default_rng(2).normal(size=(2, 3, 4)).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    compiled.module(x=xt)["y"].backward(torch.tensor(dy))
    want = caffe_mvn_backward(x, dy, 6, 1e-3).reshape(x.shape)
    np.testing.assert_allclose(xt.grad.numpy(), want, rtol=2e-4, atol=2e-5)


# -- lr policies: Caffe's float32 arithmetic -------------------------------------------------

def _libm():
    path = ctypes.util.find_library("m")
    if path is None:
        pytest.skip("no C math library to take powf/expf from")
    lib = ctypes.CDLL(path)
    lib.powf.restype, lib.powf.argtypes = ctypes.c_float, [ctypes.c_float, ctypes.c_float]
    lib.expf.restype, lib.expf.argtypes = ctypes.c_float, [ctypes.c_float]
    return lib


def solver(text: str):
    from google.protobuf import text_format
    return text_format.Parse("base_lr: 0.01 " + text, caffe_pb2.SolverParameter())


def test_inv_equals_caffes_float_computation_bit_for_bit():
    """``Dtype rate = base_lr() * pow(Dtype(1) + gamma() * iter_, -power())``: float32
    operands, ``pow(float, float)`` is the C library's powf, float32 product."""
    m, f = _libm(), np.float32
    for base, gamma, power in [(0.01, 1e-4, 0.75), (0.1, 0.2, 0.75), (0.001, 1e-3, 0.5)]:
        p = caffe_pb2.SolverParameter(base_lr=base, lr_policy="inv", gamma=gamma, power=power)
        its = np.arange(0, 30000)
        got = np.array([learning_rate(p, int(i)) for i in its], dtype=np.float32)
        want = np.array([f(base) * f(m.powf(f(1) + f(gamma) * f(i), -f(power))) for i in its], dtype=np.float32)
        assert np.array_equal(got.view(np.int32), want.view(np.int32))
        # rounding the double pow to float (the old formula) is 1 ulp off Caffe somewhere
        double_rounded = np.array([f(base) * f(math.pow(float(f(1) + f(gamma) * f(i)), -float(f(power))))
                                   for i in its], dtype=np.float32)
        assert not np.array_equal(double_rounded.view(np.int32), want.view(np.int32))


def test_poly_and_sigmoid_use_powf_and_expf():
    m, f = _libm(), np.float32
    poly = solver('lr_policy: "poly" power: 0.9 max_iter: 5000')
    sig = solver('lr_policy: "sigmoid" gamma: -0.001 stepsize: 2500')
    for it in range(0, 5000, 7):
        frac = f(1) - f(it) / f(5000)
        assert learning_rate(poly, it) == float(f(0.01) * f(m.powf(frac, f(0.9))))
        z = -f(-0.001) * (f(it) - f(2500))
        assert learning_rate(sig, it) == float(f(0.01) * (f(1) / (f(1) + f(m.expf(z)))))


def test_every_oracle_lr_is_bit_exact():
    from conftest import shared_path
    from google.protobuf import text_format
    root = shared_path("caffe-oracle", "solvers")
    for case in sorted(root.iterdir()):
        p = text_format.Parse((case / "solver.prototxt").read_text(), caffe_pb2.SolverParameter())
        lr = np.load(case / "trajectory.npz")["lr"]
        got = np.array([learning_rate(p, i) for i in range(len(lr))], dtype=np.float32)
        assert np.array_equal(got.view(np.int32), lr.view(np.int32)), case.name


# -- netspec check with an input of unknown shape ------------------------------------------

UNKNOWN = """name: "u"
layer { name: "data" type: "Data" top: "data" top: "label"
  data_param { source: "/nonexistent/lmdb" batch_size: 4 backend: LMDB } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_check_says_parameters_unknown_and_how_to_give_the_shape(tmp_path, capsys):
    net = tmp_path / "u.prototxt"
    net.write_text(UNKNOWN)
    assert main(["check", str(net)]) == 0
    out = capsys.readouterr().out
    assert "0 parameters" not in out
    assert "parameters unknown" in out and "--input-shape data=N,C,H,W" in out
    row = next(line for line in out.splitlines() if line.startswith("ip "))
    assert row.split()[3] == "?"
    assert main(["check", str(net), "--input-shape", "data=4,3,5,5"]) == 0
    out = capsys.readouterr().out
    assert "3 layers, 760 parameters (0.0 MiB as float32)" in out and "parameters unknown" not in out
