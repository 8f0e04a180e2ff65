"""The inference build (netspec.compile.inference): folded BatchNorm/Scale/Bias, MAX pooling
without argmax, same numbers as the exact build and as Caffe."""
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import netspec
from netspec.diagnostics import NetspecError
from netspec.check import check_net, load
from netspec.compile.module import compile_net, inference_twin
from netspec.lower import NetState

from conftest import SHARED, shared_path

ZOO = SHARED / "caffe-zoo"
ZOO_NETS = [p for p in sorted(ZOO.rglob("*.prototxt")) if "solver" not in p.name] if ZOO.exists() else []
ORACLE_TEST = [c["dir"] for c in json.loads((SHARED / "caffe-oracle" / "manifest.json").read_text())["cases"]
               if c.get("phase") == "TEST" and c["kind"] != "solver"] \
    if (SHARED / "caffe-oracle" / "manifest.json").exists() else []


def data_shapes(src, batch: int = 2) -> dict:
    """Input shapes at batch ``batch``; for data layers whose source is absent, images as the
    transform's crop (or the dataset the file is named after), then labels."""
    net = check_net(src, NetState.of("TEST"))
    name = str(src.path).lower()
    hw = 28 if "mnist" in name or "lenet" in name else 32 if "cifar" in name else 227
    channels = 1 if hw == 28 else 3
    shapes = {}
    for node in net.graph.layers():
        if node.type == "Input" or node.impl.is_data and all(net.shapes.get(b) for b in node.tops):
            shapes |= {b.name: (batch,) + tuple(net.shapes[b])[1:] for b in node.tops if net.shapes.get(b)}
        elif node.impl.is_data:
            crop = node.lp.transform_param.crop_size or hw
            for i, top in enumerate(b.name for b in node.tops):
                shapes[top] = (batch, channels, crop, crop) if i == 0 else (batch,)
    return shapes


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Nontrivial BatchNorm statistics and Scale/Bias blobs, so that folding has work to do."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "scale_factor":
                t.fill_(2.0)
            elif leaf == "variance":
                t.copy_(torch.rand(t.shape, generator=g) * 4 + 0.5)
            elif leaf == "mean":
                t.copy_(torch.randn(t.shape, generator=g))
            elif leaf in ("weight", "bias") and t.dim() == 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.5 + (1 if leaf == "weight" else 0))


def assert_close_rel(actual, expected, rel=1e-5, what=""):
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * max(scale, 1e-30), msg=lambda m: f"{what}: {m}")


def _compile_pair(path, input_shapes=None):
    _, src = load(path)
    shapes = input_shapes if input_shapes is not None else data_shapes(src)
    net = check_net(src, NetState.of("TEST"), shapes)
    exact = compile_net(net, seed=1)
    randomize(exact.module)
    return net, exact, inference_twin(exact)


def _inputs(compiled, seed=0):
    from netspec.tools.timing import synthetic_inputs
    return synthetic_inputs(compiled, "cpu", seed)


@pytest.mark.parametrize("path", ZOO_NETS, ids=lambda p: str(p.relative_to(SHARED)))
def test_folded_equals_unfolded_on_the_zoo(path, monkeypatch):
    monkeypatch.chdir(path.parent)
    _, src = load(path)
    if src.net.layer and any(l.type == "Python" for l in src.net.layer):
        pytest.skip("Python layers")
    try:
        net, exact, inf = _compile_pair(path, data_shapes(src, batch=1))
    except NetspecError as e:
        errors = [d.message for d in e.diagnostics if d.code.startswith("E")]
        pytest.skip(f"does not compile at TEST phase: {errors[:1]}")
    inputs = _inputs(exact)
    with torch.no_grad():
        want = exact.module(**inputs)
        got = inf.module(**inputs)
    assert set(got) == set(want)              # a net without outputs (silent_net) returns none
    for k, v in got.items():
        if v.is_floating_point() and k not in {t.name for n in net.graph.layers() if n.type == "Accuracy"
                                                for t in n.tops}:
            assert_close_rel(v, want[k], what=f"{path.name}:{k}")


@pytest.mark.parametrize("case", ORACLE_TEST)
def test_oracle_test_phase_cases_hold_their_tolerance(case, monkeypatch):
    case_dir = shared_path("caffe-oracle", case)
    monkeypatch.chdir(case_dir)
    meta = json.loads((case_dir / "case.json").read_text())
    net = netspec.Net(case_dir / "net.prototxt", phase="TEST", weights=case_dir / "weights.caffemodel",
                      all_blobs=False)
    assert net.inference is not None
    inputs = dict(np.load(case_dir / "inputs.npz"))
    with torch.no_grad():
        out = net.forward(**inputs)
    forward, tol = np.load(case_dir / "forward.npz"), meta["tolerance"]["forward"]
    assert out
    for name, v in out.items():
        expected = forward[name]
        atol = tol["atol_scale"] * float(np.abs(expected).max())
        assert np.allclose(v.numpy(), expected, rtol=tol["rtol"], atol=atol), name


RESNET_BLOCK = """
name: "block"
input: "data" input_shape { dim: 2 dim: 3 dim: 9 dim: 9 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "bn2" type: "BatchNorm" bottom: "pool1" top: "bn2" }
layer { name: "bias2" type: "Bias" bottom: "bn2" top: "bn2" }
layer { name: "sum" type: "Eltwise" bottom: "bn2" bottom: "pool1" top: "sum" }
layer { name: "ip" type: "InnerProduct" bottom: "sum" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn3" type: "BatchNorm" bottom: "ip" top: "ip" }
layer { name: "scale3" type: "Scale" bottom: "ip" top: "ip" }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


@pytest.fixture
def block(tmp_path) -> Path:
    p = tmp_path / "block.prototxt"
    p.write_text(RESNET_BLOCK)
    return p


def test_batchnorm_and_scale_fold_into_the_layer_before(block):
    _, exact, inf = _compile_pair(block, {})
    src = inf.generated.source
    forward = src[src.index("def forward(self, data)"):src.index("def fold(self)")]
    assert "batch_norm" not in forward and "self.bn1(" not in forward and "self.scale1(" not in forward
    assert "F.conv2d(data, self.fold_conv1_weight, self.fold_conv1_bias" in forward
    assert "F.linear(sum_.flatten(1), self.fold_ip_weight, self.fold_ip_bias)" in forward or \
        re.search(r"F\.linear\(\w+\.flatten\(1\), self\.fold_ip_weight", forward)
    assert "torch.addcmul(self.fold_bn2_shift" in forward          # pool1 -> bn2 -> bias2: one affine
    assert "torch.relu_(" in forward                               # in place on the conv's fresh output
    # the state_dict is Caffe's unfolded blobs, the same keys as the exact build
    assert inf.module.state_dict().keys() == exact.module.state_dict().keys()
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        assert_close_rel(inf.module(data=x)["prob"], exact.module(data=x)["prob"])


def test_max_pooling_computes_no_argmax_unless_a_mask_is_asked(block, tmp_path):
    _, exact, inf = _compile_pair(block, {})
    x = torch.randn(2, 3, 9, 9)

    def ops(module):
        with torch.no_grad(), torch.profiler.profile() as prof:
            module(data=x)
        return {e.key for e in prof.key_averages()}
    assert "aten::max_pool2d_with_indices" in ops(exact.module)
    assert "aten::max_pool2d_with_indices" not in ops(inf.module)
    assert not any("batch_norm" in k for k in ops(inf.module))
    masked = tmp_path / "mask.prototxt"
    masked.write_text(RESNET_BLOCK.replace('top: "pool1" pooling_param', 'top: "pool1" top: "mask" pooling_param'))
    _, exact, inf = _compile_pair(masked, {})
    with torch.no_grad():
        torch.testing.assert_close(inf.module(data=x)["mask"], exact.module(data=x)["mask"], rtol=0, atol=0)


def test_refold_after_load_state_dict_and_in_place_changes(block):
    _, exact, inf = _compile_pair(block, {})
    x = torch.randn(2, 3, 9, 9)
    state = {k: v.clone() for k, v in exact.module.state_dict().items()}
    state["bn1.mean"] += 1.0
    state["ip.weight"] *= 2
    inf.module.load_state_dict(state)               # shared layers: the exact build sees it too
    with torch.no_grad():
        assert_close_rel(inf.module(data=x)["prob"], exact.module(data=x)["prob"])


def test_net_runs_the_inference_build_without_autograd(block):
    net = netspec.Net(block, phase="TEST")
    randomize(net.compiled.module)
    x = torch.randn(2, 3, 9, 9)
    exact = netspec.Net(block, phase="TEST", optimize="none")
    exact.compiled.module.load_state_dict(net.compiled.module.state_dict())
    with torch.no_grad():
        got, want = net.forward(data=x)["prob"], exact.forward(data=x)["prob"]
    assert_close_rel(got, want)
    assert net.params["bn1"][0] is net.compiled.module.bn1.mean     # Caffe's blobs, unfolded
    with torch.no_grad():                                        # an in-place change is refolded
        net.params["scale1"][0].mul_(3)
        exact.params["scale1"][0].mul_(3)
        assert_close_rel(net.forward(data=x)["prob"], exact.forward(data=x)["prob"])
    out = net.forward(data=x)                                    # autograd on: the exact build
    net.backward({"prob": torch.ones_like(out["prob"])})
    assert net.params["conv1"][0].grad is not None
    with pytest.raises(NetspecError, match="optimize"):
        netspec.Net(block, optimize="fast")


def test_training_modules_are_unchanged(block):
    _, src = load(block)
    net = check_net(src, NetState.of("TRAIN"), {})
    gen = compile_net(net, seed=0).generated.source
    assert "fold" not in gen and "caffe_max_pool_fast" not in gen


def test_max_on_the_cpu_is_the_default_build(block):
    net = netspec.Net(block, phase="TEST", optimize="max")
    assert net._run is net.inference.module          # channels_last/compile measured no gain on CPU
    with torch.no_grad():
        assert net.forward(data=torch.randn(2, 3, 9, 9))["prob"].shape == (2, 5)


def test_time_at_test_phase_times_the_inference_build(block, capsys):
    from netspec.cli.main import main
    assert main(["time", str(block), "--phase", "TEST", "--iterations", "2", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    assert "inference build, --optimize default" in out and "Average Forward pass" in out
    rows = {l.split()[0] for l in out.splitlines() if l.split()}
    assert {"conv1", "pool1", "ip", "prob"} <= rows and "bn1" not in rows       # folded into conv1
    assert main(["time", str(block), "--phase", "TEST", "--optimize", "none", "--iterations", "1"]) == 0
    assert "bn1" in capsys.readouterr().out


def test_netspec_test_scores_the_same_with_and_without_the_inference_build(tmp_path, capsys):
    from netspec.cli.main import main
    model = Path(__file__).resolve().parents[1] / "models" / "digits" / "deep_plain.prototxt"
    weights = netspec.Net(model, phase="TEST", seed=4).save(tmp_path / "w.netspec")
    scores = {}
    for level in ("none", "default"):
        assert main(["test", "--model", str(model), "--weights", str(weights), "--iterations", "2",
                     "--optimize", level]) == 0
        lines = capsys.readouterr().out.splitlines()
        scores[level] = {l.split(" = ")[0]: float(l.split(" = ")[1].split()[0]) for l in lines
                         if " = " in l and not l.startswith("Batch")}
    assert scores["none"].keys() == scores["default"].keys() and "main_accuracy" in scores["none"]
    for k, v in scores["none"].items():
        assert scores["default"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k


@pytest.mark.parametrize("name", ["resnet50", "caffenet"])
def test_benchmark_twins_compute_what_the_inference_build_computes(name):
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import bench_inference
    if not bench_inference.available(name):
        pytest.skip("no Caffe zoo")
    compiled, twin, x = bench_inference.build(name, 1)
    with torch.inference_mode():
        a, b = compiled.module(data=x)["prob"], twin(x)
    assert float(b.max()) < 0.9                                  # not a saturated one-hot
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def test_a_layer_named_fold_does_not_shadow_the_fold_method(tmp_path):
    p = tmp_path / "fold.prototxt"
    p.write_text(RESNET_BLOCK.replace('"conv1"', '"fold"'))
    _, exact, inf = _compile_pair(p, {})
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        assert_close_rel(inf.module(data=x)["prob"], exact.module(data=x)["prob"])
