"""The shipped ResNet-56 MW-BP port: its files check, and one scheduled iteration runs per mode.

The nets read CIFAR-10 through TorchvisionData, which a test machine does not have, so
the test swaps the two data layers for an Input layer of two 8x8 images (global pooling
makes every head size-independent) and feeds the batch itself; everything else is the
shipped file unchanged.
"""
import re
from pathlib import Path

import pytest
import torch

from netspec.cli.main import main as netspec
from netspec.solve.solver import Solver

RESNET = Path(__file__).resolve().parent.parent / "models" / "resnet56"
EXITS = ("exit15", "exit25", "exit35", "exit45")
SOLVERS = sorted(p.name for p in RESNET.glob("solver_*.prototxt"))
DATA = re.compile(r'layer \{ name: "cifar" type: "TorchvisionData".*?'
                  r'batch_size: \d+ shuffle: \w+ \} \}\n', re.S)
INPUT = ('layer { name: "data" type: "Input" top: "data" top: "label"\n'
         '  input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }\n')


def tiny_copy(tmp_path: Path, solver_name: str) -> Path:
    """The shipped solver and its net in ``tmp_path``, the CIFAR layers replaced by a 2-image Input."""
    solver = (RESNET / solver_name).read_text()
    net_name = re.search(r'^net: "models/resnet56/(.+?)"', solver, re.M).group(1)
    net, n = DATA.subn("", (RESNET / net_name).read_text())
    assert n == 2, "the shipped net should have a TRAIN and a TEST TorchvisionData layer"
    header = 'name: "MwResNet-56-CIFAR"\n'
    (tmp_path / net_name).write_text(net.replace(header, header + INPUT))
    solver = solver.replace(f'"models/resnet56/{net_name}"', f'"{tmp_path / net_name}"')
    solver = re.sub(r"^snapshot_prefix:.*$", f'snapshot_prefix: "{tmp_path}/snap"', solver, flags=re.M)
    (tmp_path / solver_name).write_text(solver)
    return tmp_path / solver_name


def test_every_mode_has_a_solver():
    assert SOLVERS == [f"solver_{m}.prototxt" for m in ("joint", "multiway", "relay", "standard")]


def test_exits_follow_the_papers_layers_15_25_35_45():
    """MW-BP sec. 5.1: exits after weight layer 15/25/35/45 = after residual blocks 7, 12, 17, 22."""
    text = (RESNET / "resnet56_mwbp.prototxt").read_text()
    pools = dict(re.findall(r'name: "(exit\d+)_pool" type: "Pooling" bottom: "(\w+)"', text))
    assert pools == {"exit15": "res1_7", "exit25": "res2_3", "exit35": "res2_8", "exit45": "res3_4"}
    assert len(re.findall(r'type: "Convolution"', text)) == 55 + 2   # 1 + 54 3x3, two 1x1 projections
    relay = (RESNET / "resnet56_relay.prototxt").read_text()
    # Relay BP with c = 1: loss k's gradient stops at the blob of exit k-2
    stops = dict(re.findall(r'name: "(\w*?)_?loss".*?gradient_scope \{ stop_at: "(\w+)" \}', relay))
    assert stops == {"exit35": "res1_7", "exit45": "res2_3", "": "res2_8"}


@pytest.mark.parametrize("solver_name", SOLVERS)
def test_check_and_schedule_commands_accept_the_shipped_solver(solver_name, capsys):
    """The files as shipped (CIFAR data layers and all), from the repository root."""
    solver = str(RESNET / solver_name)
    assert netspec(["check", solver]) == 0
    assert "861,563 parameters" in capsys.readouterr().out
    assert netspec(["schedule", "--solver", solver]) == 0
    mode = solver_name[len("solver_"):-len(".prototxt")].upper()
    assert f"{mode} schedule, primary loss 'loss'" in capsys.readouterr().out


@pytest.mark.parametrize("solver_name", SOLVERS)
def test_one_scheduled_iteration(tmp_path, solver_name):
    solver = Solver(tiny_copy(tmp_path, solver_name), log=lambda line: None)
    params = dict(solver.module.named_parameters())
    before = {k: v.detach().clone() for k, v in params.items()}
    gen = torch.Generator().manual_seed(0)
    batch = {"data": torch.randn(2, 3, 8, 8, generator=gen), "label": torch.tensor([3.0, 7.0])}
    rec = solver.step(1, batches=[batch])[0]
    assert all(torch.isfinite(torch.tensor(v)) for v in rec["losses"].values())
    changed = {k for k, v in params.items() if not torch.equal(v.detach(), before[k])}
    main = solver.executor.main
    assert main.blob_key("conv1", 0) in changed and main.blob_key("fc", 0) in changed
    heads = {e: f"{e}_fc" in main.generated.attrs and main.blob_key(f"{e}_fc", 0) in changed for e in EXITS}
    if solver.schedule.mode == "STANDARD":   # only the primary loss trains; the exits are pruned
        assert set(rec["losses"]) == {"loss"} and not any(heads.values())
    else:
        assert set(rec["losses"]) == {f"{e}_loss" for e in EXITS} | {"loss"} and all(heads.values())


# ------------------------------------------------------------------ the digits example
DIGITS = RESNET.parent / "digits"


def _schedule(solver_path):
    from netspec.check import check_net
    from netspec.schedule import build_schedule
    from netspec.solve.solver import read_solver
    spec = read_solver(solver_path)
    net = check_net(spec.train, spec.train_state, {})
    return net, build_schedule(net, spec.param)


@pytest.mark.parametrize("name, blobs, scoped", [
    ("multiway", [8, 14, 20, 26], ()),              # MW-BP: every layer from the input to each loss
    ("multiway_naive", [8, 14, 20, 26], ()),
    ("multiway_hybrid", [8, 12, 12, 12], ("exit1_loss", "exit2_loss", "exit3_loss", "main_loss")),
])
def test_digits_multiway_solvers(name, blobs, scoped):
    _, sched = _schedule(DIGITS / f"solver_{name}.prototxt")
    assert sched.mode == "MULTIWAY" and sched.scoped == scoped
    assert [len(sched.params[l]) for l in sched.losses] == blobs


def test_digits_relay_scopes_bind_relay_only():
    net, sched = _schedule(DIGITS / "solver_relay.prototxt")
    assert all(l.max_depth == 6 and l.modes == ("RELAY",) for l in net.losses)
    assert len(sched.scoped) == 4
    own = ("#", "net:", "bp_mode:", "snapshot_prefix:")
    shared = [line for line in (DIGITS / "solver_relay.prototxt").read_text().splitlines()
              if line and not line.startswith(own)]
    assert any(line.startswith("base_lr:") for line in shared)
    for mode in ("standard", "joint", "multiway", "multiway_naive", "multiway_hybrid"):
        lines = (DIGITS / f"solver_{mode}.prototxt").read_text().splitlines()
        assert [line for line in shared if line not in lines] == [], mode   # the same settings


def test_digits_gammas_count_the_trunk_depth_where_each_exit_attaches():
    from netspec.solve.loss_weights import LossWeights, exit_depths
    from netspec.solve.solver import read_solver
    net, sched = _schedule(DIGITS / "solver_multiway.prototxt")
    depths = exit_depths(net)
    assert [depths[f"exit{i}_loss"] for i in (1, 2, 3)] == [3, 6, 9]
    gammas = LossWeights(read_solver(DIGITS / "solver_multiway.prototxt").param, net, sched.primary).gammas(0)
    assert [round(gammas[f"exit{i}_loss"], 2) for i in (1, 2, 3)] == [0.11, 0.44, 1.0]


def test_resnet56_gammas_follow_the_public_code():
    """(n * p_i + 1) / (n * p_lastaux + 1) with n = 2 convolutions per block, p = 7, 12, 17, 22."""
    from netspec.solve.loss_weights import exit_depths
    net, _ = _schedule(RESNET / "solver_multiway.prototxt")
    d = exit_depths(net)
    ratios = [d[f"{e}_loss"] / d["exit45_loss"] for e in EXITS]
    assert ratios == pytest.approx([(2 * p + 1) / (2 * 22 + 1) for p in (7, 12, 17, 22)])
