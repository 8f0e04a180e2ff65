"""netspec.NetSpec / layers / params / to_proto: pycaffe's generator scripts, run unchanged
with ``caffe`` replaced by ``netspec``, print exactly what real pycaffe printed."""
import importlib.util
import io
import tokenize
import unittest
import warnings

import numpy as np
import pytest
import torch

import netspec
from netspec import layers as L, params as P, to_proto
from netspec.cli.main import main
from netspec.diagnostics import NetspecError
from netspec.net_spec import NetProto, pycaffe_text
from netspec.proto import caffe_pb2

from conftest import shared_path

PYCAFFE = "caffe-zoo/examples/pycaffe"


def port_to_netspec(source: str) -> str:
    """Replace every Python name ``caffe`` (not the word inside strings) by ``netspec``."""
    lines = source.splitlines(keepends=True)
    hits = [t.start for t in tokenize.generate_tokens(io.StringIO(source).readline)
            if t.type == tokenize.NAME and t.string == "caffe"]
    for row, col in reversed(hits):
        line = lines[row - 1]
        lines[row - 1] = line[:col] + "netspec" + line[col + len("caffe"):]
    return "".join(lines)


def load_ported(name: str, tmp_path):
    """Port ``examples/pycaffe/<name>.py`` to netspec in tmp_path and import it."""
    source = shared_path(PYCAFFE, f"{name}.py").read_text()
    ported = port_to_netspec(source)
    assert "caffe" not in {t.string for t in tokenize.generate_tokens(io.StringIO(ported).readline)}
    path = tmp_path / f"ported_{name}.py"
    path.write_text(ported)
    spec = importlib.util.spec_from_file_location(f"ported_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def golden(name: str) -> str:
    return shared_path(PYCAFFE, "golden", name).read_text()


# -- the golden files ------------------------------------------------------------------
def test_port_replaces_names_not_strings():
    src = "import caffe\nfrom caffe import layers as L\nx = caffe.NetSpec(); s = '/path/caffe-lmdb'\n"
    assert port_to_netspec(src) == ("import netspec\nfrom netspec import layers as L\n"
                                    "x = netspec.NetSpec(); s = '/path/caffe-lmdb'\n")


def test_caffenet_prints_pycaffes_text(tmp_path):
    caffenet = load_ported("caffenet", tmp_path)
    assert str(caffenet.caffenet("/path/to/caffe-train-lmdb")) == golden("caffenet_train.prototxt")
    assert str(caffenet.caffenet("/path/to/caffe-val-lmdb", batch_size=50, include_acc=True)) == \
        golden("caffenet_test.prototxt")


def test_caffenet_make_net_writes_the_files(tmp_path, monkeypatch):
    caffenet = load_ported("caffenet", tmp_path)
    monkeypatch.chdir(tmp_path)
    caffenet.make_net()
    assert (tmp_path / "train.prototxt").read_text() == golden("caffenet_train.prototxt") + "\n"
    assert (tmp_path / "test.prototxt").read_text() == golden("caffenet_test.prototxt") + "\n"


@pytest.mark.parametrize("fn, args, name", [("lenet", (50,), "lenet.prototxt"),
                                            ("anon_lenet", (50,), "anon_lenet.prototxt"),
                                            ("silent_net", (), "silent_net.prototxt")])
def test_pycaffe_test_net_spec_prints_pycaffes_text(tmp_path, fn, args, name):
    module = load_ported("test_net_spec", tmp_path)
    assert str(getattr(module, fn)(*args)) == golden(name)


def test_pycaffes_own_net_spec_tests_pass(tmp_path, monkeypatch):
    """pycaffe's TestNetSpec (load with netspec.Net, count layers, forward a silent net,
    the TypeError for a tuple input), ported; its temporary files go to tmp_path."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    module = load_ported("test_net_spec", tmp_path)
    if not hasattr(module.TestNetSpec, "assertRaisesRegexp"):     # the 2015 alias left Python 3.12
        module.TestNetSpec.assertRaisesRegexp = unittest.TestCase.assertRaisesRegex
    suite = unittest.TestLoader().loadTestsFromModule(module)
    result = unittest.TestResult()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)      # that alias, on older Pythons
        suite.run(result)
    assert result.testsRun == 3
    assert result.wasSuccessful(), [str(e[1]) for e in result.failures + result.errors]


# -- semantics beyond the golden files ---------------------------------------------------
def test_to_net_compiles_and_runs_directly():
    n = netspec.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[4, 1, 8, 8]), dict(dim=[4])],
                                  data_filler=[dict(type="gaussian"), dict(type="constant")], ntop=2)
    n.conv = L.Convolution(n.data, kernel_size=3, num_output=5, weight_filler=dict(type="xavier"))
    n.relu = L.ReLU(n.conv, in_place=True)
    n.ip = L.InnerProduct(n.relu, num_output=3, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.ip, n.label)
    net = n.to_net("TRAIN")
    assert isinstance(net, netspec.Net) and net.path == "<NetSpec>"
    assert list(net.layers) == ["data", "conv", "relu", "ip", "loss"]
    assert net.params["conv"][0].shape == (5, 1, 3, 3)
    out = net.forward()
    # all labels 0: the loss is -log softmax(ip)[:, 0], recomputed from the blobs
    ip = net.blobs["ip"].double()
    expected = -torch.log_softmax(ip, 1)[:, 0].mean()
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    net.backward()
    assert net.params["conv"][0].grad is not None


def test_to_net_diagnostics_point_into_the_generated_text():
    n = netspec.NetSpec()
    n.data = L.DummyData(shape=dict(dim=[2, 3]))
    n.ip = L.InnerProduct(n.data)                 # no num_output
    with pytest.raises(NetspecError) as e:
        n.to_net()
    assert "<NetSpec>:" in e.value.render()


def test_str_round_trips_through_netspec_check(tmp_path, capsys):
    module = load_ported("test_net_spec", tmp_path)
    path = tmp_path / "lenet.prototxt"
    path.write_text(str(module.lenet(50)))
    code = main(["check", str(path)])
    out, err = capsys.readouterr()
    assert code == 0 and "Traceback" not in out + err
    assert "431,080 parameters" in out            # LeNet's 431,080 learnable values
    # and parsing it back gives the same message
    from netspec.check import load
    _, src = load(path)
    assert src.net == module.lenet(50).message


def test_netspec_fields_are_keywords():
    top = L.SoftmaxWithLoss(L.DummyData(shape=dict(dim=[2, 3])), L.DummyData(shape=dict(dim=[2])),
                            loss_weight=0.3, gradient_scope=dict(stop_at="x", max_depth=2,
                                                                 modes=[P.Solver.RELAY, P.Solver.MULTIWAY]))
    layer = top.to_proto().layer[-1]
    assert list(layer.loss_weight) == [pytest.approx(0.3)]
    assert list(layer.gradient_scope.stop_at) == ["x"] and layer.gradient_scope.max_depth == 2
    assert list(layer.gradient_scope.modes) == [caffe_pb2.SolverParameter.RELAY, caffe_pb2.SolverParameter.MULTIWAY]
    pool = L.Pooling(L.DummyData(shape=dict(dim=[1, 1, 5, 5])), kernel_size=2, ceil_mode=False)
    assert pool.to_proto().layer[-1].pooling_param.HasField("ceil_mode")


def test_param_lists_repeated_fields_and_enums():
    conv = L.Convolution(L.Input(shape=dict(dim=[1, 3, 8, 8])), num_output=4, kernel_size=[3, 5], pad=1,
                         param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
                         engine=P.Convolution.CAFFE)
    lp = conv.to_proto().layer[-1]
    assert [(p.lr_mult, p.decay_mult) for p in lp.param] == [(1, 1), (2, 0)]
    assert list(lp.convolution_param.kernel_size) == [3, 5]
    assert list(lp.convolution_param.pad) == [1]              # a scalar for a repeated field
    assert lp.convolution_param.engine == caffe_pb2.ConvolutionParameter.CAFFE
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX and P.Data.LMDB == caffe_pb2.DataParameter.LMDB


def test_python_layer_fields_go_to_python_param():
    top = L.Python(L.Input(shape=dict(dim=[2])), module="pyloss", layer="EuclideanLossLayer",
                   param_str="{'a': 1}", loss_weight=1)
    lp = top.to_proto().layer[-1]
    assert (lp.python_param.module, lp.python_param.layer, lp.python_param.param_str) == \
        ("pyloss", "EuclideanLossLayer", "{'a': 1}")
    assert list(lp.loss_weight) == [1]


def test_types_pycaffe_cannot_map_use_netspecs_layer_class():
    # pycaffe raises AttributeError here; Deconvolution reads convolution_param
    lp = L.Deconvolution(L.Input(shape=dict(dim=[1, 3, 4, 4])), num_output=2, kernel_size=2, stride=2) \
        .to_proto().layer[-1]
    assert lp.convolution_param.num_output == 2 and list(lp.convolution_param.stride) == [2]
    lp = L.SoftmaxWithLoss(L.Input(shape=dict(dim=[2, 3])), L.Input(shape=dict(dim=[2])),
                           normalization=P.Loss.VALID, ignore_label=-1).to_proto().layer[-1]
    assert lp.loss_param.normalization == caffe_pb2.LossParameter.VALID and lp.loss_param.ignore_label == -1


def test_auto_names_count_per_type_in_reach_order():
    a = L.Input(shape=dict(dim=[1, 2]))
    b = L.ReLU(a)
    c = L.ReLU(b, in_place=True)
    proto = to_proto(L.Eltwise(c, L.ReLU(a)))
    got = [(lp.name, list(lp.bottom), list(lp.top)) for lp in proto.layer]
    assert got == [("Input1", [], ["Input1"]), ("ReLU1", ["Input1"], ["ReLU1"]),
                   ("ReLU2", ["ReLU1"], ["ReLU1"]), ("ReLU3", ["Input1"], ["ReLU3"]),
                   ("Eltwise1", ["ReLU1", "ReLU3"], ["Eltwise1"])]


def test_netspec_names_tops_and_shares_layers():
    n = netspec.NetSpec()
    n.x = L.Input(shape=dict(dim=[1, 2]))
    n.a, n.b = L.Slice(n.x, slice_point=1, axis=1, ntop=2)
    n.out = L.Eltwise(n.a, n.b, L.ReLU(n.a))
    proto = n.to_proto()
    assert [lp.name for lp in proto.layer] == ["x", "a", "ReLU1", "out"]
    assert list(proto.layer[1].top) == ["a", "b"]
    assert n.keys() == ["x", "a", "b", "out"] and "a" in n and n["a"] is n.a
    del n["out"]
    assert [lp.name for lp in n.to_proto().layer] == ["x", "a"]


def test_bad_keywords_and_inputs_are_reported():
    with pytest.raises(NetspecError) as e:
        L.Convolution(L.Input(shape=dict(dim=[1])), kernal_size=3)
    text = e.value.render()
    assert "error[E0200]" in text and "kernal_size" in text and "kernel_size" in text
    with pytest.raises(NetspecError, match="E0201"):
        L.Convolution(L.Input(shape=dict(dim=[1])), num_output="four")
    with pytest.raises(NetspecError, match="E0205"):
        L.Convolution(L.Input(shape=dict(dim=[1])), weight_filler="xavier")
    with pytest.raises(TypeError, match=r"^Pooling input 0 is not a Top"):
        L.Pooling("data")
    n = netspec.NetSpec()
    with pytest.raises(TypeError, match="unpack"):
        n.pair = L.DummyData(shape=dict(dim=[1]), ntop=2)


def test_pycaffe_text_is_old_protobufs_float_format():
    msg = caffe_pb2.LayerParameter(name="q\"é", type="Power")
    msg.power_param.scale = 0.1
    msg.power_param.shift = 3
    msg.loss_weight.append(float("inf"))
    text = pycaffe_text(msg)
    assert 'name: "q\\"\\303\\251"' in text
    assert f"scale: {float(np.float32(0.1))}" in text and "shift: 3.0" in text and "loss_weight: inf" in text
    back = caffe_pb2.LayerParameter()
    from google.protobuf import text_format
    text_format.Parse(text, back)
    assert back == msg


def test_net_proto_is_the_message_underneath():
    proto = to_proto(L.Input(shape=dict(dim=[1])))
    assert isinstance(proto, NetProto) and isinstance(proto.message, caffe_pb2.NetParameter)
    proto.name = "n"
    assert proto.message.name == "n" and proto == proto.message
    assert caffe_pb2.NetParameter.FromString(proto.SerializeToString()) == proto.message
    import copy
    import pickle
    for other in (copy.copy(proto), copy.deepcopy(proto), pickle.loads(pickle.dumps(proto))):
        assert isinstance(other, NetProto) and other == proto and other.message is not proto.message
        assert str(other) == str(proto)


def test_readme_netspec_example_runs(capsys):
    import re
    from conftest import REPO
    section = (REPO / "README.md").read_text().split("\n## Generating nets from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    scope = {"__name__": "readme"}
    exec(compile(blocks[0], "README.md#netspec", "exec"), scope)
    assert 'name: "conv1"' in capsys.readouterr().out
    assert scope["net"].forward()["loss"].item() == pytest.approx(np.log(10), rel=1e-3)


def test_unmodified_caffenet_runs_on_the_caffe_stand_in(tmp_path):
    """Without pycaffe installed, `import caffe` (after netspec) is netspec's stand-in, and
    the original script, not a port, prints pycaffe's text."""
    import subprocess
    import sys
    script = shared_path(PYCAFFE, "caffenet.py")
    probe = (f"import importlib.util, netspec.pycaffe, caffe\n"
             f"spec = importlib.util.spec_from_file_location('caffenet', {str(script)!r})\n"
             f"m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
             f"print(m.caffenet('/path/to/caffe-train-lmdb'), end='')\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    try:
        import caffe  # noqa: F401  (a real pycaffe here would be imported by the probe instead)
        real = "netspec" not in getattr(sys.modules["caffe"], "__file__", "")
    except ImportError:
        real = False
    if real:
        pytest.skip("a real pycaffe is installed; it wins over netspec's stand-in")
    assert out.returncode == 0, out.stderr
    assert out.stdout == golden("caffenet_train.prototxt")
