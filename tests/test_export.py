"""netspec export: any exit as a standalone model that computes what the full net computes."""
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import netspec
from netspec.check import check_net, load
from netspec.cli.main import main
from netspec.interop.export_net import build_export, write_prototxt, write_python
from netspec.lower import NetState
from netspec.tools.macs import exits

from benchmarks.common import vary_biases

from conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits" / "deep_plain.prototxt"
DIGITS_EXITS = {"exit1_loss": "exit1_fc", "exit2_loss": "exit2_fc", "exit3_loss": "exit3_fc", "main_loss": "main_fc"}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A digits snapshot (seeded weights), the full TEST net on it, and one input batch."""
    tmp = tmp_path_factory.mktemp("digits")
    weights = netspec.Net(DIGITS, phase="TEST", seed=5).save(tmp / "w.netspec")
    full = netspec.Net(DIGITS, phase="TEST", weights=weights)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full.forward(data=x, label=torch.zeros(3))
    return tmp, weights, full, x


def export(net, weights, to, out, exit=None, batch=3, extra=()) -> Path:
    args = ["export", str(net), "--weights", str(weights), "--to", to, "-o", str(out), "--batch", str(batch)]
    assert main(args + (["--exit", exit] if exit else []) + list(extra)) == 0
    return Path(out)


def run_python(path: Path, x: torch.Tensor) -> dict:
    spec = importlib.util.spec_from_file_location(f"exported_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cls = next(v for v in vars(mod).values() if isinstance(v, type) and hasattr(v, "CAFFE_LAYERS"))
    module = cls()
    module.load_state_dict(torch.load(path.with_suffix(".pt")))
    with torch.no_grad():
        return module.eval()(data=x)


def reimport(path: Path, x: torch.Tensor) -> dict:
    net = netspec.Net(path, phase="TEST", weights=path.with_suffix(".caffemodel"))
    assert net.missing == []
    with torch.no_grad():
        return net.forward(data=x)


@pytest.mark.parametrize("loss, top", list(DIGITS_EXITS.items()))
def test_every_digits_exit_exports_bit_identically(digits, loss, top, capsys):
    tmp, weights, full, x = digits
    want = F.softmax(full.blobs[top], 1)
    proto = export(DIGITS, weights, "prototxt", tmp / f"{loss}.prototxt", exit=loss)
    assert torch.equal(reimport(proto, x)["prob"], want)
    py = export(DIGITS, weights, "python", tmp / f"{loss}.py", exit=top)        # by classifier top too
    assert torch.equal(run_python(py, x)["prob"], want)
    # only what the exit needs, and as many parameters as `netspec check` says the exit has
    _, src = load(proto)
    deploy = check_net(src, NetState.of("TEST"))
    types = {n.type for n in deploy.graph.layers()}
    assert types.isdisjoint({"HDF5Data", "SoftmaxWithLoss", "Accuracy"}) and "Input" in types
    predicted = next(e for e in exits(full.net) if e.name == loss).params
    assert deploy.total_params() == predicted <= full.net.total_params()
    if loss != "main_loss":
        assert deploy.total_params() < full.net.total_params()
    assert f"{predicted:,} parameters" in capsys.readouterr().out


def test_onnx_and_pt2_agree_to_1e5(digits):
    tmp, weights, full, x = digits
    want = F.softmax(full.blobs["exit2_fc"], 1)
    pt2 = export(DIGITS, weights, "pt2", tmp / "exit2.pt2", exit="exit2_loss")
    got = torch.export.load(str(pt2)).module()(x)[0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    ort = pytest.importorskip("onnxruntime")
    onnx_file = export(DIGITS, weights, "onnx", tmp / "exit2.onnx", exit="exit2_loss")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(["prob"], {"data": x.numpy()})[0])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_whole_net_exports_every_exit(digits):
    tmp, weights, full, x = digits
    proto = export(DIGITS, weights, "prototxt", tmp / "all.prototxt")
    out = reimport(proto, x)
    assert set(out) == {f"{t}_prob" for t in DIGITS_EXITS.values()}
    for top in DIGITS_EXITS.values():
        assert torch.equal(out[f"{top}_prob"], F.softmax(full.blobs[top], 1))


def test_bad_exit_and_missing_weights_are_diagnostics(digits, tmp_path, capsys):
    _, weights, _, _ = digits
    assert main(["export", str(DIGITS), "--weights", str(weights), "--exit", "exit9", "-o",
                 str(tmp_path / "x.prototxt")]) == 1
    err = capsys.readouterr().err
    assert "E0800" in err and "exit1_loss (exit1_fc)" in err and "Traceback" not in err


def test_googlenet_aux_heads_export_bit_identically(tmp_path):
    path = shared_path("caffe-zoo", "models", "bvlc_googlenet", "train_val.prototxt")
    shapes = {"data": (1, 3, 224, 224), "label": (1,)}
    full = netspec.Net(path, phase="TEST", input_shapes=shapes, seed=2)
    g = torch.Generator().manual_seed(0)
    vary_biases(full, g)
    weights = full.save(tmp_path / "g.netspec")
    x = torch.randn(1, 3, 224, 224, generator=g)
    with torch.no_grad():
        full.forward(data=x, label=torch.zeros(1))
    # exits named by the loss layer and by the loss's top
    for loss, layer, top in (("loss1/loss", "loss1/loss", "loss1/classifier"),
                             ("loss2/loss2", "loss2/loss", "loss2/classifier")):
        want = F.softmax(full.blobs[top], 1)
        stem = loss.split("/")[0]
        if stem == "loss1":                 # the command once; the rest through the same functions
            proto = export(path, weights, "prototxt", tmp_path / f"{stem}.prototxt", exit=loss, batch=1,
                           extra=["--input-shape", "data=1,3,224,224", "--input-shape", "label=1"])
        else:
            exported = build_export(full, loss, 1)
            proto = write_prototxt(exported, tmp_path / f"{stem}.prototxt")[0]
        assert torch.equal(reimport(proto, x)["prob"], want), loss
        py = write_python(build_export(full, top, 1), tmp_path / f"{stem}.py")[0]
        assert torch.equal(run_python(py, x)["prob"], want), loss
        _, src = load(proto)
        deploy = check_net(src, NetState.of("TEST"))
        assert deploy.total_params() == next(e for e in exits(full.net) if e.name == layer).params
        assert "inception_5b/1x1" not in {n.name for n in deploy.graph.layers()}     # no main trunk
