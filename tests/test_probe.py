"""`netspec probe`: mean |dL/dW| per weight layer and loss, and CNDS's placement rule.

Oracles: gradients derived by hand for a two-layer InnerProduct/EuclideanLoss net
(matrix products, no autograd), the layers docs/experiment.md reports as vanishing on
the gaussian-init digits net, and a training trajectory that probing must not change.
"""
import json
import re

import pytest
import torch

from netspec.cli.main import main as netspec
from netspec.solve.solver import Solver
from netspec.tools import probe as P

from conftest import REPO

TINY = """name: "tiny"
layer { name: "in" type: "Input" top: "data" top: "target"
  input_param { shape { dim: 4 dim: 5 } shape { dim: 4 dim: 2 } } }
layer { name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
DROP
layer { name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "fc2" bottom: "target" top: "loss" }
"""


DROPOUT = 'layer { name: "drop" type: "Dropout" bottom: "fc1" top: "fc1" dropout_param { dropout_ratio: 0.5 } }'


def tiny_solver(tmp_path, mode="STANDARD", dropout=False) -> Solver:
    (tmp_path / "tiny.prototxt").write_text(TINY.replace("DROP", DROPOUT if dropout else ""))
    (tmp_path / "s.prototxt").write_text(f'net: "{tmp_path / "tiny.prototxt"}"\nbase_lr: 0.1\nmomentum: 0.9\n'
                                         f'lr_policy: "fixed"\nmax_iter: 10\nrandom_seed: 3\n'
                                         f"solver_mode: CPU\nbp_mode: {mode}\n")
    return Solver(tmp_path / "s.prototxt", log=lambda line: None)


def batch(seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"data": torch.randn(4, 5, generator=g, dtype=torch.float64).float(),
            "target": torch.randn(4, 2, generator=g, dtype=torch.float64).float()}


def test_mean_gradients_match_the_hand_derived_ones(tmp_path):
    """L = 1/(2N) sum |y - t|^2: dL/dW2 = delta^T h / N, dL/dW1 = (delta W2)^T x / N, delta = y - t."""
    solver = tiny_solver(tmp_path)
    b = batch()
    got = P.measure(solver, b, {"loss": ["fc1", "fc2"]})["loss"]
    p = solver.executor.params
    w1, b1, w2, b2 = (p[k].detach().double() for k in ("fc1/0", "fc1/1", "fc2/0", "fc2/1"))
    x, t = b["data"].double(), b["target"].double()
    h = x @ w1.T + b1
    delta = (h @ w2.T + b2 - t) / len(x)
    assert got["fc2"] == pytest.approx(float((delta.T @ h).abs().mean()), rel=1e-5)
    assert got["fc1"] == pytest.approx(float(((delta @ w2).T @ x).abs().mean()), rel=1e-5)


def test_probing_leaves_training_unchanged(tmp_path):
    """RNG (dropout masks) and buffers are restored, so a probed run trains bit for bit as an unprobed one."""
    plain = tiny_solver(tmp_path, dropout=True)
    plain.step(3, batches=[batch()])
    probed = tiny_solver(tmp_path, dropout=True)
    result = P.probe(probed, at=(0, 1, 3), batch=batch(1), batches=lambda: [batch()])
    assert result.iterations == [0, 1, 3] and probed.iter == 3
    for k, v in plain.executor.params.items():
        assert torch.equal(v, probed.executor.params[k]), k
    assert result.layers == ["fc1", "fc2"] and result.reach == {"loss": ["fc1", "fc2"]}


def _result(values: dict[str, float]) -> P.ProbeResult:
    """A measurement of one loss at iteration 50, every layer a trunk layer (no Trunk given)."""
    layers = list(values)
    return P.ProbeResult("STANDARD", "loss", layers, ["loss"], {"loss": layers}, {50: {"loss": values}})


def test_placement_follows_cnds():
    """CNDS sec. 3.2: a branch after the layer where the gradient vanishes, the layers above it not."""
    r = _result({"conv1": 1e-9, "conv2": 3e-8, "conv3": 2e-8, "conv4": 5e-8, "conv5": 1e-6, "fc": 1e-4})
    assert r.vanishing() == {"loss": ["conv1", "conv2", "conv3", "conv4"]}
    assert r.placement().layers == ["conv4"]
    everywhere = _result({"conv1": 1e-12, "conv2": 1e-12, "fc": 1e-12})
    assert everywhere.placement().layers == [] and "up to the top" in everywhere.placement().reason
    nowhere = _result({"conv1": 1e-5, "conv2": 1e-5})
    assert nowhere.placement().layers == [] and "no trunk layer" in nowhere.placement().reason
    # a profile that vanishes twice (CNDS's 13-layer net: "decay every three to four layers")
    twice = _result({"c1": 1e-9, "c2": 1e-6, "c3": 1e-8, "c4": 1e-9, "c5": 1e-6, "c6": 1e-5})
    assert twice.placement().layers == ["c1", "c4"]


def _docs_vanishing(init: str) -> dict[int, set[str]]:
    """The layers docs/experiment.md reports below 1e-7 for ``init``, per iteration."""
    text = (REPO / "docs" / "experiment.md").read_text()
    found = re.findall(rf"^\* {init}, after (\d+) iterations: below 1e-07: (.*)$", text, re.M)
    assert found, "docs/experiment.md reports no gradient measurement to compare with"
    return {int(it): set() if names.strip() == "none" else {n.strip() for n in names.split(",")}
            for it, names in found}


def test_probe_flags_what_the_experiment_reports_on_the_gaussian_digits_net(tmp_path, capsys):
    """Acceptance (issue 16): the gaussian-init digits net, STANDARD BP, as docs/experiment.md measures it."""
    from experiments.common import net_copy, solver_copy
    reported = _docs_vanishing("gaussian")
    solver = solver_copy(tmp_path, "STANDARD", 1, 10, net_copy(tmp_path, "gaussian"))
    code = netspec(["probe", "--solver", str(solver), "--iterations", "10", "--plot", str(tmp_path / "g.svg"),
                    "--json", str(tmp_path / "g.json")])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads((tmp_path / "g.json").read_text())
    flagged0 = set(data["vanishing"]["0"]["main_loss"])
    assert reported[0] and reported[0] <= flagged0                      # (every convolution when written)
    assert {f"conv{i}" for i in range(1, 13)} <= set(data["vanishing"]["10"]["main_loss"])
    assert "conv1 " in out and "*" in out and "CNDS rule (iteration 10): no branch" in out
    svg = (tmp_path / "g.svg").read_text()
    assert svg.startswith("<svg") and "CNDS threshold 1e-07" in svg and "main_loss, iter 10" in svg


def test_msra_digits_net_under_multiway_flags_nothing(tmp_path, capsys):
    """The bundled (msra) net: docs report no vanishing layer; under MULTIWAY every loss has a column."""
    from experiments.common import net_copy, solver_copy
    assert _docs_vanishing("msra")[0] == set()
    solver = solver_copy(tmp_path, "MULTIWAY", 1, 2, net_copy(tmp_path, "msra"))
    assert netspec(["probe", "--solver", str(solver), "--iterations", "2", "--plot", str(tmp_path / "m.png")]) == 0
    out = capsys.readouterr().out
    for loss in ("exit1_loss", "exit2_loss", "exit3_loss", "main_loss"):
        assert f"{loss}@0" in out and f"{loss}@2" in out and f"after 2 iterations, {loss}: none" in out
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"


def test_command_line_errors_are_diagnostics(tmp_path, capsys):
    assert netspec(["probe", "--solver", "x.prototxt", "--iterations", "-3"]) == 2
    assert "E0802" in capsys.readouterr().err
    (tmp_path / "tiny.prototxt").write_text(TINY.replace("DROP", ""))
    (tmp_path / "s.prototxt").write_text(f'net: "{tmp_path / "tiny.prototxt"}"\nsolver_mode: CPU\nbase_lr: 0.1\n')
    assert netspec(["probe", "--solver", str(tmp_path / "s.prototxt")]) == 1   # Input only: nothing to probe with
    err = capsys.readouterr().err
    assert "no data layer" in err and "Traceback" not in err
