"""The one CLI: every subcommand through main(argv) in-process, its error paths (exit codes,
one diagnostic format, no traceback), and a subprocess smoke test of `python -m netspec`."""
import importlib.util
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from netspec.cli.main import COMMANDS, main

from cli_util import DIGITS, tiny_net, tiny_solver
from conftest import REPO, SHARED

ORACLE_SOLVER = SHARED / "caffe-oracle" / "solvers" / "sgd_fixed_l2"
ALL = ["check", "convert", "train", "test", "schedule", "time", "draw"]


def run(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny net trained 4 RELAY iterations by `netspec train --log`: (folder, log records)."""
    folder = tmp_path_factory.mktemp("trained")
    solver = tiny_solver(folder)
    assert main(["train", "--solver", str(solver), "--log", str(folder / "log.jsonl")]) == 0
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return folder, records


def test_every_subcommand_is_in_the_dispatch_table():
    assert set(ALL) <= set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_has_examples_and_exits_0(command, capsys):
    code, out, _ = run([command, "--help"], capsys)
    assert code == 0
    assert f"usage: netspec {command}" in out
    examples = out.split("examples:\n", 1)[1]
    assert examples.lstrip().startswith(f"netspec {command}")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_examples_name_files_that_exist(command, capsys):
    examples = run([command, "--help"], capsys)[1].split("examples:\n", 1)[1]
    named = re.findall(r"models/\S+", examples)
    assert all((REPO / p).exists() for p in named), named


def test_shared_options_have_one_spelling(capsys):
    """Options that mean the same thing are spelled the same in every command that has them."""
    helps = {c: run([c, "--help"], capsys)[1] for c in ALL}
    for option, commands in {"--gpu [ID]": ["train", "test", "time"],
                             "--phase {TRAIN,TEST}": ["check", "convert", "test", "time", "draw"],
                             "--iterations N": ["train", "test", "time"], "--weights": ["train", "test"],
                             "--solver": ["train", "schedule", "time", "draw"],
                             "--input-shape BLOB=N,C,H,W": ALL}.items():
        assert all(option in helps[c] for c in commands), option


# -- each subcommand doing its job ------------------------------------------------------------

def test_check(capsys):
    code, out, _ = run(["check", DIGITS / "deep_plain.prototxt"], capsys)
    assert code == 0 and "conv12" in out and "main_loss" in out


def test_check_table_cuts_nothing_that_tells_layers_or_losses_apart(tmp_path, capsys):
    """Columns widen for long names and types, and the grads column (the last) names every
    loss, consecutive ones as a range: cut to 80 columns, GoogLeNet's rows read 'L1 L2~' and
    two of its layers 'inception_3a/relu_1~'."""
    losses = "".join(
        f'layer {{ name: "head{i}/classifier_with_a_long_name" type: "InnerProduct" bottom: "x" '
        f'top: "c{i}" inner_product_param {{ num_output: 3 }} }}\n'
        f'layer {{ name: "loss{i}" type: "SoftmaxWithLoss" bottom: "c{i}" bottom: "label" top: "l{i}" }}\n'
        for i in range(4))
    net = tmp_path / "wide.prototxt"
    net.write_text('layer { name: "data" type: "Input" top: "data" top: "label" input_param { '
                   'shape { dim: 2 dim: 3 dim: 4 dim: 4 } shape { dim: 2 } } }\n'
                   'layer { name: "trunk/relu_before_the_heads" type: "ReLU" bottom: "data" top: "x" }\n'
                   + losses)
    code, out, _ = run(["check", net], capsys)
    rows = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(" ")}
    assert code == 0 and rows["trunk/relu_before_the_heads"].endswith(" L1-L4")
    assert rows["head2/classifier_with_a_long_name"].endswith(" L3")
    assert rows["head3/classifier_with_a_long_name"].split()[1:3] == ["InnerProduct", "(2x3)"]
    assert rows["loss0"].split()[1] == "SoftmaxWithLoss"
    assert "~" not in out


@pytest.mark.parametrize("ids, cell", [([], "-"), ([2], "L2"), ([1, 2], "L1 L2"), ([1, 3], "L1 L3"),
                                       ([1, 2, 3, 5], "L1-L3 L5"), ([2, 4, 5, 6, 7], "L2 L4-L7")])
def test_grads_cell_writes_three_or_more_consecutive_losses_as_a_range(ids, cell):
    from netspec.cli.check_cmd import _loss_set
    assert _loss_set(ids) == cell


def test_test_given_a_solver_names_the_net_to_pass_instead(capsys):
    code, _, err = run(["test", "--model", DIGITS / "solver_relay.prototxt", "--weights", "w.netspec"], capsys)
    assert code == 1 and "'solver_relay.prototxt' is a solver file, not a net" in err.replace(str(DIGITS) + "/", "")
    assert f"help: pass the net it names instead: '{DIGITS / 'deep_plain_relay.prototxt'}'" in err


def test_check_title_keeps_the_phase_behind_a_long_path(tmp_path, capsys):
    deep = tmp_path / ("a_rather_long_folder_name_" * 3) / "deep_plain.prototxt"
    deep.parent.mkdir()
    deep.write_text((DIGITS / "deep_plain.prototxt").read_text())
    code, out, _ = run(["check", deep, "--phase", "TEST"], capsys)
    assert code == 0 and out.splitlines()[:2] == ["net 'DigitsDeepPlain', phase TEST", f"  {deep}"]


def test_convert_writes_a_module_with_the_same_outputs(tmp_path, capsys):
    net = tiny_net(tmp_path)
    code, out, _ = run(["convert", net, "--phase", "TEST", "-o", tmp_path / "tiny.py"], capsys)
    assert code == 0 and "wrote" in out
    spec = importlib.util.spec_from_file_location("tiny_standalone", tmp_path / "tiny.py")
    standalone = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(standalone)
    import netspec
    compiled = netspec.Net(net, phase="TEST")
    model = standalone.Tiny().eval()
    model.load_state_dict(compiled.compiled.module.state_dict())
    with torch.no_grad():
        ours = compiled.forward()
        theirs = model(data=compiled.blobs["data"], label=compiled.blobs["label"])
    assert set(theirs) == set(ours) and all(torch.equal(theirs[k], ours[k]) for k in ours)


def test_train_logs_json_lines(trained):
    folder, records = trained
    assert [r["iter"] for r in records if r["kind"] == "train"] == [0, 1, 2, 3]
    tests = [r for r in records if r["kind"] == "test"]
    assert [r["iter"] for r in tests] == [2, 4]
    assert set(tests[0]["outputs"]) == {"aux_loss", "aux_accuracy", "loss", "accuracy"}
    assert (folder / "tiny_iter_4.netspec").is_file()


def test_train_from_net_save_weights(tmp_path, capsys):
    """Net.save writes weights: --weights initialises from them, --snapshot says why it cannot resume."""
    import netspec
    solver = tiny_solver(tmp_path)
    saved = netspec.Net(tmp_path / "tiny.prototxt", phase="TRAIN").save(tmp_path / "w.netspec")
    code, _, err = run(["train", "--solver", solver, "--snapshot", saved], capsys)
    assert code == 1 and "error[E0700]" in err and "holds weights only" in err
    code, out, _ = run(["train", "--solver", solver, "--weights", saved, "--iterations", 1], capsys)
    assert code == 0 and "Optimization Done." in out


def _means(out: str) -> dict[str, float]:
    return {line.split(" = ")[0]: float(line.split(" = ")[1].split()[0])
            for line in out.splitlines() if " = " in line and not line.startswith("Batch")}


def test_test_scores_the_snapshot_as_the_solver_did(trained, capsys):
    """One batch of `netspec test` with the final snapshot is the solver's last test pass."""
    folder, records = trained
    code, out, _ = run(["test", "--model", folder / "tiny.prototxt",
                        "--weights", folder / "tiny_iter_4.netspec", "--iterations", 1], capsys)
    assert code == 0
    last = [r for r in records if r["kind"] == "test"][-1]["outputs"]
    means = _means(out)
    assert set(last) <= set(means)
    assert all(means[k] == pytest.approx(v, rel=1e-5, abs=1e-6) for k, v in last.items())
    loss_line = next(line for line in out.splitlines() if line.startswith("Loss: "))
    assert float(loss_line.split()[1]) == pytest.approx(0.3 * last["aux_loss"] + last["loss"], rel=1e-5)


def test_test_averages_every_output_over_the_batches(trained, capsys):
    folder, _ = trained
    code, out, _ = run(["test", "--model", folder / "tiny.prototxt",
                        "--weights", folder / "tiny_iter_4.netspec", "--iterations", 3], capsys)
    assert code == 0
    batches: dict[str, list[float]] = {}
    for line in out.splitlines():
        if line.startswith("Batch "):
            name, value = line.split(", ", 1)[1].split(" = ")
            batches.setdefault(name, []).append(float(value))
    means = _means(out)
    assert all(len(v) == 3 for v in batches.values()) and len(batches) == 4
    assert all(means[k] == pytest.approx(np.mean(v), rel=1e-5) for k, v in batches.items())


@pytest.mark.skipif(not ORACLE_SOLVER.is_dir(), reason="../shared/caffe-oracle absent")
def test_test_reads_a_caffemodel_and_matches_caffe(capsys, monkeypatch):
    """Caffe's first training loss (init.caffemodel on batch 0) is netspec test's batch 0."""
    monkeypatch.chdir(ORACLE_SOLVER)        # Caffe resolves data_list.txt against the cwd
    code, out, _ = run(["test", "--model", "net.prototxt", "--weights", "init.caffemodel",
                        "--iterations", 1], capsys)
    assert code == 0
    caffe = float(np.load("trajectory.npz")["loss"][0])
    assert _means(out)["loss"] == pytest.approx(caffe, rel=1e-4)


def test_schedule(capsys):
    code, out, _ = run(["schedule", "--solver", DIGITS / "solver_multiway.prototxt"], capsys)
    assert code == 0 and "MULTIWAY schedule" in out and "update order" in out


def test_time(tmp_path, capsys):
    code, out, _ = run(["time", tiny_net(tmp_path), "--iterations", 1, "--warmup", 0], capsys)
    assert code == 0 and "conv1" in out and "forward" in out.lower()


def test_draw(tmp_path, capsys):
    code, out, _ = run(["draw", tiny_net(tmp_path), "--bp-mode", "RELAY", "-o", tmp_path / "t.svg"], capsys)
    assert code == 0 and (tmp_path / "t.svg").read_text().startswith("<?xml")


# -- error paths: exit codes and one format ---------------------------------------------------

MISSING = "no/such/net.prototxt"
BAD_FILE = {
    "check": ["check", MISSING],
    "convert": ["convert", MISSING, "-o", "x.py"],
    "train": ["train", "--solver", MISSING],
    "test": ["test", "--model", MISSING, "--weights", "w.netspec"],
    "schedule": ["schedule", "--solver", MISSING],
    "time": ["time", MISSING],
    "draw": ["draw", MISSING, "-o", "x.svg"],
}


@pytest.mark.parametrize("command", ALL)
def test_a_missing_file_is_a_user_error(command, capsys):
    code, out, err = run(BAD_FILE[command], capsys)
    assert code == 1
    assert f"error[E0104]: cannot read '{MISSING}'" in err and err.rstrip().endswith("1 error found")


@pytest.mark.parametrize("command", ALL)
def test_a_bad_option_is_a_usage_error(command, capsys):
    code, _, err = run(BAD_FILE[command] + ["--no-such-option"], capsys)
    assert code == 2
    assert err.startswith("error[E0802]: netspec") and "--no-such-option" in err
    assert "note: usage: netspec" in err


@pytest.mark.parametrize("command", ALL)
def test_json_format_for_both_kinds_of_error(command, capsys):
    for argv, code, diag in ((BAD_FILE[command], 1, "E0104"), (BAD_FILE[command] + ["--bogus"], 2, "E0802")):
        got, _, err = run(["--format", "json"] + argv, capsys)
        items = json.loads(err)
        assert got == code and [d["code"] for d in items] == [diag] and items[0]["severity"] == "error"


def test_usage_errors(capsys):
    assert run([], capsys)[0] == 2                                         # no command
    assert run(["frobnicate"], capsys)[0] == 2
    code, _, err = run(["test", "--model", "n.prototxt", "--weights", "w", "--iterations", "0"], capsys)
    assert code == 2 and "expected a positive integer, got '0'" in err
    code, _, err = run(["time", "n.prototxt", "--gpu", "first"], capsys)
    assert code == 2 and "expected a GPU id" in err
    assert run(["draw", "n.prototxt", "-o", "x.svg", "--bp-mode", "FAST"], capsys)[0] == 2


def test_user_errors_beyond_missing_files(trained, tmp_path, capsys):
    folder, _ = trained
    code, _, err = run(["test", "--model", folder / "tiny.prototxt", "--weights", folder / "nope.netspec"], capsys)
    assert code == 1 and "error[E0700]" in err and "does not exist" in err
    code, _, err = run(["test", "--model", DIGITS / "solver_relay.prototxt", "--weights", "w"], capsys)
    assert code == 1 and "error[E0800]" in err and "is a solver file" in err
    code, _, err = run(["convert", tiny_net(tmp_path), "-o", tmp_path / "no" / "dir" / "x.py"], capsys)
    assert code == 1 and "error[E0104]" in err
    code, _, err = run(["draw", tiny_net(tmp_path), "-o", tmp_path / "x.bmpx"], capsys)
    assert code == 1 and "error[E0800]" in err


def test_test_of_a_net_without_data_layers(tmp_path, capsys):
    net = tmp_path / "deploy.prototxt"
    net.write_text('name: "d" input: "data" input_shape { dim: 1 dim: 2 }\n'
                   'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                   'inner_product_param { num_output: 2 } }\n')
    import netspec
    netspec.Net(net).save(tmp_path / "w.netspec")
    code, _, err = run(["test", "--model", net, "--weights", tmp_path / "w.netspec"], capsys)
    assert code == 1 and "has no data layer to test on" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
@pytest.mark.parametrize("command", ["test", "time"])
def test_gpu_without_cuda_is_a_user_error(command, trained, capsys):
    folder, _ = trained
    argv = (["test", "--model", folder / "tiny.prototxt", "--weights", folder / "tiny_iter_4.netspec"]
            if command == "test" else ["time", folder / "tiny.prototxt"])
    code, _, err = run(argv + ["--gpu"], capsys)
    assert code == 1 and "error[E0801]" in err


@pytest.mark.cuda
def test_test_on_the_gpu_matches_the_cpu(trained, capsys):
    folder, _ = trained
    argv = ["test", "--model", folder / "tiny.prototxt", "--weights", folder / "tiny_iter_4.netspec",
            "--iterations", 2]
    cpu, gpu = run(argv, capsys), run(argv + ["--gpu", "0"], capsys)
    assert cpu[0] == gpu[0] == 0
    a, b = _means(cpu[1]), _means(gpu[1])
    assert all(b[k] == pytest.approx(v, rel=1e-4, abs=1e-5) for k, v in a.items())


# -- the installed command --------------------------------------------------------------------

def test_python_dash_m_netspec_smoke():
    ok = subprocess.run([sys.executable, "-m", "netspec", "check", str(DIGITS / "deep_plain.prototxt")],
                        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "main_loss" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "netspec", "check", MISSING],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 1 and "error[E0104]" in bad.stderr and "Traceback" not in bad.stderr


def test_no_top_level_tools_package_is_installed():
    """pyproject's package discovery finds netspec and its subpackages only."""
    import tomllib

    from setuptools import find_packages
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    found = find_packages(str(REPO), **config)
    assert "netspec" in found and "netspec.cli" in found
    assert all(p == "netspec" or p.startswith("netspec.") for p in found), found
    assert (REPO / "tools" / "draw_net.py").is_file() and not (REPO / "tools" / "__init__.py").exists()
