"""tools/*.py, the Caffe-tradition scripts, run as subprocesses on small real inputs: each
does what its netspec command does, and the log tools read what `netspec train --log` wrote."""
import csv
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cli_util import tiny_net, tiny_solver
from conftest import REPO

TOOLS = REPO / "tools"


def script(name: str, *args, cwd=None) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, str(TOOLS / name), *map(str, args)], capture_output=True,
                         text=True, cwd=cwd or REPO, timeout=600)
    assert "Traceback" not in run.stderr, run.stderr
    return run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """tools/train_net.py with Caffe's positional solver: (folder, JSON-lines log path)."""
    folder = tmp_path_factory.mktemp("tools")
    log = folder / "train.jsonl"
    run = script("train_net.py", tiny_solver(folder), "--log", log)
    assert run.returncode == 0, run.stderr
    assert "Optimization Done." in run.stdout
    return folder, log


def records(log: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, log.read_text().splitlines()) if r["kind"] == kind]


def read_table(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_train_net_trains_and_snapshots(trained):
    folder, log = trained
    assert [r["iter"] for r in records(log, "train")] == [0, 1, 2, 3]
    assert (folder / "tiny_iter_4.netspec").is_file()


def test_parse_log_writes_caffes_tables(trained, tmp_path):
    _, log = trained
    run = script("parse_log.py", log, tmp_path / "out", "--verbose")
    assert run.returncode == 0, run.stderr
    train, test = read_table(tmp_path / "out" / "train.jsonl.train"), read_table(tmp_path / "out" / "train.jsonl.test")
    want = records(log, "train")
    assert list(train[0]) == ["NumIters", "Seconds", "LearningRate", "loss", "smoothed_loss", "aux_loss",
                              "loss_layer"]                       # the layer named "loss" keeps its own column
    assert [float(r["loss"]) for r in train] == pytest.approx([r["loss"] for r in want])
    assert [float(r["loss_layer"]) for r in train] == pytest.approx([r["losses"]["loss"] for r in want])
    assert [int(r["NumIters"]) for r in train] == [r["iter"] for r in want]
    assert [float(r["aux_loss"]) for r in train] == pytest.approx([r["losses"]["aux_loss"] for r in want])
    seconds = [float(r["Seconds"]) for r in train]
    assert seconds == sorted(seconds) and seconds[-1] == pytest.approx(sum(r["seconds"] for r in want), abs=1e-5)
    tests = records(log, "test")
    assert [int(r["NumIters"]) for r in test] == [2, 4]
    assert [float(r["accuracy"]) for r in test] == pytest.approx([r["outputs"]["accuracy"] for r in tests])
    assert list(test[0])[:4] == ["NumIters", "Seconds", "LearningRate", "TestNet"]


def test_parse_log_reports_a_bad_line(tmp_path):
    log = tmp_path / "bad.jsonl"
    log.write_text('{"kind": "train", "iter": 0, "loss": 1.0, "lr": 0.1}\n{"kind": "train", "iter": 1}\n')
    run = script("parse_log.py", log, tmp_path)
    assert run.returncode == 1
    assert f"{log}:2:1: error[E0800]: train record lacks loss, lr" in run.stderr
    run = script("parse_log.py", tmp_path / "absent.jsonl", tmp_path)
    assert run.returncode == 1 and "error[E0104]" in run.stderr
    run = script("parse_log.py", log)
    assert run.returncode == 2 and "error[E0802]" in run.stderr


def test_plot_training_log_png_and_svg(trained, tmp_path):
    from PIL import Image
    _, log = trained
    run = script("plot_training_log.py", log, tmp_path / "log.png")
    assert run.returncode == 0, run.stderr
    with Image.open(tmp_path / "log.png") as img:
        assert img.format == "PNG" and img.size == (1120, 380)
        assert len(img.convert("RGB").getcolors(maxcolors=1 << 20)) > 3   # lines were drawn
    run = script("plot_training_log.py", log, tmp_path / "log.svg", "--test", "accuracy", "aux_accuracy")
    assert run.returncode == 0, run.stderr
    svg = ET.parse(tmp_path / "log.svg").getroot()
    texts = {t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")}
    assert {"training loss", "test outputs", "accuracy", "aux_accuracy", "smoothed_loss"} <= texts
    series = [p for p in svg.iter("{http://www.w3.org/2000/svg}polyline") if p.get("stroke-width") == "2"]
    assert len(series) == 2 * 4                                         # each series and its legend swatch


def test_plot_training_log_errors(trained, tmp_path):
    _, log = trained
    run = script("plot_training_log.py", log, tmp_path / "x.png", "--test", "top5")
    assert run.returncode == 1 and "the log has no values for top5" in run.stderr
    assert "test outputs: aux_loss, aux_accuracy, loss, accuracy" in run.stderr
    run = script("plot_training_log.py", log, tmp_path / "x.unknown")
    assert run.returncode == 1 and "unknown image format" in run.stderr


def test_draw_net_positional_like_caffe(tmp_path):
    run = script("draw_net.py", tiny_net(tmp_path), tmp_path / "tiny.dot", "--bp-mode", "MULTIWAY")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "tiny.dot").read_text().lstrip().startswith("digraph")


def test_convert_net_positional(tmp_path):
    run = script("convert_net.py", tiny_net(tmp_path), tmp_path / "tiny.py", "--phase", "TEST")
    assert run.returncode == 0, run.stderr
    compile((tmp_path / "tiny.py").read_text(), "tiny.py", "exec")


def test_time_net(tmp_path):
    run = script("time_net.py", tiny_net(tmp_path), "--iterations", 1, "--warmup", 0)
    assert run.returncode == 0, run.stderr
    assert "conv1" in run.stdout


def test_scripts_share_the_cli_error_format(tmp_path):
    run = script("time_net.py", tmp_path / "absent.prototxt")
    assert run.returncode == 1 and "error[E0104]" in run.stderr
    run = script("train_net.py", "--no-such-flag")
    assert run.returncode == 2 and "error[E0802]" in run.stderr


def test_scripts_are_thin_wrappers():
    """No second implementation: each script only maps its arguments onto netspec's functions."""
    for name in ("train_net.py", "draw_net.py", "convert_net.py", "time_net.py", "parse_log.py",
                 "plot_training_log.py"):
        text = (TOOLS / name).read_text()
        assert "from netspec." in text and len(text.splitlines()) < 60, name


def test_plot_ticks_are_round_numbers_covering_the_range():
    from netspec.tools.plot_log import nice_ticks
    assert nice_ticks(0, 600) == [0, 200, 400, 600]
    assert nice_ticks(2.92, 3.02) == pytest.approx([2.92, 2.94, 2.96, 2.98, 3.0, 3.02])
    for lo, hi in ((0.0909, 0.1818), (-3.0, 7.5), (1e-7, 3e-7), (10, 11)):
        ticks = nice_ticks(lo, hi)
        assert 3 <= len(ticks) <= 7 and lo - 1e-12 <= ticks[0] and ticks[-1] <= hi + 1e-12
