"""The solver: training runs, snapshots and bit-identical resume, loss-weight schedules, errors."""
import math
from pathlib import Path

import pytest
import torch

from netspec.cli.main import main
from netspec.diagnostics import NetspecError
from netspec.solve.loss_weights import exit_depths
from netspec.solve.solver import Solver, read_snapshot

from conftest import REPO

DIGITS = REPO / "models" / "digits"
SHAPES = {"data": (64, 1, 8, 8), "label": (64,)}


def write_solver(tmp_path: Path, mode: str = "MULTIWAY", extra: str = "", **fields) -> Path:
    values = {"base_lr": 0.01, "momentum": 0.9, "lr_policy": '"step"', "gamma": 0.1, "stepsize": 4,
              "max_iter": 6, "display": 1, "random_seed": 7, "snapshot": 0,
              "snapshot_after_train": "false", "solver_mode": "CPU"}
    values.update(fields)
    body = "".join(f"{k}: {v}\n" for k, v in values.items())
    text = (f'net: "{DIGITS / "deep_plain.prototxt"}"\n{body}'
            f'snapshot_prefix: "{tmp_path / "snap"}"\nbp_mode: {mode}\nprimary_loss: "main_loss"\n{extra}')
    path = tmp_path / f"solver_{mode.lower()}.prototxt"
    path.write_text(text)
    return path


def weights(solver) -> dict:
    return {k: v.detach().clone() for k, v in solver.module.state_dict().items()}


@pytest.mark.parametrize("mode", ["STANDARD", "JOINT", "RELAY", "MULTIWAY"])
def test_every_mode_trains_and_lowers_the_loss(tmp_path, mode):
    s = Solver(write_solver(tmp_path, mode, max_iter=40, stepsize=1000),
               input_shapes=SHAPES, log=lambda _: None)
    first = s.step(1)[0]["loss"]
    recs = s.step(39)
    assert all(math.isfinite(r["loss"]) for r in recs)
    assert sum(r["loss"] for r in recs[-10:]) / 10 < first


def test_resume_is_bit_identical_on_cpu(tmp_path):
    path = write_solver(tmp_path, "MULTIWAY")
    straight = Solver(path, input_shapes=SHAPES, log=lambda _: None)
    straight.step(6)
    first = Solver(path, input_shapes=SHAPES, log=lambda _: None)
    first.step(3)
    snap = first.snapshot()
    resumed = Solver(path, input_shapes=SHAPES, log=lambda _: None)
    resumed.restore(snap)
    assert resumed.iter == 3
    resumed.step(3)
    a, b = weights(straight), weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    for slot, state in straight.executor.state.items():
        for name, hist in state.items():
            assert torch.equal(hist["history"], resumed.executor.state[slot][name]["history"])


def test_testing_leaves_the_training_trajectory_alone(tmp_path):
    """As in Caffe, a test pass draws nothing from the RNG the training net's Dropout uses: the
    same run with a test every 2 iterations and with none ends with the same weights."""
    text = (DIGITS / "deep_plain.prototxt").read_text()
    text = text.replace('source: "', f'source: "{DIGITS}/').replace(
        'layer { name: "main_fc"', 'layer { name: "main_drop" type: "Dropout" bottom: "main_pool" '
        'top: "main_pool" dropout_param { dropout_ratio: 0.5 } }\nlayer { name: "main_fc"')
    (tmp_path / "net.prototxt").write_text(text)
    runs = []
    for interval in (2, 1000):
        path = write_solver(tmp_path, "MULTIWAY", test_iter=1, test_interval=interval)
        path.write_text(path.read_text().replace(str(DIGITS / "deep_plain.prototxt"), str(tmp_path / "net.prototxt")))
        solver = Solver(path, log=lambda _: None, num_workers=0)
        state = torch.get_rng_state()
        solver.test()
        assert torch.equal(state, torch.get_rng_state())
        solver.step(6)
        runs.append(weights(solver))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_a_snapshot_killed_mid_write_never_replaces_the_last_good_one(tmp_path, monkeypatch):
    s = Solver(write_solver(tmp_path), input_shapes=SHAPES, log=lambda _: None)
    s.step(1)
    good = s.snapshot(tmp_path / "model.netspec")
    before = good.read_bytes()
    s.step(1)

    def die(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")
    monkeypatch.setattr(torch, "save", lambda obj, f: (f.write(b"partial"), die()))
    with pytest.raises(KeyboardInterrupt):
        s.snapshot(tmp_path / "model.netspec")
    assert good.read_bytes() == before
    assert read_snapshot(good)["iter"] == 1


def test_corrupt_snapshot_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.netspec"
    bad.write_bytes(b"\x00not a snapshot")
    with pytest.raises(NetspecError) as e:
        read_snapshot(bad)
    assert "not a readable netspec snapshot" in e.value.render()


def test_train_cli_logs_like_caffe_and_writes_jsonl(tmp_path, capsys):
    path = write_solver(tmp_path, "RELAY", max_iter=4, test_iter=1, test_interval=2)
    log = tmp_path / "log.jsonl"
    code = main(["train", "--solver", str(path), "--log", str(log),
                 "--input-shape", "data=64,1,8,8", "--input-shape", "label=64"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Iteration 0, lr = 0.01" in out and "Train net output #3: main_loss" in out
    assert "Test net output #" in out and "main_accuracy" in out and "exit1_accuracy" in out
    kinds = [line.split('"kind": "')[1].split('"')[0] for line in log.read_text().splitlines()]
    assert kinds.count("train") == 4 and "test" in kinds


def test_gpu_without_cuda_fails_clearly(tmp_path, capsys, monkeypatch):
    """The error names what asked for the GPU: the solver file, or --gpu on the command line."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = write_solver(tmp_path, solver_mode="GPU")
    assert main(["train", "--solver", str(path)]) == 1
    err = capsys.readouterr().err
    assert "the solver asks for the GPU (solver_mode: GPU" in err and "no CUDA device is available" in err
    cpu = write_solver(tmp_path, solver_mode="CPU")
    assert main(["train", "--solver", str(cpu), "--gpu", "0"]) == 1
    err = capsys.readouterr().err
    assert "error[E0600]: --gpu 0 asks for CUDA but no CUDA device is available" in err
    assert "run on the CPU with --gpu cpu" in err and "solver_mode" not in err


def test_train_on_a_net_file_is_a_usage_error(capsys):
    assert main(["train", "--solver", str(DIGITS / "deep_plain.prototxt")]) == 1
    assert "is a net, not a solver file" in capsys.readouterr().err


# ------------------------------------------------------------------ loss-weight schedules
def _weights(tmp_path, schedule: str, **fields):
    s = Solver(write_solver(tmp_path, "MULTIWAY", f"loss_weight_schedule {{ {schedule} }}\n", **fields),
               input_shapes=SHAPES, log=lambda _: None)
    return s, s.weights


def test_multiway_power_gammas_follow_eq5(tmp_path):
    s, lw = _weights(tmp_path, "type: MULTIWAY_POWER nu: 2")
    depths = exit_depths(s.net)
    # L_i: the trunk depth where exit i attaches (conv3, conv6, conv9), its own branch not counted
    assert {k: depths[k] for k in ("exit1_loss", "exit2_loss", "exit3_loss")} == \
        {"exit1_loss": 3, "exit2_loss": 6, "exit3_loss": 9}
    g = lw.gammas(0)
    assert g["main_loss"] == 1.0
    assert g["exit1_loss"] == pytest.approx((3 / 9) ** 2) and round(g["exit1_loss"], 2) == 0.11
    assert g["exit2_loss"] == pytest.approx((6 / 9) ** 2) and round(g["exit2_loss"], 2) == 0.44
    assert g["exit3_loss"] == pytest.approx(1.0)
    assert lw.factors(0)["exit1_loss"] == pytest.approx((1 / 9) / float(torch.tensor(0.3)))


def test_adaptive_nu_doubles_or_halves_at_each_lr_drop(tmp_path):
    _, one = _weights(tmp_path, "type: ADAPTIVE_I")
    assert [one.nu(i) for i in (0, 3, 4, 5)] == [0.5, 0.5, 1.0, 1.0]   # stepsize 4
    _, two = _weights(tmp_path, "type: ADAPTIVE_II")
    assert [two.nu(i) for i in (0, 4, 8)] == [2.0, 1.0, 0.5]


def test_cnds_decay_is_eq2_per_epoch(tmp_path):
    _, lw = _weights(tmp_path, "type: CNDS_DECAY epochs: 4 unit: EPOCH", iters_per_epoch=10)
    alpha = [lw.factors(e * 10)["exit1_loss"] for e in range(5)]
    expect, a = [], 1.0
    for t in range(5):
        if t:
            a *= 1 - t / 4
        expect.append(a)
    assert alpha == pytest.approx(expect)
    assert "main_loss" not in lw.factors(30)


def test_bf16_autocast_and_channels_last_train_on_cpu(tmp_path):
    path = write_solver(tmp_path, "MULTIWAY", 'amp: "bf16"\nchannels_last: true\n', max_iter=3)
    s = Solver(path, input_shapes=SHAPES, log=lambda _: None)
    recs = s.step(3)
    assert all(math.isfinite(r["loss"]) for r in recs)
    assert s.module.conv1.weight.dtype == torch.float32          # master weights stay float32


def test_bad_amp_value_is_a_clear_error(tmp_path):
    with pytest.raises(NetspecError) as e:
        Solver(write_solver(tmp_path, extra='amp: "fp8"\n'), input_shapes=SHAPES, log=lambda _: None)
    assert "unknown amp setting 'fp8'" in e.value.render()
