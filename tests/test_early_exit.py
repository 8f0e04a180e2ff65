"""Anytime prediction (netspec.EarlyExit, netspec test --early-exit): properties that hold for
any weights, checked against the full net's exits."""
from pathlib import Path

import pytest
import torch

import netspec
from netspec.cli.main import main
from netspec.tools.early_exit import sweep
from netspec.tools.macs import exits

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits" / "deep_plain.prototxt"
TOPS = ["exit1_fc", "exit2_fc", "exit3_fc", "main_fc"]


@pytest.fixture(scope="module")
def net():
    return netspec.Net(DIGITS, phase="TEST", seed=7)


def test_each_sample_takes_the_first_confident_exit(net):
    x = torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net.forward(data=x, label=torch.zeros(40))
    probs = [torch.softmax(net.blobs[t], 1) for t in TOPS]
    for threshold in (0.0, 0.2, 0.3, 1.01):
        p = netspec.EarlyExit(net, threshold)(data=x)
        assert p.names == ["exit1_loss", "exit2_loss", "exit3_loss", "main_loss"]
        for i in range(40):
            conf = [float(q[i].max()) for q in probs]
            first = next((k for k, c in enumerate(conf[:-1]) if c >= threshold), 3)
            assert int(p.exits[i]) == first
            assert int(p.classes[i]) == int(probs[first][i].argmax())
    assert (netspec.EarlyExit(net, 0.0)(data=x).exits == 0).all()
    assert (netspec.EarlyExit(net, 1.01)(data=x).exits == 3).all()


def test_macs_per_exit_are_the_cumulative_layers_run(net):
    runner = netspec.EarlyExit(net, 0.5)
    per_exit = {e.name: e.macs for e in exits(net.net)}
    assert runner.macs[0] == per_exit["exit1_loss"]
    assert runner.macs[-1] >= per_exit["main_loss"] and runner.macs == sorted(runner.macs)


def test_sweep_ends_at_the_deepest_exit_and_plots(net, tmp_path):
    rows, singles = sweep(net, [0.0, 0.3, 0.6, 1.01], iterations=1)
    assert [s.exit_name for s in singles] == ["exit1_loss", "exit2_loss", "exit3_loss", "main_loss"]
    assert rows[0].accuracy == pytest.approx(singles[0].accuracy) and rows[0].shares[0] == 1.0
    assert rows[-1].accuracy == pytest.approx(singles[-1].accuracy) and rows[-1].shares[-1] == 1.0
    macs = [r.macs for r in rows]
    assert macs == sorted(macs)                          # a higher threshold keeps samples longer
    from netspec.tools.early_exit import plot
    svg = plot(rows, singles, tmp_path / "a.svg").read_text()
    assert svg.startswith("<svg") and "MACs per sample" in svg and "exit1_loss" in svg


def test_cli_prints_the_sweep(net, tmp_path, capsys):
    weights = net.save(tmp_path / "w.netspec")
    assert main(["test", "--model", str(DIGITS), "--weights", str(weights), "--iterations", "1",
                 "--early-exit", "0.5,1.01", "--plot", str(tmp_path / "a.png")]) == 0
    out = capsys.readouterr().out
    assert "threshold" in out and "each exit alone:" in out and "main_loss" in out
    assert (tmp_path / "a.png").stat().st_size > 0
    assert main(["test", "--model", str(DIGITS), "--weights", str(weights), "--early-exit", "x"]) == 2
