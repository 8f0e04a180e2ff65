"""netspec time: per-layer and total timings, the layer-by-layer backward is a real backward,
scheduled iterations per BP mode, CLI paths."""
from __future__ import annotations

import gc
import importlib.util
import weakref
from pathlib import Path

import pytest
import torch

from netspec.check import check_net, load
from netspec.cli import main as cli_main
from netspec.compile.module import compile_net
from netspec.lower import NetState
from netspec.proto import caffe_pb2
from netspec.tools.timing import (Clock, format_markdown, layer_pass, statements_cached,
                                  synthetic_inputs, time_net)

from conftest import SHARED, shared_path

ROOT = Path(__file__).resolve().parents[1]
ZOO = SHARED / "caffe-zoo"


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TWO_LOSSES = """
name: "two_losses"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
layer { name: "aux_ip" type: "InnerProduct" bottom: "conv1" top: "aux_ip"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "aux_loss" type: "SoftmaxWithLoss" bottom: "aux_ip" bottom: "label" top: "aux_loss"
  loss_weight: 0.3 }
"""


@pytest.fixture
def two_losses(tmp_path) -> Path:
    p = tmp_path / "two.prototxt"
    p.write_text(TWO_LOSSES)
    return p


def small_resnet(tmp_path) -> Path:
    p = tmp_path / "resnet8.prototxt"
    p.write_text(_load_script("time_resnet56_doc").resnet_cifar(1, 2))
    return p


def checked(path, phase="TRAIN"):
    _, src = load(path)
    return check_net(src, NetState.of(phase))


def test_layer_by_layer_backward_matches_the_whole_module(tmp_path):
    """The per-layer timing runs a real backward: chaining each layer's isolated
    autograd.grad gives the module's own parameter gradients."""
    net = checked(small_resnet(tmp_path))
    compiled = compile_net(net, seed=1, dtype=torch.float64)
    inputs = {k: v.double() for k, v in synthetic_inputs(compiled, torch.device("cpu"), 3).items()}
    compiled.module.eval()                       # same BatchNorm arithmetic in both passes
    got: dict = {}
    layer_pass(compiled, inputs, Clock(torch.device("cpu")), {}, {}, got)
    out = compiled.module(**inputs)
    out["loss"].sum().backward()
    params = [p for p in compiled.module.parameters() if p.requires_grad]
    assert params and all(p in got for p in params)
    for p in params:
        torch.testing.assert_close(got[p], p.grad, rtol=1e-9, atol=1e-12)


def test_statements_cache_dies_with_its_module(two_losses):
    """The per-statement cache goes with its compiled module.  A cache that outlived the
    module (keyed by ``id(module)``) gave a later module at the same address the dead one's
    statements: 'ResNet8CIFAR' object has no attribute 'ip1' (CI of stop 20)."""
    compiled = compile_net(checked(two_losses), seed=1)
    layers = [s.layer for s in statements_cached(compiled)[0]]
    assert [l for l in layers if l in ("conv1", "ip1")] == ["conv1", "ip1"]
    cls = weakref.ref(type(compiled.module))
    del compiled
    gc.collect()
    assert cls() is None


def test_text_table_keeps_long_layer_names_whole():
    """Names longer than the usual 24 columns widen the column instead of being cut: cut to
    24, 'inception_3a/relu_5x5_reduce' read 'inception_3a/relu_5x5_re'."""
    from netspec.tools.timing import LayerTime, Timing, format_table
    layers = [LayerTime("inception_3a/relu_5x5_reduce", "ReLU", 1.0, 2.0),
              LayerTime("inception_3a/relu_5x5", "ReLU", 0.5, 0.25),
              LayerTime("loss", "SigmoidCrossEntropyLoss", 0.125, 0.125)]
    text = format_table(Timing("g", "cpu", 2, layers, 1.625, 2.375))
    rows = text.splitlines()[2:7]
    assert rows[2].startswith("inception_3a/relu_5x5_reduce ReLU ") and rows[3].startswith("inception_3a/relu_5x5 ")
    assert "SigmoidCrossEntropyLoss" in rows[4]
    assert len({len(r) for r in rows}) == 1                      # header, rule and rows aligned
    assert text.splitlines()[8].split() == ["sum", "of", "layers", "1.625", "2.375", "4.000"]


def test_time_net_reports_every_layer(tmp_path):
    net = checked(small_resnet(tmp_path))
    t = time_net(net, iterations=2, warmup=1)
    rows = {l.layer: l for l in t.layers}
    computed = {n.name for n in net.graph.layers() if n.type != "Input"}
    assert set(rows) == computed
    assert all(rows[n].forward_ms > 0 for n in computed)
    assert rows["conv1"].backward_ms > 0 and rows["fc"].backward_ms > 0
    assert t.forward_ms > 0 and t.backward_ms > 0
    assert t.forward_backward_ms == pytest.approx(t.forward_ms + t.backward_ms)
    md = format_markdown(t)
    assert md.count("\n") == len(t.layers) + 4 and "| res1_1_a_bn | BatchNorm |" in md


def test_deploy_net_backward_is_seeded_from_its_outputs():
    net = checked(shared_path("caffe-zoo", "examples", "cifar10", "cifar10_quick.prototxt"), "TEST")
    rows = {l.layer: l for l in time_net(net, iterations=1, warmup=0).layers}
    assert rows["conv1"].backward_ms > 0 and rows["prob"].backward_ms > 0


def test_layers_no_gradient_reaches_have_no_backward(tmp_path):
    p = tmp_path / "acc.prototxt"
    p.write_text(TWO_LOSSES + 'layer { name: "acc" type: "Accuracy" bottom: "ip1" bottom: "label" top: "acc" }\n')
    rows = {l.layer: l for l in time_net(checked(p), iterations=1, warmup=0).layers}
    assert rows["acc"].forward_ms > 0 and rows["acc"].backward_ms == 0
    assert rows["aux_ip"].backward_ms > 0


def test_schedules_are_timed_per_bp_mode(two_losses):
    solver = caffe_pb2.SolverParameter(base_lr=0.01, momentum=0.9)
    t = time_net(checked(two_losses), iterations=2, warmup=1, solver=solver)
    assert list(t.schedules) == ["STANDARD", "JOINT", "RELAY", "MULTIWAY"]
    assert all(ms > 0 for ms in t.schedules.values())


def run_cli(argv, monkeypatch) -> int:
    monkeypatch.setitem(cli_main.COMMANDS, "time", ("netspec.cli.time_cmd", "time a net"))
    return cli_main.main(argv)


def test_cli_prints_the_caffe_time_report(two_losses, tmp_path, monkeypatch, capsys):
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{two_losses}"\nbase_lr: 0.01\nbp_mode: RELAY\nsolver_mode: CPU\n')
    assert run_cli(["time", str(two_losses), "--iterations", "2", "--warmup", "1",
                    "--solver", str(solver)], monkeypatch) == 0
    out = capsys.readouterr().out
    for needle in ("conv1", "aux_loss", "Average Forward pass", "Average Backward pass",
                   "Average Forward-Backward", "RELAY", "MULTIWAY"):
        assert needle in out
    assert run_cli(["time", str(solver), "--iterations", "1", "--warmup", "0"], monkeypatch) == 0
    assert "Average Forward pass" in capsys.readouterr().out


def test_cli_user_errors(two_losses, tmp_path, monkeypatch, capsys):
    assert run_cli(["time", str(tmp_path / "none.prototxt")], monkeypatch) == 1
    assert run_cli(["time", str(two_losses), "--solver", str(two_losses)], monkeypatch) == 1
    assert "is a net, not a solver" in capsys.readouterr().err
    assert run_cli(["time", str(two_losses), "--iterations", "x"], monkeypatch) == 2
    if not torch.cuda.is_available():
        assert run_cli(["time", str(two_losses), "--gpu"], monkeypatch) == 1
        assert "error[E0801]" in capsys.readouterr().err


def test_tools_time_net_wraps_the_cli(two_losses, monkeypatch, capsys):
    monkeypatch.setitem(cli_main.COMMANDS, "time", ("netspec.cli.time_cmd", "time a net"))
    assert _load_script("time_net").time_main([str(two_losses), "--iterations", "1", "--warmup", "0"]) == 0
    assert "Average Forward-Backward" in capsys.readouterr().out


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_timing_with_cuda_events(tmp_path):
    t = time_net(checked(small_resnet(tmp_path)), iterations=2, warmup=1, gpu=True)
    assert t.device.startswith("cuda") and t.forward_ms > 0
    assert all(l.forward_ms > 0 for l in t.layers)
