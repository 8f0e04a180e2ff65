"""netspec.Net / netspec.Solver: the pycaffe-style Python API, checked against BVLC Caffe's
golden numbers, against the same computation written directly in torch, and README's example."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import netspec
from netspec.diagnostics import NetspecError

from cli_util import DIGITS, tiny_net
from conftest import REPO, SHARED

ORACLE = SHARED / "caffe-oracle" / "nets"

SMALL = """name: "small"
layer { name: "input" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } shape { dim: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 }
                      bias_filler { type: "uniform" min: -0.5 max: 0.5 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" }
                        bias_filler { type: "uniform" min: -0.5 max: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" loss_weight: 2 }
"""


@pytest.fixture
def small(tmp_path) -> Path:
    path = tmp_path / "small.prototxt"
    path.write_text(SMALL)
    return path


def small_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"data": torch.randn(2, 3, 6, 6, generator=g), "label": torch.tensor([1.0, 4.0])}


def close(actual, expected, tol) -> bool:
    expected = np.asarray(expected, dtype=np.float64)
    atol = tol["atol_scale"] * (float(np.abs(expected).max()) if expected.size else 0.0)
    return np.allclose(np.asarray(actual, dtype=np.float64), expected, rtol=tol["rtol"], atol=atol)


# -- against Caffe ----------------------------------------------------------------------------

@pytest.mark.skipif(not ORACLE.is_dir(), reason="../shared/caffe-oracle absent")
def test_net_forward_backward_match_caffe_on_lenet():
    import json
    case = ORACLE / "lenet_train"
    meta = json.loads((case / "case.json").read_text())
    net = netspec.Net(case / "net.prototxt", phase="TRAIN", weights=case / "weights.caffemodel")
    assert net.missing == []
    inputs = dict(np.load(case / "inputs.npz"))
    out = net.forward(**inputs)
    assert float(out["loss"]) == pytest.approx(meta["total_loss"], rel=1e-5)
    forward = np.load(case / "forward.npz")
    bad = [k for k in forward.files if not close(net.blobs[k].numpy(), forward[k], meta["tolerance"]["forward"])]
    assert not bad
    net.backward()
    backward, tol = np.load(case / "backward.npz"), meta["tolerance"]["backward"]
    bad = [b for b in meta["blobs_with_diff"] if not close(net.diffs[b].numpy(), backward[f"blob/{b}"], tol)]
    for layer, blobs in net.params.items():
        bad += [f"{layer}/{i}" for i, p in enumerate(blobs)
                if not close(p.grad.numpy(), backward[f"param/{layer}/{i}"], tol)]
    assert not bad


# -- against the same net written in torch ----------------------------------------------------

def test_forward_and_backward_equal_direct_torch(small):
    net = netspec.Net(small, phase="TRAIN", seed=3)
    inputs = small_inputs()
    out = net.forward(**inputs)
    assert list(out) == ["loss"] and list(net.inputs) == ["data", "label"]
    (w, b), (v, c) = net.params["conv1"], net.params["ip"]
    x = inputs["data"].clone().requires_grad_(True)
    conv = F.conv2d(x, w, b)
    relu = F.relu(conv)
    logits = F.linear(relu.flatten(1), v, c)
    loss = F.cross_entropy(logits, inputs["label"].long())
    torch.testing.assert_close(out["loss"], loss.detach())
    torch.testing.assert_close(net.blobs["conv1"], relu.detach())        # the last in-place version
    torch.testing.assert_close(net.blobs["ip"], logits.detach())
    net.backward()
    dx, dconv, dlogits, dw, db, dv, dc = torch.autograd.grad(2 * loss, [x, conv, logits, w, b, v, c])
    torch.testing.assert_close(net.diffs["data"], dx)
    torch.testing.assert_close(net.diffs["conv1"], dconv)   # Caffe's in-place blob: the ReLU's bottom diff
    torch.testing.assert_close(net.diffs["ip"], dlogits)
    for p, ref in ((w, dw), (b, db), (v, dv), (c, dc)):
        torch.testing.assert_close(p.grad, ref)


def test_backward_from_given_top_diffs(tmp_path):
    path = tmp_path / "deploy.prototxt"
    path.write_text('name: "deploy" input: "data" input_shape { dim: 3 dim: 4 }\n'
                    'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"\n'
                    '  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }\n'
                    'layer { name: "sig" type: "Sigmoid" bottom: "ip" top: "sig" }\n')
    net = netspec.Net(path)
    x, seed = torch.randn(3, 4), torch.randn(3, 2)
    out = net.forward(data=x)
    w, b = net.params["ip"]
    torch.testing.assert_close(out["sig"], torch.sigmoid(x @ w.T + b).detach())
    diffs = net.backward({"sig": seed})
    s = torch.sigmoid(x @ w.T + b).detach()
    torch.testing.assert_close(diffs["ip"], seed * s * (1 - s))
    torch.testing.assert_close(diffs["data"], (seed * s * (1 - s)) @ w.detach())
    torch.testing.assert_close(w.grad, (seed * s * (1 - s)).T @ x)
    g = w.grad.clone()
    net.forward(data=x)
    net.backward({"sig": seed})
    torch.testing.assert_close(w.grad, 2 * g)              # accumulates, as Caffe's param diffs
    net.clear_param_diffs()
    assert w.grad is None


def test_params_are_the_nets_own_tensors(small):
    net = netspec.Net(small)
    assert list(net.params) == ["conv1", "ip"]
    assert [tuple(p.shape) for p in net.params["ip"]] == [(5, 64), (5,)]
    assert list(net.layers) == ["input", "conv1", "relu1", "ip", "loss"]
    with torch.no_grad():
        net.params["ip"][0].zero_()
        net.params["ip"][1].copy_(torch.arange(5.0))
        net.forward(**small_inputs())
    torch.testing.assert_close(net.blobs["ip"], torch.arange(5.0).expand(2, 5))


def test_forward_reads_the_data_layers(tmp_path):
    net = netspec.Net(tiny_net(tmp_path), phase="TEST")
    out = net.forward()
    assert set(out) == {"aux_loss", "aux_accuracy", "loss", "accuracy"}
    assert tuple(net.blobs["data"].shape) == (33, 1, 8, 8) and tuple(net.blobs["conv1"].shape) == (33, 4, 6, 6)
    first = net.blobs["label"].clone()
    net.forward()
    assert not torch.equal(first, net.blobs["label"])               # the next batch


def test_the_feeder_is_the_stream_forward_reads(tmp_path):
    """``net.feeder`` is the public face of forward()'s data: a batch taken from it is the one
    forward() would have read, and forward() goes on with the batch after it."""
    a, b = (netspec.Net(tiny_net(tmp_path), phase="TEST") for _ in range(2))
    assert a.feeder is a.feeder
    assert sum(a.feeder.records().values()) > 0 and set(a.feeder.batch_sizes().values()) == {33}
    taken = next(a.feeder)
    b.forward()
    assert torch.equal(taken["label"], b.blobs["label"].cpu())
    a.forward()
    b.forward()
    assert torch.equal(a.blobs["label"], b.blobs["label"])


# -- weights ----------------------------------------------------------------------------------

def test_save_and_load_round_trip(small, tmp_path):
    a = netspec.Net(small, phase="TRAIN", seed=1)
    b = netspec.Net(small, phase="TRAIN", seed=2)
    assert not torch.equal(a.params["conv1"][0], b.params["conv1"][0])
    saved = a.save(tmp_path / "sub" / "small.netspec")
    assert sorted(p.name for p in saved.parent.iterdir()) == ["small.netspec"]   # no temporary left
    c = netspec.Net(small, phase="TEST", weights=saved, seed=2)
    assert c.missing == []
    for layer, blobs in a.params.items():
        assert all(torch.equal(p, q) for p, q in zip(blobs, c.params[layer]))
    torch.testing.assert_close(a.forward(**small_inputs())["loss"], c.forward(**small_inputs())["loss"],
                               rtol=0, atol=0)


def test_layers_the_weights_lack_keep_their_fillers(tmp_path):
    """A snapshot of a net with fewer layers fills what it has; the rest is reported."""
    small = tmp_path / "small.prototxt"
    small.write_text(SMALL)
    bigger = tmp_path / "bigger.prototxt"
    bigger.write_text(SMALL.replace('bottom: "ip" bottom: "label"', 'bottom: "ip2" bottom: "label"') +
                      'layer { name: "ip2" type: "InnerProduct" bottom: "ip" top: "ip2"\n'
                      '  inner_product_param { num_output: 5 } }\n')
    saved = netspec.Net(small).save(tmp_path / "w.netspec")
    net = netspec.Net(bigger, weights=saved)
    assert net.missing and all("ip2" in m for m in net.missing)


# -- errors are diagnostics -------------------------------------------------------------------

def codes(excinfo) -> list[str]:
    return [d.code for d in excinfo.value.diagnostics]


def test_errors_are_netspec_diagnostics(small):
    with pytest.raises(NetspecError) as e:
        netspec.Net(DIGITS / "solver_relay.prototxt")
    assert codes(e) == ["E0800"] and "netspec.Solver" in e.value.render()
    net = netspec.Net(small)
    with pytest.raises(NetspecError) as e:
        net.backward()
    assert codes(e) == ["E0701"] and "forward() first" in e.value.render()
    with pytest.raises(NetspecError) as e:
        net.forward()
    assert "data=2,3,6,6" in e.value.render()                          # the declared shapes
    with pytest.raises(NetspecError) as e:
        net.forward(date=torch.zeros(2, 3, 6, 6), label=torch.zeros(2))
    assert "'date' is not an input" in e.value.render()
    with torch.no_grad():
        net.forward(**small_inputs())
    with pytest.raises(NetspecError) as e:
        net.backward()
    assert "no graph" in e.value.render()
    net.forward(**small_inputs())
    with pytest.raises(NetspecError) as e:
        net.backward({"ip": torch.zeros(3)})
    assert "has shape (3,)" in e.value.render()
    with pytest.raises(NetspecError) as e:
        netspec.Net(small, weights=small.with_suffix(".netspec"))
    assert codes(e) == ["E0700"]


# -- the package and README -------------------------------------------------------------------

def test_import_netspec_is_light_and_exports_the_api():
    code = ("import sys, netspec; assert 'torch' not in sys.modules; "
            "from netspec import Net, Solver; print(Net.__module__, Solver.__module__)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["netspec.api", "netspec.solve.solver"]


def readme_python_api_example() -> str:
    section = (REPO / "README.md").read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    """README's Python API block, executed as written from a copy of the repository root."""
    (tmp_path / "models").symlink_to(REPO / "models")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_python_api_example(), "README.md#python-api", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "main_accuracy" in out and "torch.Size([99, 16, 8, 8])" in out
    assert (tmp_path / "digits_relay.netspec").is_file() and (tmp_path / "digits_trained.netspec").is_file()
    net = netspec.Net(REPO / "models/digits/deep_plain.prototxt", weights=tmp_path / "digits_trained.netspec")
    assert net.missing == []
