"""Caffe .caffemodel weights in and out (netspec.interop), against real Caffe's files.

* export: every oracle weights.caffemodel (written by Caffe's Net::ToProto), loaded into
  netspec and written back, is byte-identical;
* import: the V1 ``layers`` form and legacy 4-D blob shapes load like the current form;
* round trip: prototxt -> netspec -> .caffemodel -> netspec gives identical outputs;
* damaged, truncated and mismatched files are clear errors that leave the net untouched;
* the CLI: ``train --weights``, ``convert --to-caffemodel``, BINARYPROTO snapshots.
"""
import shutil

import numpy as np
import pytest
import torch

from netspec.check import check_net, load
from netspec.cli.main import main
from netspec.compile.module import compile_net
from netspec.diagnostics import NetspecError
from netspec.interop.caffemodel import copy_blobs, load_caffemodel, load_weights_file, read_caffemodel
from netspec.interop.export import caffemodel_bytes, write_caffemodel
from netspec.lower import NetState
from netspec.proto import caffe_pb2
from conftest import REPO, shared_path
from oracle_harness import ORACLE, manifest

NET_CASES = [c for c in manifest() if c["kind"] in ("layer", "net")]
SOLVER_CASES = [c for c in manifest() if c["kind"] == "solver"]


def compiled_for(path, phase="TRAIN", seed=0, input_shapes=None):
    """Every layer compiled (every blob an output), fillers seeded."""
    _, src = load(path)
    net = check_net(src, NetState.of(phase), input_shapes)
    return compile_net(net, outputs=[b for n in net.graph.layers() for b in n.tops], seed=seed)


def state_of(compiled):
    return {k: v.detach().clone() for k, v in compiled.module.state_dict().items()}


# ---------------------------------------------------------------- export vs real Caffe

@pytest.mark.parametrize("case", NET_CASES, ids=[c["name"] for c in NET_CASES])
def test_export_is_byte_identical_to_caffe(case, monkeypatch):
    """read(Caffe's file) -> netspec -> write == Caffe's file, byte for byte."""
    d = ORACLE / case["dir"]
    monkeypatch.chdir(d)
    compiled = compiled_for(d / "net.prototxt", case["phase"])
    copy_blobs(compiled, read_caffemodel(d / "weights.caffemodel"), strict=True)
    assert caffemodel_bytes(compiled) == (d / "weights.caffemodel").read_bytes()


@pytest.mark.parametrize("case", SOLVER_CASES, ids=[c["name"] for c in SOLVER_CASES])
def test_export_of_solver_init_weights_is_byte_identical(case, monkeypatch):
    d = ORACLE / case["dir"]
    monkeypatch.chdir(d)
    compiled = compiled_for(d / "net.prototxt", "TRAIN")
    copy_blobs(compiled, read_caffemodel(d / "init.caffemodel"), strict=True)
    assert caffemodel_bytes(compiled) == (d / "init.caffemodel").read_bytes()


# ---------------------------------------------------------------- import forms

V1_TYPE = {v: k for k, v in __import__("netspec.upgrade", fromlist=["V1_TYPES"]).V1_TYPES.items()}


def as_v1_caffemodel(path, out):
    """A current-form .caffemodel rewritten as an old Caffe writes it: V1 ``layers``, blobs
    with legacy num/channels/height/width (padded with leading 1s)."""
    net = caffe_pb2.NetParameter()
    net.ParseFromString(path.read_bytes())
    old = caffe_pb2.NetParameter(name=net.name)
    for lp in net.layer:
        v1 = old.layers.add(name=lp.name, bottom=lp.bottom, top=lp.top)
        if lp.type in V1_TYPE:
            v1.type = caffe_pb2.V1LayerParameter.LayerType.Value(V1_TYPE[lp.type])
        for b in lp.blobs:
            dims = (1,) * (4 - len(b.shape.dim)) + tuple(b.shape.dim)
            v1.blobs.add(num=dims[0], channels=dims[1], height=dims[2], width=dims[3], data=b.data)
    out.write_bytes(old.SerializeToString())
    return out


def test_v1_caffemodel_loads_like_the_current_form(tmp_path, monkeypatch):
    d = shared_path("caffe-oracle", "nets", "lenet_train")
    monkeypatch.chdir(d)
    current, legacy = compiled_for(d / "net.prototxt"), compiled_for(d / "net.prototxt", seed=7)
    assert load_caffemodel(current, d / "weights.caffemodel") == []
    assert load_caffemodel(legacy, as_v1_caffemodel(d / "weights.caffemodel", tmp_path / "v1.caffemodel")) == []
    a, b = state_of(current), state_of(legacy)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_v0_caffemodel_and_hdf5_weights_load_like_the_current_form(tmp_path, monkeypatch):
    """V0 entries keep their blobs inside ``layers { layer { blobs } }``; HDF5 weights
    (Caffe's snapshot_format: HDF5) hold datasets data/<layer>/<i>."""
    import h5py
    d = shared_path("caffe-oracle", "nets", "lenet_train")
    monkeypatch.chdir(d)
    net = caffe_pb2.NetParameter()
    net.ParseFromString((d / "weights.caffemodel").read_bytes())
    v0 = caffe_pb2.NetParameter(name=net.name)
    with h5py.File(tmp_path / "w.caffemodel.h5", "w") as f:
        for lp in net.layer:
            entry = v0.layers.add(bottom=lp.bottom, top=lp.top)
            entry.layer.name = lp.name
            entry.layer.blobs.extend(lp.blobs)
            g = f.create_group(f"data/{lp.name}")
            for i, b in enumerate(lp.blobs):
                g[str(i)] = np.asarray(b.data, np.float32).reshape(tuple(b.shape.dim))
    (tmp_path / "v0.caffemodel").write_bytes(v0.SerializeToString())
    reference = compiled_for(d / "net.prototxt")
    load_caffemodel(reference, d / "weights.caffemodel")
    for name in ("v0.caffemodel", "w.caffemodel.h5"):
        other = compiled_for(d / "net.prototxt", seed=9)
        assert load_weights_file(other, tmp_path / name) == []
        a, b = state_of(reference), state_of(other)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    (tmp_path / "bad.caffemodel.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(NetspecError, match="HDF5"):
        load_caffemodel(reference, tmp_path / "bad.caffemodel.h5")


# ---------------------------------------------------------------- round trip

def test_round_trip_prototxt_netspec_caffemodel_netspec(tmp_path, monkeypatch):
    """Trained-looking weights (random, BatchNorm statistics included) survive export and
    import exactly: the outputs of the reloaded net are identical."""
    d = shared_path("caffe-oracle", "nets", "cifar10_full_sigmoid_bn_test")
    monkeypatch.chdir(d)
    case = __import__("json").loads((d / "case.json").read_text())
    first = compiled_for(d / "net.prototxt", case["phase"], seed=1)
    with torch.no_grad():
        for t in first.module.state_dict().values():
            t.copy_(torch.rand_like(t) + 0.5)
    write_caffemodel(first, tmp_path / "out.caffemodel")
    second = compiled_for(d / "net.prototxt", case["phase"], seed=2)
    assert load_weights_file(second, tmp_path / "out.caffemodel") == []
    inputs = {k: torch.from_numpy(v.copy()) for k, v in np.load(d / "inputs.npz").items()
              if k in first.generated.inputs}
    first.module.eval(), second.module.eval()
    with torch.no_grad():
        out1, out2 = first.module(**inputs), second.module(**inputs)
    assert out1.keys() == out2.keys()
    assert all(torch.equal(out1[k], out2[k]) for k in out1)
    assert caffemodel_bytes(second) == (tmp_path / "out.caffemodel").read_bytes()


# ---------------------------------------------------------------- errors, never partial loads

@pytest.fixture
def lenet(monkeypatch):
    d = shared_path("caffe-oracle", "nets", "lenet_train")
    monkeypatch.chdir(d)
    return d, compiled_for(d / "net.prototxt", seed=3)


def assert_untouched(compiled, before):
    after = state_of(compiled)
    assert all(torch.equal(before[k], after[k]) for k in before)


def error_text(excinfo) -> str:
    return "\n".join(d.message + " ".join(d.notes) for d in excinfo.value.diagnostics)


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_file_is_a_clear_error(lenet, tmp_path, cut):
    d, compiled = lenet
    raw = (d / "weights.caffemodel").read_bytes()
    bad = tmp_path / "cut.caffemodel"
    bad.write_bytes(raw[:int(len(raw) * cut)])
    before = state_of(compiled)
    with pytest.raises(NetspecError) as e:
        load_caffemodel(compiled, bad)
    assert "cut.caffemodel" in error_text(e)
    assert_untouched(compiled, before)


def test_garbage_and_text_files_are_clear_errors(lenet, tmp_path):
    d, compiled = lenet
    (tmp_path / "junk.caffemodel").write_bytes(bytes(range(256)) * 8)
    with pytest.raises(NetspecError):
        load_caffemodel(compiled, tmp_path / "junk.caffemodel")
    with pytest.raises(NetspecError) as e:
        load_caffemodel(compiled, d / "net.prototxt")
    assert "text .prototxt" in " ".join(h for x in e.value.diagnostics for h in x.help)
    with pytest.raises(NetspecError) as e:
        load_caffemodel(compiled, tmp_path / "missing.caffemodel")
    assert "cannot read" in error_text(e)


def test_shape_mismatch_names_layer_and_both_shapes(lenet, tmp_path):
    d, compiled = lenet
    net = caffe_pb2.NetParameter()
    net.ParseFromString((d / "weights.caffemodel").read_bytes())
    ip2 = next(lp for lp in net.layer if lp.name == "ip2")
    ip2.blobs[1].shape.dim[0] = 5
    del ip2.blobs[1].data[5:]
    (tmp_path / "m.caffemodel").write_bytes(net.SerializeToString())
    before = state_of(compiled)
    with pytest.raises(NetspecError) as e:
        load_caffemodel(compiled, tmp_path / "m.caffemodel")
    assert "'ip2'" in error_text(e) and "(5,)" in error_text(e) and "(10,)" in error_text(e)
    assert_untouched(compiled, before)


def test_blob_count_and_data_size_mismatches(lenet, tmp_path):
    d, compiled = lenet
    net = caffe_pb2.NetParameter()
    net.ParseFromString((d / "weights.caffemodel").read_bytes())
    conv1 = next(lp for lp in net.layer if lp.name == "conv1")
    del conv1.blobs[1]
    (tmp_path / "count.caffemodel").write_bytes(net.SerializeToString())
    with pytest.raises(NetspecError) as e:
        load_caffemodel(compiled, tmp_path / "count.caffemodel")
    assert "'conv1' has 1 blobs" in error_text(e)
    del conv1.blobs[0].data[3:]
    (tmp_path / "size.caffemodel").write_bytes(net.SerializeToString())
    with pytest.raises(NetspecError) as e:
        read_caffemodel(tmp_path / "size.caffemodel")
    assert "'conv1'" in error_text(e)


def test_partial_files_name_the_unfilled_layers_and_later_files_win(lenet, tmp_path):
    d, compiled = lenet
    net = caffe_pb2.NetParameter()
    net.ParseFromString((d / "weights.caffemodel").read_bytes())
    part = caffe_pb2.NetParameter(name="part")
    part.layer.extend(lp for lp in net.layer if lp.name in ("conv1", "ip2"))
    for b in part.layer[0].blobs:
        b.data[:] = [0.25] * len(b.data)
    (tmp_path / "part.caffemodel").write_bytes(part.SerializeToString())
    assert load_caffemodel(compiled, tmp_path / "part.caffemodel") == ["conv2", "ip1"]
    both = f"{d / 'weights.caffemodel'},{tmp_path / 'part.caffemodel'}"
    assert load_caffemodel(compiled, both) == []
    assert torch.all(compiled.module.state_dict()[compiled.blob_key("conv1", 0)] == 0.25)
    with pytest.raises(NetspecError) as e:
        copy_blobs(compiled, read_caffemodel(tmp_path / "part.caffemodel"), strict=True)
    assert "conv2" in error_text(e)
    empty = caffe_pb2.NetParameter(name="x")
    empty.layer.add(name="other", type="ReLU").blobs.add(data=[1.0])
    (tmp_path / "none.caffemodel").write_bytes(empty.SerializeToString())
    with pytest.raises(NetspecError) as e:
        load_caffemodel(compiled, tmp_path / "none.caffemodel")
    assert "fills none" in error_text(e) and "conv1" in error_text(e)


# ---------------------------------------------------------------- CLI and solver

def solver_case(tmp_path, name="sgd_step_l1", extra="", drop_weights=False):
    src = shared_path("caffe-oracle", "solvers", name)
    dst = tmp_path / name
    shutil.copytree(src, dst)
    text = (dst / "solver.prototxt").read_text()
    if drop_weights:
        text = text.replace('weights: "init.caffemodel"\n', "")
    (dst / "solver.prototxt").write_text(text.replace("snapshot: 0\n", "") + extra)
    return dst, np.load(src / "trajectory.npz")


def test_train_weights_flag_loads_caffemodels_and_reports_errors(tmp_path, monkeypatch, capsys):
    d, traj = solver_case(tmp_path, drop_weights=True, extra='snapshot_prefix: "snap"\n')
    monkeypatch.chdir(d)
    assert main(["train", "--solver", "solver.prototxt", "--weights", "init.caffemodel",
                 "--iterations", "3", "--gpu", "cpu"]) == 0
    s = torch.load("snap_iter_3.netspec", weights_only=False)
    w = s["weights"]
    from netspec.solve.solver import Solver
    keys = Solver("solver.prototxt", log=lambda _: None).executor.main.blob_key
    np.testing.assert_allclose(w[keys("conv", 0)].numpy(), traj["param/conv/0"][3], rtol=1e-4, atol=1e-6)
    capsys.readouterr()
    assert main(["train", "--solver", "solver.prototxt", "--weights", "net.prototxt", "--gpu", "cpu"]) == 1
    assert "nor a valid .caffemodel" in capsys.readouterr().err


def test_a_damaged_snapshot_names_both_weight_formats(tmp_path, capsys):
    """A .netspec file whose zip header is gone is read as a .caffemodel by its content; the
    error names both formats and says what to do about a snapshot."""
    bad = tmp_path / "run_iter_10.netspec"
    bad.write_bytes(bytes(range(7, 250)) * 4)
    assert main(["test", "--model", str(REPO / "models" / "digits" / "deep_plain.prototxt"), "--weights", str(bad), "--iterations", "1"]) == 1
    err = capsys.readouterr().err
    assert "error[E0700]" in err and "neither a netspec snapshot" in err and "nor a valid .caffemodel" in err
    assert "use an earlier one" in err and "Traceback" not in err


def test_convert_to_caffemodel_from_a_snapshot(tmp_path, monkeypatch, capsys):
    d, traj = solver_case(tmp_path, extra='snapshot_prefix: "snap"\n')
    monkeypatch.chdir(d)
    assert main(["train", "--solver", "solver.prototxt", "--iterations", "4", "--gpu", "cpu"]) == 0
    assert main(["convert", "net.prototxt", "--weights", "snap_iter_4.netspec",
                 "--to-caffemodel", "out.caffemodel"]) == 0
    table = read_caffemodel("out.caffemodel")
    for key in [k for k in traj.files if k.startswith("param/")]:
        _, layer, i = key.split("/")
        np.testing.assert_allclose(table[layer][int(i)], traj[key][4], rtol=1e-4, atol=1e-6)
    assert main(["convert", "net.prototxt", "--to-caffemodel", "x.caffemodel"]) == 1
    assert "needs --weights" in capsys.readouterr().err


def test_binaryproto_snapshots_write_caffe_files_and_resume(tmp_path, monkeypatch):
    from netspec.solve.solver import Solver
    d, traj = solver_case(tmp_path, "nesterov_multistep",
                          extra='snapshot: 6\nsnapshot_prefix: "snap"\nsnapshot_format: BINARYPROTO\n')
    monkeypatch.chdir(d)
    Solver("solver.prototxt", log=lambda _: None).step(6)
    assert sorted(p.name for p in d.glob("snap_*")) == ["snap_iter_6.caffemodel", "snap_iter_6.solverstate"]
    state = caffe_pb2.SolverState()
    state.ParseFromString((d / "snap_iter_6.solverstate").read_bytes())
    assert state.iter == 6 and state.learned_net == "snap_iter_6.caffemodel" and len(state.history) == 4
    table = read_caffemodel("snap_iter_6.caffemodel")
    np.testing.assert_allclose(table["ip"][0], traj["param/ip/0"][6], rtol=1e-4, atol=1e-6)
    resumed = Solver("solver.prototxt", log=lambda _: None)
    resumed.restore("snap_iter_6.solverstate")
    resumed.step(6)
    for key in [k for k in traj.files if k.startswith("param/")]:
        b = key.split("/", 1)[1]
        np.testing.assert_allclose(resumed.executor.params[b].detach().numpy(), traj[key][12],
                                   rtol=1e-4, atol=1e-5 * np.abs(traj[key][12]).max())


def test_hdf5_snapshots_use_caffes_layout_and_resume(tmp_path, monkeypatch):
    """Caffe's Net::ToHDF5 / SnapshotSolverStateToHDF5 layout; Adam's two moments per param."""
    import h5py
    from netspec.solve.solver import Solver
    d, traj = solver_case(tmp_path, "adam_fixed_itersize2",
                          extra='snapshot: 5\nsnapshot_prefix: "snap"\nsnapshot_format: HDF5\n')
    monkeypatch.chdir(d)
    Solver("solver.prototxt", log=lambda _: None).step(5)
    assert sorted(p.name for p in d.glob("snap_*")) == ["snap_iter_5.caffemodel.h5", "snap_iter_5.solverstate.h5"]
    with h5py.File(d / "snap_iter_5.solverstate.h5") as f:
        assert list(f["iter"]) == [5] and f["learned_net"][()] == b"snap_iter_5.caffemodel.h5"
        assert len(f["history"]) == 8                    # 4 params x (m, v)
    with h5py.File(d / "snap_iter_5.caffemodel.h5") as f:
        np.testing.assert_allclose(f["data/conv/0"][()], traj["param/conv/0"][5], rtol=1e-4, atol=1e-6)
        assert "relu" in f["data"] and not len(f["data/relu"])
    resumed = Solver("solver.prototxt", log=lambda _: None)
    resumed.restore("snap_iter_5.solverstate.h5")
    resumed.step(7)
    for key in [k for k in traj.files if k.startswith("param/")]:
        np.testing.assert_allclose(resumed.executor.params[key.split("/", 1)[1]].detach().numpy(),
                                   traj[key][12], rtol=1e-4, atol=1e-5 * np.abs(traj[key][12]).max())


@pytest.mark.parametrize("mode", ["standard", "multiway"])
def test_binaryproto_snapshot_holds_every_layer_and_resumes(mode, tmp_path):
    """STANDARD prunes the auxiliary exits from the training module, yet Caffe's file
    holds every layer; MULTIWAY's per-loss histories round-trip through the .solverstate."""
    from netspec.solve.solver import Solver
    solver = Solver(f"models/digits/solver_{mode}.prototxt", log=lambda _: None)
    solver.param.snapshot_format = caffe_pb2.SolverParameter.BINARYPROTO
    solver.step(2)
    state_path = solver.snapshot(tmp_path / "s_iter_2")
    table = read_caffemodel(tmp_path / "s_iter_2.caffemodel")
    with_blobs = {n.name for n in solver.net.graph.layers() if n.impl.blobs}
    assert {k for k, v in table.items() if v} == with_blobs
    for key, p in solver.executor.params.items():
        layer, i = key.rsplit("/", 1)
        assert np.array_equal(table[layer][int(i)], p.detach().numpy()), key
    resumed = Solver(f"models/digits/solver_{mode}.prototxt", log=lambda _: None)
    resumed.restore(state_path)
    assert resumed.iter == 2
    for slot, hist in solver.executor.state.items():
        for key, kinds in hist.items():
            for k, t in kinds.items():
                assert torch.equal(resumed.executor.state[slot][key][k], t), (slot, key, k)
    solver.step(1), resumed.step(1)
    for key, p in solver.executor.params.items():
        assert torch.allclose(resumed.executor.params[key], p, rtol=1e-5, atol=1e-7), key


def test_shared_blobs_are_filled_through_their_owner(tmp_path):
    """Caffe's Net::ToHDF5 saves a shared blob once, under its owner; the sharing layer's
    group is empty, which is no gap in the weights."""
    import h5py
    from pathlib import Path
    compiled = compiled_for(Path(__file__).parent / "legacy" / "v1_shared_params.upgraded.txt", "TEST")
    w, b = np.full((3, 64), 0.5, np.float32), np.arange(3, dtype=np.float32)
    with h5py.File(tmp_path / "s.caffemodel.h5", "w") as f:
        f["data/ip_a/0"], f["data/ip_a/1"] = w, b
        f.create_group("data/ip_b")
        f.create_group("data/loss")
    assert load_caffemodel(compiled, tmp_path / "s.caffemodel.h5") == []
    x = torch.randn(4, 1, 8, 8)
    out = compiled.module(a=x, b=x)
    assert torch.equal(out["fa"], out["fb"]) and float(out["loss"].detach()) == 0.0
    assert torch.equal(out["fa"], x.reshape(4, 64) @ torch.from_numpy(w).T + torch.from_numpy(b))
