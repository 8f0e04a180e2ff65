"""Legacy formats (Caffe's upgrade_proto.cpp rules) and fork dialects.

``tests/legacy/NAME.prototxt`` is an old-format net or solver; ``NAME.upgraded.txt`` is
what ``netspec upgrade`` must print for it, reviewed against Caffe's UpgradeV0Net
(padding folding, V0 field -> *_param table), UpgradeNetDataTransformation,
UpgradeV1LayerParameter, UpgradeNetInput, UpgradeNetBatchNorm and UpgradeSolverType.
"""
from pathlib import Path

import pytest
import torch

from netspec.check import check_net, load
from netspec.cli.main import main
from netspec.cli.upgrade_cmd import upgraded_text
from netspec.compile.module import compile_net
from netspec.diagnostics import Diagnostics, NetspecError
from netspec.lower import NetState
from netspec.upgrade import layer_entries, upgrade_dialects, upgrade_net, upgrade_solver

LEGACY = Path(__file__).parent / "legacy"
GALLERY = sorted(LEGACY.glob("*.prototxt"))


@pytest.mark.parametrize("path", GALLERY, ids=[p.stem for p in GALLERY])
def test_upgrade_matches_the_reviewed_golden_file(path):
    text, steps = upgraded_text(path)
    assert steps, "a gallery file must need an upgrade"
    assert text == path.with_suffix(".upgraded.txt").read_text()
    again, more = upgraded_text(path.with_suffix(".upgraded.txt"))
    assert again == text and not more, "upgrading the upgraded form changes nothing"


NETS = [p for p in GALLERY if "solver" not in p.stem]


@pytest.mark.parametrize("path", NETS, ids=[p.stem for p in NETS])
def test_on_the_fly_upgrade_equals_the_printed_upgrade(path):
    """What netspec compiles from the legacy file is what `netspec upgrade` prints."""
    def layers(p):
        _, src = load(p)
        entries = [lp for lp, _ in layer_entries(src, Diagnostics())]
        for lp in entries:
            upgrade_dialects(lp)
        return [lp.SerializeToString(deterministic=True) for lp in entries]
    assert layers(path) == layers(path.with_suffix(".upgraded.txt"))


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


V0_PAD = """
name: "v0" input: "data" input_dim: 1 input_dim: 2 input_dim: 6 input_dim: 6
layers { layer { name: "pad" type: "padding" pad: 1 } bottom: "data" top: "padded" }
layers { layer { name: "conv" type: "conv" num_output: 3 kernelsize: 3 } bottom: "padded" top: "conv" }
"""
CURRENT_PAD = """
name: "v0" input: "data" input_dim: 1 input_dim: 2 input_dim: 6 input_dim: 6
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
"""


def test_v0_padding_layer_folds_into_the_convolution(tmp_path):
    """Same output shape and values as the hand-written padded convolution."""
    outs = []
    for name, text in (("v0.prototxt", V0_PAD), ("cur.prototxt", CURRENT_PAD)):
        _, src = load(write(tmp_path, name, text))
        net = check_net(src, NetState.of("TEST"))
        compiled = compile_net(net, seed=5)
        outs.append(compiled.module(data=torch.arange(72.0).reshape(1, 2, 6, 6))["conv"])
    assert outs[0].shape == (1, 3, 6, 6)
    assert torch.equal(outs[0], outs[1])


def test_v0_problems_are_diagnostics_not_crashes(tmp_path, capsys):
    bad_type = V0_PAD.replace('type: "conv"', 'type: "convolution"')
    assert main(["check", str(write(tmp_path, "t.prototxt", bad_type))]) == 1
    assert "unknown V0 layer type 'convolution'" in capsys.readouterr().err
    pad_relu = V0_PAD.replace('type: "conv" num_output: 3 kernelsize: 3', 'type: "relu"')
    assert main(["check", str(write(tmp_path, "r.prototxt", pad_relu))]) == 1
    assert "folds padding only into a one-input conv or pool" in capsys.readouterr().err
    assert main(["upgrade", str(tmp_path / "r.prototxt")]) == 1
    assert "cannot be upgraded" in capsys.readouterr().err


def test_v0_field_that_does_not_apply_is_dropped_with_a_warning():
    from netspec.proto import caffe_pb2
    net = caffe_pb2.NetParameter()
    conn = net.layers.add(bottom=["x"], top=["y"])
    conn.layer.name, conn.layer.type, conn.layer.num_output = "r", "relu", 4
    out, steps = upgrade_net(net)
    assert out.layer[0].type == "ReLU" and not out.layer[0].HasField("convolution_param")
    assert any("has no parameter 'num_output'" in s for s in steps)


def test_solver_type_upgrade_and_conflict():
    from netspec.proto import caffe_pb2
    p = caffe_pb2.SolverParameter(solver_type=caffe_pb2.SolverParameter.NESTEROV)
    out, steps = upgrade_solver(p)
    assert out.type == "Nesterov" and not out.HasField("solver_type") and steps
    with pytest.raises(ValueError, match="both"):
        upgrade_solver(caffe_pb2.SolverParameter(solver_type=1, type="SGD"))


def test_input_without_shape_is_only_dropped():
    """UpgradeNetInput: a bare ``input`` (old .caffemodel files) makes no Input layer."""
    from netspec.proto import caffe_pb2
    out, _ = upgrade_net(caffe_pb2.NetParameter(input=["data"]))
    assert not out.input and not out.layer


def test_inconsistent_input_fields_are_clear_errors():
    from netspec.proto import caffe_pb2
    with pytest.raises(ValueError, match="input_dim has 3 values"):
        upgrade_net(caffe_pb2.NetParameter(input=["a"], input_dim=[1, 2, 3]))
    two = caffe_pb2.NetParameter(input=["a", "b", "c"])
    two.input_shape.add(dim=[1]), two.input_shape.add(dim=[2])
    with pytest.raises(ValueError, match="2 input shapes for 3 inputs"):
        upgrade_net(two)


def test_upgrade_cli_writes_the_file(tmp_path, capsys):
    out = tmp_path / "new.prototxt"
    assert main(["upgrade", str(LEGACY / "v1_lenet.prototxt"), "-o", str(out)]) == 0
    assert out.read_text() == (LEGACY / "v1_lenet.upgraded.txt").read_text()
    assert "V1 layers -> layer" in capsys.readouterr().err
    assert main(["upgrade", str(LEGACY / "v1_solver.prototxt")]) == 0
    assert 'type: "Adam"' in capsys.readouterr().out


# ---------------------------------------------------------------- fork dialects

def test_ceil_mode_is_accepted_with_a_warning_and_means_round_mode(tmp_path, capsys):
    path = LEGACY / "ceil_mode_dialect.prototxt"
    assert main(["check", str(path)]) == 0
    err = capsys.readouterr().err
    assert "warning[W0501]" in err and "round_mode: FLOOR" in err
    _, src = load(path)
    net = check_net(src, NetState.of("TEST"))
    out = compile_net(net, seed=0).module(data=torch.randn(1, 2, 7, 7))
    assert out["p1"].shape[-1] == 3 and out["p2"].shape[-1] == 4


def test_ceil_mode_contradicting_round_mode_is_an_error(tmp_path, capsys):
    text = (LEGACY / "ceil_mode_dialect.prototxt").read_text().replace(
        "ceil_mode: false", "ceil_mode: false round_mode: CEIL")
    assert main(["check", str(write(tmp_path, "c.prototxt", text))]) == 1
    assert "contradicts round_mode" in capsys.readouterr().err
    with pytest.raises(NetspecError, match="contradicts"):
        upgraded_text(tmp_path / "c.prototxt")


SSD = """
name: "ssd" input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "prior" type: "PriorBox" bottom: "conv" bottom: "data" top: "prior"
        prior_box_param { min_size: 30 aspect_ratio: 2 flip: true } }
"""


def test_ssd_param_block_names_the_fork(tmp_path, capsys):
    assert main(["check", str(write(tmp_path, "ssd.prototxt", SSD))]) == 1
    err = capsys.readouterr().err
    assert "'prior_box_param' configures the PriorBox layer of SSD" in err
    assert "did you mean" not in err


def test_fork_layer_type_names_the_fork(tmp_path, capsys):
    text = SSD.replace("prior_box_param { min_size: 30 aspect_ratio: 2 flip: true }", "")
    assert main(["check", str(write(tmp_path, "t.prototxt", text))]) == 1
    assert "'PriorBox' is a layer of SSD" in capsys.readouterr().err


def test_unknown_fork_param_still_gets_the_generic_note(tmp_path, capsys):
    text = SSD.replace("prior_box_param", "my_fork_param")
    assert main(["check", str(write(tmp_path, "u.prototxt", text))]) == 1
    assert "not part of BVLC Caffe 1.0" in capsys.readouterr().err


def test_old_batchnorm_params_are_upgraded_with_a_warning(capsys):
    assert main(["check", str(LEGACY / "input_shape_batchnorm.prototxt")]) == 0
    assert "BatchNorm 'bn' declares its 3 statistics" in capsys.readouterr().err


V1_ENUMS = {"AdaDelta": "ADADELTA", "AdaGrad": "ADAGRAD", "Adam": "ADAM", "Nesterov": "NESTEROV",
            "RMSProp": "RMSPROP", "SGD": "SGD"}


@pytest.mark.parametrize("case", ["adadelta_poly", "rmsprop_exp_l1", "nesterov_multistep"])
def test_v1_solver_type_trains_like_caffe(case, tmp_path, monkeypatch):
    """The oracle's solver files rewritten with the V1 `solver_type` enum: still Caffe's trajectory."""
    import re
    import shutil

    import numpy as np

    from netspec.solve.solver import Solver
    from oracle_harness import ORACLE
    src = ORACLE / "solvers" / case
    if not src.exists():
        pytest.skip("no oracle")
    d = tmp_path / case
    shutil.copytree(src, d)
    text = (d / "solver.prototxt").read_text()
    text = re.sub(r'^type: "(\w+)"$', lambda m: f"solver_type: {V1_ENUMS[m.group(1)]}", text, flags=re.M)
    assert "solver_type:" in text
    (d / "solver.prototxt").write_text(text)
    monkeypatch.chdir(d)
    solver = Solver("solver.prototxt", log=lambda _: None)
    solver.step(12)
    traj = np.load(d / "trajectory.npz")
    for key in [k for k in traj.files if k.startswith("param/")]:
        np.testing.assert_allclose(solver.executor.params[key.split("/", 1)[1]].detach().numpy(),
                                   traj[key][12], rtol=1e-4, atol=1e-5 * np.abs(traj[key][12]).max())
    assert 'type: "' in upgraded_text(d / "solver.prototxt")[0]


def test_check_warns_on_solver_type_and_refuses_both(tmp_path, capsys):
    net = write(tmp_path, "n.prototxt", CURRENT_PAD)
    solver = write(tmp_path, "s.prototxt", f'net: "{net}"\nbase_lr: 0.1\nsolver_type: ADAGRAD\n')
    assert main(["check", str(solver)]) == 0
    assert 'read as type: "AdaGrad"' in capsys.readouterr().err
    solver.write_text(solver.read_text() + 'type: "SGD"\n')
    assert main(["check", str(solver)]) == 1
    assert "both solver_type" in capsys.readouterr().err
