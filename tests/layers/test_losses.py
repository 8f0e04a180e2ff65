"""Loss layers and DummyData: numpy references written from Caffe's definitions,
gradchecks, shape inference, refused configurations and the Caffe oracle cases."""
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from layer_util import compile_text
from netspec.diagnostics import NetspecError
from netspec.proto import caffe_pb2
from oracle_harness import ORACLE, manifest, run_case

MINE = {"SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss", "InfogainLoss",
        "MultinomialLogisticLoss", "ContrastiveLoss", "DummyData"}
CASES = [c for c in manifest() if c["kind"] == "layer" and MINE & set(c["layer_types"])]


# -- building one-loss nets ------------------------------------------------------------

def loss_net(ltype, inputs, body="", bottoms=None, tops=("loss",)):
    """An Input layer with ``inputs`` (name -> shape) feeding one ``ltype`` layer."""
    shapes = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in inputs.values())
    return compile_text(f"""
        layer {{ name: "input" type: "Input" {' '.join(f'top: "{n}"' for n in inputs)}
                 input_param {{ {shapes} }} }}
        layer {{ name: "loss" type: "{ltype}" {' '.join(f'bottom: "{b}"' for b in bottoms or inputs)}
                 {' '.join(f'top: "{t}"' for t in tops)} {body} }}""")


def run(compiled, **arrays):
    """Forward with float64 numpy inputs; returns the output dict."""
    m = compiled.module.double()
    return m(**{k: torch.as_tensor(v, dtype=torch.float64) for k, v in arrays.items()})


def grad_ok(compiled, wrt, **arrays):
    """gradcheck of top 'loss' with respect to the inputs named in ``wrt``."""
    m = compiled.module.double()
    fixed = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in arrays.items()}
    leaves = [fixed[k].clone().requires_grad_(True) for k in wrt]

    def f(*xs):
        return m(**{**fixed, **dict(zip(wrt, xs))})["loss"]
    return torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-6, rtol=1e-4)


def labels(rng, n, c, shape=None):
    return rng.integers(0, c, size=shape or (n,)).astype(np.float64)


# -- numpy references (Caffe's definitions) -----------------------------------------------

def normalizer(mode, outer, inner, valid):
    n = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return max(1.0, float(n))


def ref_softmax_loss(x, label, axis, ignore, mode):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    p = np.moveaxis(e / e.sum(axis=axis, keepdims=True), axis, -1).reshape(-1, x.shape[axis])
    lab = label.reshape(-1).astype(int)
    keep = lab != ignore if ignore is not None else np.ones_like(lab, bool)
    loss = -sum(np.log(max(p[i, lab[i]], np.finfo(np.float32).tiny)) for i in np.flatnonzero(keep))
    outer = int(np.prod(x.shape[:axis]))
    return loss / normalizer(mode, outer, p.shape[0] // outer, keep.sum())


def ref_sigmoid_ce(x, t, ignore, mode):
    keep = t.astype(int) != ignore if ignore is not None else np.ones(t.shape, bool)
    per = np.logaddexp(0, x) - x * t          # -t log s - (1 - t) log(1 - s)
    return per[keep].sum() / normalizer(mode, x.shape[0], x[0].size, keep.sum())


def ref_hinge(x, label, norm):
    n = x.shape[0]
    m = x.reshape(n, -1).copy()
    for i in range(n):
        m[i, int(label[i])] *= -1
    m = np.maximum(0, 1 + m)
    return (m if norm == "L1" else m ** 2).sum() / n


def ref_infogain(x, label, H, ignore=None, mode="VALID"):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    loss, valid = 0.0, 0
    for i in range(x.shape[0]):
        if ignore is not None and int(label[i]) == ignore:
            continue
        loss -= (H[int(label[i])] * np.log(np.maximum(p[i], 1e-20))).sum()
        valid += 1
    return loss / normalizer(mode, x.shape[0], 1, valid)


def ref_contrastive(a, b, y, margin, legacy):
    """Loss and Caffe's (a-)gradient, from contrastive_loss_layer.cpp."""
    n = a.shape[0]
    diff = (a - b).reshape(n, -1)
    loss, grad = 0.0, np.zeros_like(diff)
    for i in range(n):
        d2 = (diff[i] ** 2).sum()
        if int(y[i]):
            loss, grad[i] = loss + d2, diff[i] / n
        elif legacy:
            loss += max(margin - d2, 0)
            grad[i] = -diff[i] / n if margin - d2 > 0 else 0
        else:
            d = np.sqrt(d2)
            loss += max(margin - d, 0) ** 2
            grad[i] = -(margin - d) / (d + 1e-4) * diff[i] / n if margin - d > 0 else 0
    return loss / n / 2, grad


# -- SoftmaxWithLoss ----------------------------------------------------------------------

@pytest.mark.parametrize("body, mode, ignore", [
    ("", "VALID", None),
    ("loss_param { ignore_label: 1 }", "VALID", 1),
    ("loss_param { ignore_label: 0 normalization: FULL }", "FULL", 0),
    ("loss_param { ignore_label: 2 normalization: BATCH_SIZE }", "BATCH_SIZE", 2),
    ("loss_param { ignore_label: 2 normalization: NONE }", "NONE", 2),
    ("loss_param { normalize: false }", "BATCH_SIZE", None),
    ("loss_param { normalize: true ignore_label: 0 }", "VALID", 0),
])
def test_softmax_loss_matches_reference(body, mode, ignore):
    rng = np.random.default_rng(0)
    x, lab = rng.normal(size=(2, 3, 2, 4)), labels(rng, 2, 3, (2, 1, 2, 4))
    c = loss_net("SoftmaxWithLoss", {"x": x.shape, "label": lab.shape}, body)
    out = run(c, x=x, label=lab)["loss"]
    assert out.dim() == 0
    assert np.isclose(out.item(), ref_softmax_loss(x, lab, 1, ignore, mode), rtol=1e-10)
    assert grad_ok(c, ["x"], x=x, label=lab)


def test_softmax_loss_axis_and_prob_top():
    rng = np.random.default_rng(1)
    x, lab = rng.normal(size=(2, 3, 5)), labels(rng, 2, 5, (2, 3))
    c = loss_net("SoftmaxWithLoss", {"x": x.shape, "label": lab.shape},
                 "softmax_param { axis: -1 } loss_weight: 1 loss_weight: 0", tops=("loss", "prob"))
    out = run(c, x=x, label=lab)
    assert np.isclose(out["loss"].item(), ref_softmax_loss(x, lab, 2, None, "VALID"), rtol=1e-10)
    e = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(out["prob"].numpy(), e / e.sum(-1, keepdims=True), rtol=1e-12)


def test_softmax_loss_all_ignored_gives_zero():
    x, lab = np.ones((3, 4)), np.full((3,), 2.0)
    c = loss_net("SoftmaxWithLoss", {"x": x.shape, "label": lab.shape}, "loss_param { ignore_label: 2 }")
    assert run(c, x=x, label=lab)["loss"].item() == 0.0


@pytest.mark.parametrize("weights", ["", "loss_weight: 1"])
def test_loss_second_top_needs_loss_weight_per_top(weights):
    for ltype, extra in (("SoftmaxWithLoss", ""), ("InfogainLoss", ', "H"')):
        with pytest.raises(NetspecError, match="loss_weight once per top"):
            inputs = {"x": (2, 3), "label": (2,), "H": (3, 3)}
            loss_net(ltype, inputs, weights, tops=("loss", "prob"))


@settings(max_examples=25, deadline=None)
@given(dims=st.lists(st.integers(1, 4), min_size=2, max_size=4), data=st.data())
def test_softmax_loss_shapes(dims, data):
    axis = data.draw(st.integers(-len(dims), len(dims) - 1))
    ax = axis % len(dims)
    lab_shape = tuple(dims[:ax] + dims[ax + 1:]) or (1,)
    assume(dims[0] == lab_shape[0])
    c = loss_net("SoftmaxWithLoss", {"x": dims, "label": lab_shape},
                 f"softmax_param {{ axis: {axis} }} loss_weight: 1 loss_weight: 0", tops=("loss", "prob"))
    node = c.net.graph.layer("loss")
    inferred = [c.net.shapes[b] for b in node.tops]
    out = run(c, x=np.zeros(dims), label=np.zeros(lab_shape))
    assert inferred == [tuple(out["loss"].shape), tuple(out["prob"].shape)] == [(), tuple(dims)]


def test_softmax_loss_label_count_mismatch_is_a_shape_error():
    with pytest.raises(NetspecError, match="label has 3 elements"):
        loss_net("SoftmaxWithLoss", {"x": (3, 4, 2), "label": (3,)})


@pytest.mark.parametrize("ltype, floor, extra", [
    ("SoftmaxWithLoss", float(np.finfo(np.float32).tiny), {}),
    ("InfogainLoss", 1e-20, {"H": np.eye(3)}),
])
def test_log_clamp_in_value_but_exact_softmax_gradient(ltype, floor, extra):
    """Caffe clamps p inside the forward log only; its backward is softmax - H-weighted one-hot."""
    x, lab = np.array([[0.0, 200.0, 0.0]]), np.array([0.0])
    c = loss_net(ltype, {"x": x.shape, "label": lab.shape, **{k: v.shape for k, v in extra.items()}})
    t = torch.as_tensor(x).requires_grad_(True)
    m = c.module.double()
    loss = m(x=t, label=torch.as_tensor(lab), **{k: torch.as_tensor(v) for k, v in extra.items()})["loss"]
    assert np.isclose(loss.item(), -np.log(floor), rtol=1e-12)
    loss.backward()
    e = np.exp(x - x.max())
    np.testing.assert_allclose(t.grad.numpy(), e / e.sum() - np.eye(3)[[0]], rtol=1e-12, atol=1e-300)


# -- EuclideanLoss ------------------------------------------------------------------------

def test_euclidean_loss():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(4, 3, 2)), rng.normal(size=(4, 6))
    c = loss_net("EuclideanLoss", {"a": a.shape, "b": b.shape})
    out = run(c, a=a, b=b)["loss"]
    assert out.dim() == 0
    assert np.isclose(out.item(), ((a.reshape(4, 6) - b) ** 2).sum() / 4 / 2, rtol=1e-12)
    assert grad_ok(c, ["a", "b"], a=a, b=b)


def test_euclidean_loss_shape_errors():
    with pytest.raises(NetspecError, match="same number of values per sample"):
        loss_net("EuclideanLoss", {"a": (4, 3), "b": (4, 2)})
    with pytest.raises(NetspecError, match="same first dimension"):
        loss_net("EuclideanLoss", {"a": (4, 3), "b": (2, 6)})


# -- SigmoidCrossEntropyLoss -----------------------------------------------------------------

@pytest.mark.parametrize("body, mode, ignore", [
    ("", "BATCH_SIZE", None),
    ("loss_param { ignore_label: -1 }", "BATCH_SIZE", -1),
    ("loss_param { ignore_label: -1 normalization: VALID }", "VALID", -1),
    ("loss_param { normalization: FULL }", "FULL", None),
    ("loss_param { normalize: true }", "VALID", None),
])
def test_sigmoid_cross_entropy(body, mode, ignore):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 4)) * 30               # large |x| exercises the stable form
    t = rng.uniform(size=(3, 4))
    t[0, :2] = -1
    c = loss_net("SigmoidCrossEntropyLoss", {"x": x.shape, "t": t.shape}, body)
    out = run(c, x=x, t=t)["loss"]
    assert np.isclose(out.item(), ref_sigmoid_ce(x, t, ignore, mode), rtol=1e-10)
    assert grad_ok(c, ["x"], x=x / 30, t=t)


# -- HingeLoss -------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_loss(norm):
    rng = np.random.default_rng(4)
    x, lab = rng.normal(size=(5, 4, 1, 1)), labels(rng, 5, 4)
    c = loss_net("HingeLoss", {"x": x.shape, "label": lab.shape}, f"hinge_loss_param {{ norm: {norm} }}")
    assert np.isclose(run(c, x=x, label=lab)["loss"].item(), ref_hinge(x, lab, norm), rtol=1e-12)
    assert grad_ok(c, ["x"], x=x, label=lab)


# -- InfogainLoss ----------------------------------------------------------------------------

def write_h(path, H):
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(H.shape)
    blob.data.extend(H.reshape(-1).tolist())
    path.write_bytes(blob.SerializeToString())


@pytest.mark.parametrize("body, ignore, mode", [
    ("", None, "VALID"),
    ("loss_param { ignore_label: 1 normalization: BATCH_SIZE }", 1, "BATCH_SIZE"),
    ("loss_param { ignore_label: 0 }", 0, "VALID"),
])
def test_infogain_loss_from_file(tmp_path, monkeypatch, body, ignore, mode):
    rng = np.random.default_rng(5)
    H = rng.uniform(size=(4, 4)).astype(np.float32)
    write_h(tmp_path / "H.binaryproto", H)
    monkeypatch.chdir(tmp_path)
    x, lab = rng.normal(size=(6, 4)), labels(rng, 6, 4)
    c = loss_net("InfogainLoss", {"x": x.shape, "label": lab.shape},
                 f'infogain_loss_param {{ source: "H.binaryproto" }} {body}')
    assert "H" not in c.module.state_dict() and not any(k.endswith(".H") for k in c.module.state_dict())
    out = run(c, x=x, label=lab)["loss"]
    assert np.isclose(out.item(), ref_infogain(x, lab, H.astype(np.float64), ignore, mode), rtol=1e-9)
    assert grad_ok(c, ["x"], x=x, label=lab)


def test_infogain_loss_h_as_bottom_and_no_grad_into_h():
    rng = np.random.default_rng(6)
    x, lab, H = rng.normal(size=(3, 5)), labels(rng, 3, 5), rng.uniform(size=(5, 5))
    c = loss_net("InfogainLoss", {"x": x.shape, "label": lab.shape, "H": H.shape},
                 "loss_weight: 1 loss_weight: 0", tops=("loss", "prob"))
    out = run(c, x=x, label=lab, H=H)
    assert np.isclose(out["loss"].item(), ref_infogain(x, lab, H), rtol=1e-10)
    assert out["prob"].shape == x.shape
    h = torch.as_tensor(H, dtype=torch.float64).requires_grad_(True)
    loss = c.module(x=torch.as_tensor(x), label=torch.as_tensor(lab), H=h)["loss"]
    assert not loss.requires_grad or torch.autograd.grad(loss, h, allow_unused=True)[0] is None
    assert grad_ok(c, ["x"], x=x, label=lab, H=H)


@pytest.mark.parametrize("content", [None, b"\xff\xff\xff garbage"])
def test_infogain_missing_or_corrupt_file_names_it(tmp_path, monkeypatch, content):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / "bad_H.binaryproto").write_bytes(content)
    with pytest.raises(NetspecError, match="bad_H.binaryproto"):
        loss_net("InfogainLoss", {"x": (2, 3), "label": (2,)},
                 'infogain_loss_param { source: "bad_H.binaryproto" }')


def test_infogain_wrong_h_size_and_normalize_refused(tmp_path, monkeypatch):
    write_h(tmp_path / "H.binaryproto", np.eye(3, dtype=np.float32))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NetspecError, match="H.binaryproto"):
        loss_net("InfogainLoss", {"x": (2, 4), "label": (2,)}, 'infogain_loss_param { source: "H.binaryproto" }')
    with pytest.raises(NetspecError, match="normalize"):
        loss_net("InfogainLoss", {"x": (2, 3), "label": (2,)},
                 'infogain_loss_param { source: "H.binaryproto" } loss_param { normalize: true }')


# -- MultinomialLogisticLoss -----------------------------------------------------------------

def test_multinomial_logistic_loss_clamps_log_and_keeps_caffe_gradient():
    rng = np.random.default_rng(7)
    p, lab = rng.uniform(0.05, 1, size=(4, 5)), labels(rng, 4, 5)
    c = loss_net("MultinomialLogisticLoss", {"p": p.shape, "label": lab.shape})
    ref = -np.log(p[np.arange(4), lab.astype(int)]).sum() / 4
    assert np.isclose(run(c, p=p, label=lab)["loss"].item(), ref, rtol=1e-12)
    assert grad_ok(c, ["p"], p=p, label=lab)
    # a zero probability: log clamped at 1e-20, gradient -1 / (N * 1e-20) as in Caffe
    p[0, int(lab[0])] = 0.0
    t = torch.as_tensor(p).requires_grad_(True)
    loss = c.module(p=t, label=torch.as_tensor(lab))["loss"]
    clamped = np.maximum(p[np.arange(4), lab.astype(int)], 1e-20)
    assert np.isclose(loss.item(), -np.log(clamped).sum() / 4, rtol=1e-12)
    loss.backward()
    assert np.isclose(t.grad[0, int(lab[0])].item(), -1 / (4 * 1e-20))


def test_multinomial_label_must_be_flat():
    with pytest.raises(NetspecError, match="label must be"):
        loss_net("MultinomialLogisticLoss", {"p": (4, 5), "label": (4, 2)})


# -- ContrastiveLoss -------------------------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_loss_value_and_caffe_gradient(legacy):
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(6, 3)) * 0.5, rng.normal(size=(6, 3)) * 0.5
    y = np.array([1, 0, 0, 1, 0, 0.0])
    body = f"contrastive_loss_param {{ margin: 1.5 legacy_version: {str(legacy).lower()} }}"
    c = loss_net("ContrastiveLoss", {"a": a.shape, "b": b.shape, "y": y.shape}, body)
    ref, ref_grad = ref_contrastive(a, b, y, 1.5, legacy)
    ta, tb = (torch.as_tensor(v).requires_grad_(True) for v in (a, b))
    loss = c.module.double()(a=ta, b=tb, y=torch.as_tensor(y))["loss"]
    assert np.isclose(loss.item(), ref, rtol=1e-12)
    loss.backward()
    np.testing.assert_allclose(ta.grad.numpy(), ref_grad, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(tb.grad.numpy(), -ref_grad, rtol=1e-10, atol=1e-14)
    if legacy:      # Caffe's legacy gradient is the exact derivative
        assert grad_ok(c, ["a", "b"], a=a, b=b, y=y)


def test_contrastive_rejects_spatial_features():
    with pytest.raises(NetspecError, match=r"features must be \(N, C\)"):
        loss_net("ContrastiveLoss", {"a": (4, 3, 2, 2), "b": (4, 3, 2, 2), "y": (4,)})


# -- DummyData -------------------------------------------------------------------------------

def dummy_net(body, tops=("d",)):
    return compile_text(f"""layer {{ name: "dummy" type: "DummyData"
        {' '.join(f'top: "{t}"' for t in tops)} dummy_data_param {{ {body} }} }}""")


def test_dummy_data_constant_uniform_gaussian_refilled_each_forward():
    c = dummy_net("""data_filler { type: "constant" value: 2.5 }
                     data_filler { type: "uniform" min: -3 max: -2 }
                     data_filler { type: "gaussian" mean: 10 std: 0.5 }
                     shape { dim: 2 dim: 3 } shape { dim: 400 } shape { dim: 20 dim: 50 }""",
                  tops=("c", "u", "g"))
    first, second = c.module(), c.module()
    assert torch.equal(first["c"], torch.full((2, 3), 2.5))
    u, g = first["u"], first["g"]
    assert u.shape == (400,) and u.min() >= -3 and u.max() <= -2 and u.std() > 0.2
    assert abs(g.mean().item() - 10) < 0.1 and abs(g.std().item() - 0.5) < 0.05
    assert not torch.equal(first["u"], second["u"])
    assert first["c"].dtype == torch.float32 and not first["c"].requires_grad
    assert c.module.double()()["c"].dtype == torch.float64


def test_dummy_data_defaults_and_legacy_shape():
    c = dummy_net("num: 2 channels: 3 height: 4 width: 1 num: 5 channels: 1 height: 1 width: 2",
                  tops=("a", "b"))
    out = c.module()
    assert out["a"].shape == (2, 3, 4, 1) and out["b"].shape == (5, 1, 1, 2)
    assert not out["a"].any() and not out["b"].any()      # no filler: constant 0


@settings(max_examples=20, deadline=None)
@given(shapes=st.lists(st.lists(st.integers(0, 4), max_size=4), min_size=1, max_size=3))
def test_dummy_data_shapes(shapes):
    body = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in shapes)
    tops = [f"t{i}" for i in range(len(shapes))]
    c = dummy_net('data_filler { type: "constant" value: 1 } ' + body, tops=tops)
    out = c.module()
    node = c.net.graph.layer("dummy")
    assert [c.net.shapes[b] for b in node.tops] == [tuple(out[t].shape) for t in tops] == \
        [tuple(s) for s in shapes]


@pytest.mark.parametrize("body, tops, match", [
    ('data_filler { type: "xavier" } shape { dim: 2 }', 1, "xavier"),
    ("shape { dim: 2 } num: 2 channels: 1 height: 1 width: 1", 1, "one way only"),
    ("shape { dim: 2 } shape { dim: 3 }", 3, "2 `shape` entries for 3 tops"),
    ("num: 2 channels: 1", 1, "height"),
    ("", 1, "`shape`"),
])
def test_dummy_data_refused(body, tops, match):
    with pytest.raises(NetspecError, match=match):
        dummy_net(body, tops=[f"t{i}" for i in range(tops)])


# -- Caffe oracle ------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_caffe_oracle(case, monkeypatch):
    case_dir = ORACLE / case["dir"]
    monkeypatch.chdir(case_dir)                 # H.binaryproto is relative to the case directory
    bad = run_case(Path(case_dir))
    assert not bad, "\n".join(map(str, bad))
