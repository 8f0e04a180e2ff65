"""Caffe's HDF5Output layer: the file BVLC Caffe 1.0's HDF5OutputLayer writes.

Caffe reshapes both bottoms to their legacy 4-axis shape (num, channels, height, width;
missing axes 1), copies them, and writes float32 datasets "data" and "label"
(``hdf5_save_nd_dataset``) in Forward; the layer has no tops and no gradient.
"""
import h5py
import numpy as np
import pytest
import torch

import netspec
from netspec.cli.main import main
from netspec.diagnostics import NetspecError

NET = '''name: "h5out"
layer {{ name: "in" type: "Input" top: "data" top: "label"
  input_param {{ shape {{ dim: {data} }} shape {{ dim: {label} }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "out" type: "HDF5Output" bottom: "{written}" bottom: "label"
  hdf5_output_param {{ file_name: "{file}" }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" include {{ phase: TRAIN }} }}
layer {{ name: "t" type: "Input" top: "target" input_param {{ shape {{ dim: {target} }} }} include {{ phase: TRAIN }} }}
'''


def _net(folder, written="data", data="4 dim: 2 dim: 3 dim: 5", label="4", file="out.h5"):
    path = folder / "net.prototxt"
    path.write_text(NET.format(data=data, label=label, written=written, file=file, target="4 dim: 3"))
    return path


def _read(path):
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}


def test_writes_data_and_label_as_caffe_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                  # Caffe resolves file_name against the cwd
    net = netspec.Net(_net(tmp_path), "TEST")
    assert not (tmp_path / "out.h5").exists()    # written by forward, as Caffe's Forward_cpu
    x, label = torch.randn(4, 2, 3, 5), torch.tensor([3.0, 1.0, 4.0, 1.0])
    net.forward(data=x, label=label)
    got = _read(tmp_path / "out.h5")
    assert sorted(got) == ["data", "label"]
    assert got["data"].dtype == np.float32 and got["label"].dtype == np.float32
    assert got["data"].shape == (4, 2, 3, 5) and got["label"].shape == (4, 1, 1, 1)
    np.testing.assert_array_equal(got["data"], x.numpy())
    np.testing.assert_array_equal(got["label"].ravel(), label.numpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.prototxt", "out.h5"]   # no temp file


def test_lower_rank_blobs_get_caffes_legacy_shape_and_later_passes_replace_the_file(tmp_path):
    out = tmp_path / "sub" / "feat.h5"
    net = netspec.Net(_net(tmp_path, written="ip", file=str(out)), "TEST")
    for seed in (0, 1):
        x = torch.randn(4, 2, 3, 5, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            net.forward(data=x, label=torch.arange(4.0))
        ip = net.blobs["ip"]
        got = _read(out)
        assert got["data"].shape == (4, 3, 1, 1)          # an InnerProduct top (4, 3)
        np.testing.assert_allclose(got["data"].reshape(4, 3), ip.numpy(), rtol=0, atol=0)


def test_runs_in_a_training_net_without_touching_its_gradients(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = netspec.Net(_net(tmp_path, written="ip"), "TRAIN")
    x = torch.randn(4, 2, 3, 5)
    net.forward(data=x, label=torch.zeros(4), target=torch.zeros(4, 3))
    net.backward()
    w = net.params["ip"][0]
    expected = (net.blobs["ip"] / 4).t() @ x.flatten(1)       # EuclideanLoss alone
    torch.testing.assert_close(w.grad, expected)
    assert torch.equal(net.diffs["label"], torch.zeros(4))
    assert _read(tmp_path / "out.h5")["data"].shape == (4, 3, 1, 1)


def test_convert_writes_the_layer(tmp_path, capsys):
    assert main(["convert", str(_net(tmp_path)), "--phase", "TEST"]) == 0
    source = capsys.readouterr().out
    assert "from netspec.layers.hdf5_output import CaffeHDF5Output" in source
    assert "self.out = CaffeHDF5Output('out.h5')" in source


@pytest.mark.parametrize("kwargs, message", [
    (dict(label="5"), "differ in batch size"),
    (dict(data="4 dim: 2 dim: 3 dim: 5 dim: 1"), "has 5 axes"),
    (dict(file=""), "needs a file_name"),
])
def test_bad_inputs_are_diagnostics(tmp_path, kwargs, message):
    with pytest.raises(NetspecError) as e:
        netspec.Net(_net(tmp_path, **kwargs), "TEST")
    assert message in e.value.render() and "net.prototxt:" in e.value.render()
