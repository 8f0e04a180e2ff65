"""Caffe's ``Python`` layer, both kinds: pycaffe-style layers run unchanged, torch-native
``nn.Module`` layers compile, train under every BP mode and survive ``netspec convert``."""
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import netspec
from netspec.cli.main import main
from netspec.pycaffe import PythonLayer
from netspec.pycaffe.runner import _PythonFunction

from cli_util import DIGITS
from conftest import shared_path

TORCH_LAYERS = '''
import torch
import torch.nn as nn


class Affine(nn.Module):
    """Per-channel scale and shift (axis 1); param_str is the channel count."""

    def __init__(self, param_str):
        super().__init__()
        c = int(param_str)
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, c))
        self.shift = nn.Parameter(torch.zeros(c))

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)


class Halves(nn.Module):
    """Two tops: the first and second half of the channels."""

    def __init__(self, param_str):
        super().__init__()

    def forward(self, x):
        return x[:, : x.shape[1] // 2], x[:, x.shape[1] // 2:]
'''

PYCAFFE_LAYERS = '''
import caffe
import numpy as np


class ChannelScale(caffe.Layer):
    """top = bottom * w per channel, w a learnable blob (param_str: its initial value)."""

    def setup(self, bottom, top):
        self.blobs.add_blob(bottom[0].channels)
        self.blobs[0].data[...] = float(self.param_str or 1)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def _w(self, bottom):
        return self.blobs[0].data.reshape((1, -1) + (1,) * (bottom[0].data.ndim - 2))

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data * self._w(bottom)

    def backward(self, top, propagate_down, bottom):
        axes = (0,) + tuple(range(2, top[0].diff.ndim))
        self.blobs[0].diff[...] = (top[0].diff * bottom[0].data).sum(axis=axes)
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * self._w(bottom)


class Broken(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(3)
        top[1].reshape(3)
'''


@pytest.fixture
def layers_dir(tmp_path):
    (tmp_path / "torchlayers.py").write_text(TORCH_LAYERS)
    (tmp_path / "pyclayers.py").write_text(PYCAFFE_LAYERS)
    yield tmp_path
    for name in ("torchlayers", "pyclayers"):        # each test's tmp module is its own
        sys.modules.pop(name, None)


# -- Caffe's examples/pycaffe/linreg.prototxt with layers/pyloss.py ------------------------------

@pytest.fixture
def linreg(tmp_path):
    src = shared_path("caffe-zoo", "examples", "pycaffe")
    shutil.copy(src / "linreg.prototxt", tmp_path)
    shutil.copytree(src / "layers", tmp_path / "layers")
    yield tmp_path
    sys.modules.pop("pyloss", None)


def test_linreg_checks_with_its_python_loss(linreg, capsys):
    assert main(["check", str(linreg / "linreg.prototxt")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"loss\s+Python\s+\(1\)", out)
    assert "140 parameters" in out


def _euclidean_twin(folder):
    """linreg with Caffe's EuclideanLoss in place of the Python layer."""
    text = (folder / "linreg.prototxt").read_text()
    text = re.sub(r"python_param \{.*?\}", "", text.replace("type: 'Python'", "type: 'EuclideanLoss'"),
                  flags=re.S)
    assert "python_param" not in text and "type: 'EuclideanLoss'" in text
    (folder / "euclid.prototxt").write_text(text)
    return folder / "euclid.prototxt"


def _grads(path):
    net = netspec.Net(path, "TRAIN", seed=3)
    torch.manual_seed(7)                                   # the DummyData draws
    loss = float(net.forward()["loss"].sum())
    net.backward()
    grads = {f"{k}/{i}": p.grad.clone() for k, ps in net.params.items() for i, p in enumerate(ps)}
    return loss, grads, {b: net.diffs[b].clone() for b in ("ipx", "ipy")}


def test_linreg_gradients_equal_euclidean_loss(linreg):
    loss, grads, diffs = _grads(linreg / "linreg.prototxt")
    want_loss, want_grads, want_diffs = _grads(_euclidean_twin(linreg))
    assert loss == pytest.approx(want_loss, rel=1e-6) and loss > 0
    assert sorted(grads) == ["ipx/0", "ipx/1", "ipy/0", "ipy/1"] == sorted(want_grads)
    for key in grads:
        assert grads[key].abs().max() > 0, key
        torch.testing.assert_close(grads[key], want_grads[key], rtol=1e-5, atol=1e-7)
    for b in diffs:
        torch.testing.assert_close(diffs[b], want_diffs[b], rtol=1e-5, atol=1e-7)


def _linreg_solver(folder, max_iter=30):
    path = folder / "solver.prototxt"
    path.write_text(f'net: "{folder / "linreg.prototxt"}"\nbase_lr: 0.01\nmomentum: 0.9\n'
                    f'lr_policy: "fixed"\nmax_iter: {max_iter}\ndisplay: 10\nsnapshot: 0\n'
                    'snapshot_after_train: false\nrandom_seed: 1\nsolver_mode: CPU\n')
    return path


def test_linreg_trains_with_its_python_loss(linreg):
    """The Python loss drives SGD: ipx and ipy learn to agree on random x, y (loss falls)."""
    solver = netspec.Solver(_linreg_solver(linreg))
    w0 = solver.module.state_dict()["ipx.weight"].clone()
    losses = [r["loss"] for r in solver.step(30, batches=[{}])]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    assert not torch.equal(solver.module.state_dict()["ipx.weight"], w0)


def test_linreg_trains_through_netspec_train(linreg, capsys, monkeypatch):
    monkeypatch.chdir(linreg)               # the final weights are written beside the solver
    assert main(["train", "--solver", str(_linreg_solver(linreg, 6))]) == 0
    out = capsys.readouterr().out
    assert "Train net output #0: loss = " in out and "Optimization Done." in out


# -- pycaffe-style layers: the autograd.Function --------------------------------------------------

def test_pycaffe_layer_gradients_are_exact_in_float64(layers_dir):
    layer = PythonLayer("pyclayers", "ChannelScale", "0.5", 0, [(2, 3, 4)], 1, search=(str(layers_dir),))
    layer.double()
    w = torch.randn(3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda x, w: _PythonFunction.apply(layer, 1, x, w)[0], (x, w))
    assert torch.equal(layer.blob0.detach(), torch.full((3,), 0.5, dtype=torch.float64))   # setup's value


def test_pycaffe_layer_honours_propagate_down_and_sees_parameter_updates(layers_dir):
    net = layers_dir / "net.prototxt"
    net.write_text('name: "n" input: "data" input_shape { dim: 2 dim: 3 dim: 4 }\n'
                   'layer { name: "s" type: "Python" bottom: "data" top: "s" propagate_down: false\n'
                   '  python_param { module: "pyclayers" layer: "ChannelScale" param_str: "2" } }\n')
    n = netspec.Net(net, "TRAIN")
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(n.forward(data=x)["s"], 2 * x)
    n.backward({"s": torch.ones(2, 3, 4)})
    assert torch.equal(n.diffs["data"], torch.zeros(2, 3, 4))           # propagate_down: false
    torch.testing.assert_close(n.params["s"][0].grad, x.sum((0, 2)))
    with torch.no_grad():
        n.params["s"][0][1] = -1.0                                         # a solver's update
    torch.testing.assert_close(n.forward(data=x)["s"][:, 1], -x[:, 1])


def test_python_layer_check_shapes_and_parameter_count(layers_dir, capsys):
    net = layers_dir / "net.prototxt"
    net.write_text('name: "n" input: "data" input_shape { dim: 2 dim: 6 dim: 4 }\n'
                   'layer { name: "s" type: "Python" bottom: "data" top: "s"\n'
                   '  python_param { module: "pyclayers" layer: "ChannelScale" } }\n'
                   'layer { name: "a" type: "Python" bottom: "s" top: "a"\n'
                   '  python_param { module: "torchlayers" layer: "Affine" param_str: "6" } }\n'
                   'layer { name: "h" type: "Python" bottom: "a" top: "h1" top: "h2"\n'
                   '  python_param { module: "torchlayers" layer: "Halves" } }\n')
    assert main(["check", str(net)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\bs\s+Python\s+\(2x6x4\)\s+6\b", out)
    assert re.search(r"\ba\s+Python\s+\(2x6x4\)\s+12\b", out)
    assert re.search(r"\bh\s+Python\s+\(2x3x4\), \(2x3x4\)", out)
    assert "18 parameters" in out


# -- diagnostics on python_param ------------------------------------------------------------------

def _check_err(tmp_path, body, capsys):
    net = tmp_path / "bad.prototxt"
    net.write_text('name: "bad" input: "data" input_shape { dim: 2 dim: 3 }\n'
                   'layer { name: "p" type: "Python" bottom: "data" top: "p"\n' + body + " }\n")
    assert main(["check", str(net)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_unknown_module_is_a_diagnostic_on_its_line(layers_dir, capsys):
    err = _check_err(layers_dir, '  python_param {\n    module: "no_such_module" layer: "X" }', capsys)
    assert "bad.prototxt:4:13: error[E0501]" in err
    assert "no Python module 'no_such_module'" in err
    assert '4 |     module: "no_such_module" layer: "X" }' in err and "^^^" in err
    assert "PYTHONPATH" in err


def test_unknown_class_is_a_diagnostic_with_a_suggestion(layers_dir, capsys):
    err = _check_err(layers_dir, '  python_param { module: "torchlayers"\n    layer: "Afine" }', capsys)
    assert "bad.prototxt:4:12: error[E0501]" in err
    assert "module 'torchlayers' has no class 'Afine'" in err and "did you mean 'Affine'?" in err


def test_module_that_fails_to_import_is_a_diagnostic(layers_dir, capsys):
    (layers_dir / "explodes.py").write_text("raise ValueError('boom at import')\n")
    err = _check_err(layers_dir, '  python_param { module: "explodes" layer: "X" }', capsys)
    assert "importing Python module 'explodes' raised ValueError: boom at import" in err
    sys.modules.pop("explodes", None)


def test_wrong_number_of_tops_is_a_diagnostic(layers_dir, capsys):
    err = _check_err(layers_dir, '  python_param { module: "pyclayers" layer: "Broken" }', capsys)
    assert "raised IndexError in reshape(): list index out of range" in err
    assert re.search(r"raised at .*pyclayers\.py:\d+ in reshape", err)


def test_modules_load_from_sys_path_first(tmp_path, monkeypatch):
    """Caffe imports python_param.module from sys.path; beside the net comes after."""
    on_path, beside = tmp_path / "on_path", tmp_path / "net"
    on_path.mkdir(), beside.mkdir()
    (on_path / "twin.py").write_text(TORCH_LAYERS)
    (beside / "twin.py").write_text("raise ImportError('the net-directory copy must not load')\n")
    (beside / "net.prototxt").write_text(
        'name: "n" input: "data" input_shape { dim: 2 dim: 3 }\n'
        'layer { name: "a" type: "Python" bottom: "data" top: "a"\n'
        '  python_param { module: "twin" layer: "Affine" param_str: "3" } }\n')
    monkeypatch.syspath_prepend(str(on_path))
    try:
        n = netspec.Net(beside / "net.prototxt", "TEST")
        assert n.forward(data=torch.ones(2, 3))["a"].shape == (2, 3)
    finally:
        sys.modules.pop("twin", None)


# -- torch-native layers: every BP mode, and netspec convert -----------------------------------

def _digits_net(folder):
    """Two exits on the digits; a torch-native Affine and a pycaffe ChannelScale (in place)
    after conv1 feed both."""
    net = folder / "net.prototxt"
    net.write_text(f'''name: "pydigits"
layer {{ name: "digits" type: "HDF5Data" top: "data" top: "label" include {{ phase: TRAIN }}
  hdf5_data_param {{ source: "{DIGITS}/train.txt" batch_size: 16 shuffle: true }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 4 kernel_size: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "affine" type: "Python" bottom: "conv1" top: "affine"
  python_param {{ module: "torchlayers" layer: "Affine" param_str: "4" }} }}
layer {{ name: "chscale" type: "Python" bottom: "affine" top: "affine"
  python_param {{ module: "pyclayers" layer: "ChannelScale" param_str: "1" }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "affine" top: "affine" }}
layer {{ name: "aux_fc" type: "InnerProduct" bottom: "affine" top: "aux_fc"
  inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "aux_loss" type: "SoftmaxWithLoss" bottom: "aux_fc" bottom: "label" top: "aux_loss"
  loss_weight: 0.3 }}
layer {{ name: "conv2" type: "Convolution" bottom: "affine" top: "conv2"
  convolution_param {{ num_output: 4 kernel_size: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "conv2" top: "fc"
  inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }}
''')
    return net


@pytest.mark.parametrize("mode", ["STANDARD", "JOINT", "RELAY", "MULTIWAY"])
def test_python_layers_train_under_every_bp_mode(layers_dir, mode):
    solver = layers_dir / "solver.prototxt"
    solver.write_text(f'net: "{_digits_net(layers_dir)}"\nbase_lr: 0.1\nmomentum: 0.9\n'
                      'lr_policy: "fixed"\nmax_iter: 4\ndisplay: 0\nsnapshot: 0\n'
                      'snapshot_after_train: false\nrandom_seed: 3\nsolver_mode: CPU\n'
                      f'bp_mode: {mode}\nprimary_loss: "loss"\n')
    s = netspec.Solver(solver)
    before = {k: v.clone() for k, v in s.module.state_dict().items() if k.startswith(("affine.", "chscale."))}
    assert sorted(before) == ["affine.scale", "affine.shift", "chscale.blob0"]
    records = s.step(4)
    assert all(np.isfinite(r["loss"]) for r in records)
    after = s.module.state_dict()
    for k, v in before.items():
        assert not torch.equal(after[k], v), f"{mode}: {k} was not trained"


CONVERT_NET = '''name: "conv"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 3 dim: 6 dim: 6 }} }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 4 kernel_size: 3 weight_filler {{ type: "gaussian" std: 0.3 }} }} }}
layer {{ name: "affine" type: "Python" bottom: "conv1" top: "affine"
  python_param {{ module: "torchlayers" layer: "Affine" param_str: "4" }} }}
layer {{ name: "halves" type: "Python" bottom: "affine" top: "lo" top: "hi"
  python_param {{ module: "torchlayers" layer: "Halves" }} }}
{extra}
'''
PYCAFFE_EXTRA = ('layer { name: "scaled" type: "Python" bottom: "hi" top: "scaled"\n'
                 '  python_param { module: "pyclayers" layer: "ChannelScale" param_str: "3" } }')

RUN_CONVERTED = textwrap.dedent('''
    import importlib.util, sys, torch
    spec = importlib.util.spec_from_file_location("converted", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = getattr(mod, "Conv")()
    model.load_state_dict(torch.load(sys.argv[2]))
    torch.save(model(torch.load(sys.argv[3])), sys.argv[4])
''')


@pytest.mark.parametrize("extra", ["", PYCAFFE_EXTRA], ids=["torch-native", "with-pycaffe-layer"])
def test_python_layers_survive_netspec_convert(layers_dir, tmp_path_factory, extra):
    net = layers_dir / "net.prototxt"
    net.write_text(CONVERT_NET.format(extra=extra))
    out = tmp_path_factory.mktemp("converted")
    assert main(["convert", str(net), "-o", str(out / "model.py")]) == 0
    source = (out / "model.py").read_text()
    assert "import torchlayers" in source and f"sys.path.append({str(layers_dir)!r})" in source
    assert "torchlayers.Affine('4')" in source
    assert ("from netspec.pycaffe import PythonLayer" in source) == bool(extra)
    compiled = netspec.Net(net, "TEST", seed=1)
    x = torch.randn(2, 3, 6, 6)
    want = compiled.forward(data=x)
    torch.save(compiled.compiled.module.state_dict(), out / "state.pt")
    torch.save(x, out / "x.pt")
    (out / "run.py").write_text(RUN_CONVERTED)
    # a fresh interpreter elsewhere: the file finds its layer module by itself
    subprocess.run([sys.executable, str(out / "run.py"), str(out / "model.py"), str(out / "state.pt"),
                    str(out / "x.pt"), str(out / "y.pt")], cwd=out, check=True, timeout=120)
    got = torch.load(out / "y.pt")
    assert set(got) == set(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


def test_python_layer_blobs_round_trip_through_a_caffemodel(layers_dir, capsys):
    """Caffe saves a Python layer's blobs with the net; netspec writes and reads them so."""
    net = layers_dir / "net.prototxt"
    net.write_text('name: "n" input: "data" input_shape { dim: 2 dim: 3 dim: 4 }\n'
                   'layer { name: "s" type: "Python" bottom: "data" top: "s"\n'
                   '  python_param { module: "pyclayers" layer: "ChannelScale" param_str: "2" } }\n'
                   'layer { name: "a" type: "Python" bottom: "s" top: "a"\n'
                   '  python_param { module: "torchlayers" layer: "Affine" param_str: "3" } }\n')
    n = netspec.Net(net, "TEST")
    with torch.no_grad():
        n.params["s"][0][:] = torch.tensor([1.0, -2.0, 3.0])
        n.params["a"][1][:] = 7.0
    n.save(layers_dir / "w.netspec")
    out = layers_dir / "w.caffemodel"
    assert main(["convert", str(net), "--weights", str(layers_dir / "w.netspec"),
                 "--to-caffemodel", str(out)]) == 0
    from netspec.proto import caffe_pb2
    saved = {l.name: [list(b.data) for b in l.blobs] for l in caffe_pb2.NetParameter.FromString(out.read_bytes()).layer}
    assert saved["s"] == [[1.0, -2.0, 3.0]] and saved["a"][1] == [7.0, 7.0, 7.0]
    again = netspec.Net(net, "TEST", weights=out)
    assert again.missing == []
    assert torch.equal(again.params["s"][0].detach(), torch.tensor([1.0, -2.0, 3.0]))
    assert torch.equal(again.params["a"][1].detach(), torch.full((3,), 7.0))


@pytest.mark.parametrize("mode", ["RELAY", "MULTIWAY"])
def test_pycaffe_layer_trains_exactly_as_the_builtin_layer_it_mirrors(layers_dir, mode):
    """ChannelScale is Caffe's Scale (axis 1, no bias): same trajectory, backward passes after
    MULTIWAY's updates included (the layer reads its blob from the updated parameter)."""
    builtin = ('layer {{ name: "chscale" type: "Scale" bottom: "affine" top: "affine"\n'
               '  scale_param {{ axis: 1 bias_term: false filler {{ type: "constant" value: 1 }} }} }}\n')
    states = []
    for variant in ("python", "builtin"):
        net = _digits_net(layers_dir)
        text = net.read_text()
        if variant == "builtin":
            text = re.sub(r'layer \{ name: "chscale".*?\} \}\n', builtin.format(), text, flags=re.S)
            assert 'type: "Scale"' in text
        net.write_text(text)
        solver = layers_dir / "solver.prototxt"
        solver.write_text(f'net: "{net}"\nbase_lr: 0.1\nmomentum: 0.9\nlr_policy: "fixed"\n'
                          'max_iter: 3\ndisplay: 0\nsnapshot: 0\nsnapshot_after_train: false\n'
                          f'random_seed: 3\nsolver_mode: CPU\nbp_mode: {mode}\nprimary_loss: "loss"\n')
        s = netspec.Solver(solver)
        s.step(3)
        states.append({k.replace("blob0", "weight"): v.clone() for k, v in s.module.state_dict().items()})
    assert sorted(states[0]) == sorted(states[1])
    for k in states[0]:
        torch.testing.assert_close(states[0][k], states[1][k], rtol=1e-5, atol=1e-6, msg=k)
