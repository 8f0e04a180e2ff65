"""Anytime prediction (netspec.EarlyExit, netspec test --early-exit): properties that hold for
any weights, checked against the full net's exits."""
from pathlib import Path

import pytest
import torch

import netspec
from netspec.cli.main import main
from netspec.tools.early_exit import SweepRow, format_sweep, sweep, verdict
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
    # each exit alone pays for its own trunk and head only, as `netspec check` counts it
    assert runner.alone_macs == [per_exit[n] for n in runner.names]
    assert runner.alone_macs[-1] < runner.macs[-1]           # the shallower heads are not in it


def test_sweep_ends_at_the_deepest_exit_and_plots(net, tmp_path):
    rows, singles = sweep(net, [0.0, 0.3, 0.6, 1.01], iterations=1, repeats=0)
    assert [s.exit_name for s in singles] == ["exit1_loss", "exit2_loss", "exit3_loss", "main_loss"]
    assert rows[0].accuracy == pytest.approx(singles[0].accuracy) and rows[0].shares[0] == 1.0
    assert rows[-1].accuracy == pytest.approx(singles[-1].accuracy) and rows[-1].shares[-1] == 1.0
    macs = [r.macs for r in rows]
    assert macs == sorted(macs)                          # a higher threshold keeps samples longer
    from netspec.tools.early_exit import plot
    svg = plot(rows, singles, tmp_path / "a.svg").read_text()
    assert svg.startswith("<svg") and "MACs per sample" in svg and "exit1_loss" in svg


def test_cli_notes_iterations_that_do_not_cover_the_test_set_evenly(net, tmp_path, capsys):
    """Caffe's default 50 batches of 99 are 16.67 passes over the 297 test digits: netspec test
    says so and names the count that scores every digit equally; a whole pass says nothing."""
    weights = net.save(tmp_path / "w.netspec")
    assert main(["test", "--model", str(DIGITS), "--weights", str(weights), "--iterations", "2"]) == 0
    err = capsys.readouterr().err
    assert ("note: 2 batches of 99 are 0.67 passes over the 297 records of data layer 'digits', so some "
            "records count more often than others; --iterations 3 scores each record equally") in err
    assert main(["test", "--model", str(DIGITS), "--weights", str(weights), "--iterations", "3"]) == 0
    assert "passes over" not in capsys.readouterr().err


def test_cli_prints_the_sweep(net, tmp_path, capsys):
    weights = net.save(tmp_path / "w.netspec")
    assert main(["test", "--model", str(DIGITS), "--weights", str(weights), "--iterations", "1",
                 "--early-exit", "0.5,1.01", "--repeats", "2", "--plot", str(tmp_path / "a.png")]) == 0
    out = capsys.readouterr().out
    assert "threshold" in out and "each exit alone:" in out and "main_loss" in out
    assert "speed-up @99" in out and "curve: " in out and "highest threshold 1.01" in out
    assert main(["test", "--model", str(DIGITS), "--weights", str(weights), "--iterations", "1",
                 "--early-exit", "0.5", "--repeats", "0"]) == 0
    assert "speed-up" not in capsys.readouterr().out
    assert main(["test", "--model", str(DIGITS), "--weights", str(weights), "--early-exit", "0.5",
                 "--repeats", "-1"]) == 2
    assert (tmp_path / "a.png").stat().st_size > 0
    assert main(["test", "--model", str(DIGITS), "--weights", str(weights), "--early-exit", "x"]) == 2


def _rows(accuracies, thresholds=None):
    thresholds = thresholds or [0.1 * (i + 1) for i in range(len(accuracies))]
    return [SweepRow(t, a, 100.0 * (i + 1)) for i, (t, a) in enumerate(zip(thresholds, accuracies))]


def test_verdict_finds_drops_the_top_threshold_and_the_cheapest_close_row():
    singles = [SweepRow(None, a, m, exit_name=n) for n, a, m in (("e1", 0.80, 100), ("main", 0.95, 1000))]
    v = verdict(_rows([0.80, 0.93, 0.946, 0.95, 0.95]), singles)
    assert v.monotone and not v.drops and v.highest.threshold == pytest.approx(0.5)
    assert v.close.accuracy == 0.946                  # 0.4 points below main: the cheapest within 0.5
    v = verdict(_rows([0.80, 0.97, 0.96, 0.95]), singles)
    assert not v.monotone and [(a.accuracy, b.accuracy) for a, b in v.drops] == [(0.97, 0.96), (0.97, 0.95)]
    assert v.close.accuracy == 0.97
    text = format_sweep(_rows([0.80, 0.97, 0.96, 0.95]), singles)
    assert "NOT monotone: 97.00% at threshold 0.2, then down to 95.00% at 0.4" in text
    assert "highest threshold 0.4: 95.00%, equals main alone (95.00%)" in text
    assert "drop is" not in text                      # sample count unknown: no count claimed
    counted = _rows([0.80, 0.97, 0.96, 0.95])
    for r in counted:
        r.samples = 200
    text = format_sweep(counted, singles)
    assert "that drop is 4 of 200 scored samples (one sample is 0.50 points)" in text
    assert verdict(_rows([0.5, 0.6]), singles).close is None
    # rows given out of threshold order are judged in threshold order
    v = verdict(list(reversed(_rows([0.80, 0.90, 0.95]))), singles)
    assert v.monotone and v.highest.accuracy == 0.95


def test_sweep_times_each_threshold_against_the_deepest_exit_at_two_batch_sizes(net):
    rows, singles = sweep(net, [0.5, 1.01], iterations=2, repeats=3)
    batch = 99                                            # the digits net's TEST batch
    assert {r.samples for r in rows + singles} == {2 * batch}
    for r in rows:
        assert [t.batch for t in r.timings] == [batch, 2 * batch]
        assert all(len(t.ratios) == 3 and all(x > 0 for x in t.ratios) for t in r.timings)
        assert min(r.timings[0].ratios) <= r.timings[0].median <= max(r.timings[0].ratios)
    text = format_sweep(rows, singles)
    assert "speed-up @99" in text and "speed-up @198" in text and "3 interleaved rounds" in text
    assert "within 0.5 points of main_loss" in text


def _relabelled(tmp_path, label_of_main: str) -> Path:
    """The digits TEST net reading its labels from an HDF5 dataset 'target' (not 'label'); the
    main loss reads ``label_of_main``."""
    import h5py
    with h5py.File(ROOT / "models" / "digits" / "digits_test.h5") as src, h5py.File(tmp_path / "t.h5", "w") as dst:
        dst["data"], dst["target"] = src["data"][:], src["label"][:]
    (tmp_path / "test.txt").write_text(f"{tmp_path / 't.h5'}\n")
    (tmp_path / "train.txt").write_text(f"{tmp_path / 't.h5'}\n")
    text = DIGITS.read_text().replace('"label"', '"target"')
    text = text.replace('bottom: "main_fc" bottom: "target"', f'bottom: "main_fc" bottom: "{label_of_main}"')
    if label_of_main != "target":
        text += f'layer {{ name: "relabel" type: "Power" bottom: "target" top: "{label_of_main}" }}\n'
    out = tmp_path / "net.prototxt"
    out.write_text(text)
    return out


def test_sweep_reads_the_labels_the_losses_read(net, tmp_path, capsys):
    weights = net.save(tmp_path / "w.netspec")
    other = netspec.Net(_relabelled(tmp_path, "target"), phase="TEST", weights=weights)
    rows, singles = sweep(other, [0.5, 1.01], iterations=1, repeats=0)
    reference, ref_singles = sweep(net, [0.5, 1.01], iterations=1, repeats=0)
    assert [r.accuracy for r in rows + singles] == [r.accuracy for r in reference + ref_singles]
    # labels the data layers do not provide: a diagnostic, not a KeyError
    model = _relabelled(tmp_path, "t2")
    assert main(["test", "--model", str(model), "--weights", str(weights), "--iterations", "1",
                 "--early-exit", "0.5", "--repeats", "0"]) != 0
    err = capsys.readouterr().err
    assert "E0800" in err and "'t2'" in err and "Traceback" not in err


def test_the_larger_timing_batch_is_capped(monkeypatch):
    from netspec.tools import early_exit
    feeds = [{"data": torch.zeros(10, 1, 8, 8)} for _ in range(5)]       # 2,560 bytes each
    assert early_exit._joinable(feeds) == 5
    monkeypatch.setattr(early_exit, "JOIN_BYTES", 2 * 2560)
    assert early_exit._joinable(feeds) == 2
    monkeypatch.setattr(early_exit, "JOIN_BYTES", 2000)
    assert early_exit._joinable(feeds) == 0
