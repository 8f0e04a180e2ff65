"""Smoke tests of the digits experiments: the one command runs end to end on a few iterations.

They check the structure of what the experiment writes (tables, JSON, SVG), not its
numbers; the numbers are in docs/experiment.md.
"""
import json
import re
import xml.etree.ElementTree as ET

import pytest
import torch

from experiments import gradients, run_all, run_modes
from experiments.common import EXITS, MODES, net_copy, set_field, solver_net

SECTIONS = ("modes", "cost", "gradients")


def test_set_field_replaces_or_appends():
    text = 'net: "a.prototxt"\nrandom_seed: 1\n'
    assert "random_seed: 7" in set_field(text, "random_seed", "7")
    assert "random_seed: 1" not in set_field(text, "random_seed", "7")
    assert set_field(text, "max_iter", "3").rstrip().endswith("max_iter: 3")


def test_net_copy_inits_and_frozen_trunk(tmp_path):
    gauss = net_copy(tmp_path, "gaussian", freeze_trunk=True).read_text()
    assert 'type: "msra"' not in gauss and gauss.count('type: "gaussian" std: 0.01') == 12 + 4
    assert set(re.findall(r"lr_mult: (\S+)", gauss)) == {"0"}
    assert 'source: "/' in gauss                       # data lists made absolute
    with pytest.raises(ValueError):
        net_copy(tmp_path, "xavier")


def test_every_mode_trains_its_own_copy_of_the_net():
    """MW-BP runs on the net without scopes, RELAY on the Relay-scoped copy, the hybrid on the
    copy whose scopes bind MULTIWAY too; the hybrid is its own row."""
    nets = {m: solver_net(m).name for m in MODES}
    assert nets["MULTIWAY"] == nets["JOINT"] == nets["STANDARD"] == "deep_plain.prototxt"
    assert nets["RELAY"] == "deep_plain_relay.prototxt"
    assert nets["MW-BP/Relay hybrid"] == "deep_plain_hybrid.prototxt"


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as run_all uses (it sets the count for its process); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_run_all_writes_every_table_and_the_plot(tmp_path):
    doc = tmp_path / "experiment.md"
    markers = "".join(f"<!-- {s}:begin -->\nold\n<!-- {s}:end -->\n" for s in SECTIONS)
    doc.write_text("# prose kept\n" + markers)
    assert run_all.main(["--seeds", "1", "--iters", "2", "--probe-iters", "1", "--inits", "msra",
                         "--grad-iters", "0", "1", "--cost-rounds", "1", "--cost-burst", "1",
                         "--docs", str(tmp_path), "--keep-denormals"]) == 0
    runs = json.loads((tmp_path / "experiment_modes.json").read_text())["runs"]
    assert [r["mode"] for r in runs] == list(MODES)
    for r in runs:
        assert set(r["error"]) == set(EXITS) and all(0 <= e <= 100 for e in r["error"].values())
        assert r["ms_per_iter"] > 0 and r["init"] == "msra" and r["seed"] == 1
    assert next(r for r in runs if r["mode"] == "STANDARD")["probed"] == ["exit1", "exit2", "exit3"]
    cost = json.loads((tmp_path / "experiment_cost.json").read_text())
    assert set(cost) == set(MODES) and cost["STANDARD"]["ratio"] == [1.0]
    text = doc.read_text()
    assert text.startswith("# prose kept\n") and "old" not in text
    for mode in MODES:
        assert f"| {mode} |" in text
    assert "| msra | 1 |" in text and "python -m experiments.run_all --seeds 1" in text
    svg = ET.parse(tmp_path / "experiment_gradients.svg").getroot()
    assert len(svg.findall("{http://www.w3.org/2000/svg}polyline")) == 2   # one init x two iterations
    # --merge adds runs (here a constant-weight variant) to the table instead of replacing it
    assert run_all.main(["--parts", "modes", "--modes", "JOINT 0.3", "--seeds", "1", "--iters", "1",
                         "--inits", "msra", "--docs", str(tmp_path), "--merge", "--keep-denormals"]) == 0
    merged = json.loads((tmp_path / "experiment_modes.json").read_text())["runs"]
    assert [r["mode"] for r in merged] == [*MODES, "JOINT 0.3"] and "| JOINT 0.3 |" in doc.read_text()
    # --tables-only rewrites the section from the JSON file without training
    assert run_all.main(["--parts", "modes", "--tables-only", "--docs", str(tmp_path)]) == 0
    text = doc.read_text()
    assert "Tables rewritten from `experiment_modes.json`" in text and "| JOINT 0.3 |" in text


def test_gradients_at_init_msra_alive_gaussian_vanished(tmp_path):
    results = {r["init"]: r for r in gradients.run([0], seed=1)}
    msra, gauss = results["msra"]["curves"]["0"], results["gaussian"]["curves"]["0"]
    assert list(msra) == [f"conv{i}" for i in range(1, 13)]
    assert all(g > gradients.THRESHOLD for g in msra.values())      # msra keeps the gradient alive
    assert all(0 < g < gradients.THRESHOLD for g in gauss.values())  # std 0.01 at 12 layers does not
    assert results["gaussian"]["vanished"]["0"] == list(gauss)


def test_same_seed_same_run(tmp_path):
    """The seed reaches the init and the data order: two runs of one (mode, seed) agree."""
    a = run_modes.train_one("MULTIWAY", 3, 2, tmp_path)
    b = run_modes.train_one("MULTIWAY", 3, 2, tmp_path)
    assert a["error"] == b["error"] and a["final_loss"] == b["final_loss"]


def test_anytime_sweep_trains_tests_and_reads_the_verdict(capsys):
    """Two iterations of the dropout copy: four Dropout layers compile, train, and the early-exit
    verdict comes back as a table row (the numbers themselves are in docs/experiment.md)."""
    from experiments import anytime_sweep
    assert anytime_sweep.main(["--configs", "dropout0.5", "--seeds", "1", "--iters", "2"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("| dropout0.5 | 1 |"))
    accuracies, verdict = line.strip("| ").split(" | ")[2:4]
    assert len(accuracies.split(" / ")) == 4
    assert verdict == "monotone" or re.fullmatch(r"falls by \d+ sample\(s\)", verdict)


def test_with_dropout_puts_one_dropout_before_each_classifier(tmp_path):
    from experiments.anytime_sweep import with_dropout
    net = net_copy(tmp_path)
    with_dropout(net, 0.5)
    text = net.read_text()
    assert text.count('type: "Dropout"') == 4
    for head in ("exit1", "exit2", "exit3", "main"):
        assert text.index(f'name: "{head}_drop"') < text.index(f'name: "{head}_fc"')
