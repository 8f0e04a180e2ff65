"""The compiler: checked net -> nn.Module through generated source; convert; fx; torch.compile."""
import importlib.util
import subprocess
import sys

import pytest
import torch

from netspec.check import check_net, load
from netspec.cli.main import main
from netspec.compile.codegen import default_outputs
from netspec.compile.module import compile_net, runtime_error
from netspec.diagnostics import Diagnostics
from netspec.lower import NetSource, NetState
from netspec.parse import parse_text
from netspec.proto import caffe_pb2
from netspec.schema import to_message

from conftest import SHARED, shared_path

LENET = SHARED / "caffe-zoo" / "examples" / "mnist" / "lenet_train_test.prototxt"
ZOO_NETS = sorted(p for p in (SHARED / "caffe-zoo").rglob("*.prototxt") if "solver" not in p.name)

SMALL = """name: "small"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 4 dim: 1 dim: 12 dim: 12 } shape { dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv1/b" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv2" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def checked(text: str, phase: str = "TRAIN", path: str = "small.prototxt"):
    diags = Diagnostics()
    msg, smap = to_message(parse_text(text, path), caffe_pb2.NetParameter, diags)
    diags.check()
    return check_net(NetSource(msg, smap, (), path), NetState.of(phase))


def inputs_for(compiled, batch_label_classes: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    args = {}
    for blob in compiled.generated.inputs:
        shape = next(compiled.net.shapes[b] for b in compiled.net.shapes if b.name == blob and b.version == 0)
        if "label" in blob:
            args[blob] = torch.randint(0, batch_label_classes, shape, generator=g).float()
        else:
            args[blob] = torch.randn(shape, generator=g)
    return args


def test_state_dict_keys_are_stable_and_follow_layer_names():
    c = compile_net(checked(SMALL), seed=1)
    assert list(c.module.state_dict()) == ["conv1.weight", "conv1.bias", "conv1_b.weight",
                                           "conv1_b.bias", "ip.weight", "ip.bias"]
    assert c.module.CAFFE_LAYERS["conv1/b"] == "conv1_b"
    assert c.blob_key("conv1/b", 0) == "conv1_b.weight"


def test_seed_gives_reproducible_initialisation():
    a = compile_net(checked(SMALL), seed=7).module.state_dict()
    b = compile_net(checked(SMALL), seed=7).module.state_dict()
    c = compile_net(checked(SMALL), seed=8).module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_generated_source_is_one_statement_per_layer_with_prototxt_lines():
    c = compile_net(checked(SMALL), seed=0)
    src = c.generated.source
    assert "conv1 = self.conv1(data)  # small.prototxt:4 conv1 (Convolution) -> (4, 3, 10, 10)" in src
    assert "conv1_1 = F.relu(conv1)  # small.prototxt:6 relu1 (ReLU)" in src
    assert "self.conv1_b = nn.Conv2d(3, 2, kernel_size=3)  # small.prototxt:7 conv1/b (Convolution)" in src
    assert "import netspec" not in src


def test_long_class_constants_are_one_entry_per_line():
    """INPUTS/OUTPUTS/CAFFE_LAYERS that fit in 100 columns stay on one line; a longer one (a
    40-layer chain's CAFFE_LAYERS) is one entry per line, and the module holds the same mapping."""
    def chain(n):
        return SMALL.split("layer { name: \"conv1\"")[0] + "".join(
            f'layer {{ name: "relu{i}" type: "ReLU" bottom: "data" top: "data" }}\n' for i in range(n))
    short = compile_net(checked(chain(1)), seed=0).generated.source
    assert "    INPUTS = ('data', 'label')\n" in short
    assert "    CAFFE_LAYERS = {'data': 'data', 'relu0': 'relu0'}\n" in short
    c = compile_net(checked(chain(40)), seed=0)
    lines = c.generated.source.splitlines()
    start = lines.index("    CAFFE_LAYERS = {")
    assert lines[start + 1:start + 3] == ["        'data': 'data',", "        'relu0': 'relu0',"]
    assert lines[start + 42] == "    }" and max(len(line) for line in lines[start:start + 43]) < 100
    assert c.module.CAFFE_LAYERS == c.generated.attrs and len(c.module.CAFFE_LAYERS) == 41


def test_only_requested_outputs_are_compiled():
    net = checked(SMALL)
    conv2 = next(b for n in net.graph.layers() for b in n.tops if b.name == "conv2")
    c = compile_net(net, outputs=[conv2], seed=0)
    assert "ip" not in dict(c.module.named_children())
    assert set(c.module(**{"data": torch.randn(4, 1, 12, 12)})) == {"conv2"}


def test_convert_writes_standalone_code_with_bit_identical_outputs(tmp_path, capsys):
    path = tmp_path / "small.prototxt"
    path.write_text(SMALL)
    out = tmp_path / "small_model.py"
    assert main(["convert", str(path), "-o", str(out)]) == 0
    # the generated file runs in a fresh interpreter without netspec importable
    # sys.modules[...] = None makes any `import netspec` raise ImportError
    probe = f"import sys; sys.modules['netspec'] = None; exec(open({str(out)!r}).read())"
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=tmp_path)
    spec = importlib.util.spec_from_file_location("small_model", out)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    compiled = compile_net(checked(SMALL, path=str(path)), seed=3)
    standalone = mod.Small()
    standalone.load_state_dict(compiled.module.state_dict())
    args = inputs_for(compiled)
    a, b = compiled.module(**args), standalone(**args)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_module_is_fx_traceable():
    net = checked(SMALL)
    ip = next(b for n in net.graph.layers() for b in n.tops if b.name == "ip")
    c = compile_net(net, outputs=[ip], seed=0)       # the inference part: conv, relu, ip
    gm = torch.fx.symbolic_trace(c.module)
    args = {"data": torch.randn(4, 1, 12, 12)}
    ref, got = c.module(**args), gm(**args)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert not any(n.op == "call_module" and n.target == "" for n in gm.graph.nodes)


@pytest.mark.slow
def test_torch_compile_works_on_cpu():
    c = compile_net(checked(SMALL), seed=0)
    args = inputs_for(c)
    compiled = torch.compile(c.module)
    ref, got = c.module(**args), compiled(**args)
    assert torch.allclose(ref["loss"], got["loss"], rtol=1e-5, atol=1e-6)


def test_runtime_errors_name_the_layer_and_line():
    c = compile_net(checked(SMALL), seed=0)
    with pytest.raises(RuntimeError) as e:
        c.module(data=torch.randn(4, 2, 12, 12), label=torch.zeros(4))
    err = runtime_error(e.value, c)
    text = err.render()
    assert "layer 'conv1' (Convolution) failed" in text and "small.prototxt:4:" in text


def zoo_input_shapes(src) -> dict:
    """Shapes for data layers whose sources are absent: Caffe's datasets' known geometry."""
    shapes = {}
    for lp in src.net.layer:
        if lp.type not in ("Data", "ImageData", "WindowData"):
            continue
        p = {"Data": lp.data_param, "ImageData": lp.image_data_param,
             "WindowData": lp.window_data_param}[lp.type]
        n = min(p.batch_size or 2, 2)
        crop = lp.transform_param.crop_size
        c, hw = (1, 28) if "mnist" in p.source else (3, crop or 32)
        shapes[lp.top[0]] = (n, c, hw, hw)
        if len(lp.top) > 1:
            shapes[lp.top[1]] = (n,)
    return shapes


def final_shape(net, name):
    latest = None
    for node in net.graph.layers():
        for b in node.tops:
            if b.name == name:
                latest = b
    return net.shapes[latest]


@pytest.mark.parametrize("path", ZOO_NETS, ids=lambda p: str(p.relative_to(SHARED)))
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_every_zoo_net_compiles_and_runs(path, phase):
    _, src = load(path)
    stages = sorted({s for lp in src.net.layer for r in lp.include for s in r.stage})
    net = check_net(src, NetState.of(phase, stages=stages[:1] if phase == "TEST" else ()),
                    zoo_input_shapes(src))
    c = compile_net(net, seed=0)
    c.module.train(phase == "TRAIN")
    args = {}
    # a data layer's second top is its label, whatever its name (NetSpec's 'Data2')
    labels = {lp.top[1] for lp in src.net.layer if lp.type in ("Data", "ImageData", "WindowData")
              and len(lp.top) > 1}
    for name in c.generated.inputs:
        shape = final_shape(net, name)
        args[name] = torch.zeros(shape) if "label" in name or name in labels else torch.randn(shape)
    with torch.no_grad():
        out = c.module(**args)
    # a net whose every blob is consumed (pycaffe's silent_net) has no outputs, as in Caffe
    assert out or not default_outputs(net)
    for name, value in out.items():
        assert torch.isfinite(value).all(), name
        assert tuple(value.shape) == tuple(final_shape(net, name)), name


def test_googlenet_train_returns_three_weighted_losses_and_test_the_accuracies():
    _, src = load(shared_path("caffe-zoo/models/bvlc_googlenet/train_val.prototxt"))
    net = check_net(src, NetState.of("TRAIN"), zoo_input_shapes(src))
    weights = {l.layer: l.weight for l in net.losses}
    assert weights == pytest.approx({"loss1/loss": 0.3, "loss2/loss": 0.3, "loss3/loss3": 1.0})
    c = compile_net(net, seed=0)
    assert {"loss1/loss1", "loss2/loss2", "loss3/loss3"} <= set(c.generated.outputs)
    test = check_net(src, NetState.of("TEST"), zoo_input_shapes(src))
    outs = set(compile_net(test, seed=0).generated.outputs)
    assert {"loss1/top-1", "loss1/top-5", "loss2/top-1", "loss3/top-1", "loss3/top-5"} <= outs
