"""Vision and normalisation layers: Caffe oracle cases, independent numpy references,
gradcheck, shape inference against the compiled module, and pooling corner cases."""
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layer_util import compile_text
from netspec.diagnostics import NetspecError
from oracle_harness import ORACLE, manifest, run_case

TYPES = {"Convolution", "Deconvolution", "Pooling", "SPP", "Crop", "LRN", "BatchNorm", "Scale",
         "Bias", "MVN"}
CASES = [c["dir"] for c in manifest() if c["kind"] in ("layer", "net") and set(c["layer_types"]) & TYPES]
FLT_MAX = float(np.finfo(np.float32).max)
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- helpers --------------------------------------------------------------------------------

def net_text(inputs: dict, layer: str) -> str:
    """An Input layer with the given tops and shapes, then ``layer`` (prototxt text)."""
    tops = "".join(f'top: "{n}" ' for n in inputs)
    shapes = "".join("shape { " + " ".join(f"dim: {d}" for d in s) + " } " for s in inputs.values())
    return f'layer {{ name: "in" type: "Input" {tops} input_param {{ {shapes} }} }}\n{layer}'


def build(layer: str, phase="TRAIN", **inputs):
    """Compile ``layer`` fed by Input blobs shaped like the given arrays."""
    return compile_text(net_text({k: v.shape for k, v in inputs.items()}, layer), phase)


def run(layer: str, phase="TRAIN", **inputs):
    compiled = build(layer, phase, **inputs)
    return compiled, compiled.module(**{k: torch.as_tensor(v) for k, v in inputs.items()})


def inferred(compiled, name="y"):
    return next(s for b, s in compiled.net.shapes.items() if b.name == name)


def gradcheck(compiled, *arrays, params=False):
    """gradcheck the compiled module in float64 w.r.t. its inputs (and parameters if asked)."""
    module = compiled.module.double()
    names = compiled.generated.inputs
    xs = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]
    ps = list(module.parameters()) if params else []

    def f(*args):
        out = module(**dict(zip(names, args[:len(xs)])))
        return tuple(v for v in out.values() if v.requires_grad)
    assert torch.autograd.gradcheck(f, (*xs, *ps), eps=1e-6, atol=1e-5, fast_mode=True)


def rng(seed=0):
    return np.random.default_rng(seed)


# -- Caffe oracle ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_caffe_oracle(case):
    bad = run_case(ORACLE / case)
    assert not bad, "\n".join(map(str, bad))


# -- Pooling --------------------------------------------------------------------------------

def ref_pool_size(n, k, s, p, ceil=True):
    o = int((math.ceil if ceil else math.floor)((n + 2 * p - k) / s)) + 1
    if p > 0 and (o - 1) * s >= n + p:
        o -= 1
    return o


def ref_pool(x, method, k, s, p, ceil=True):
    """Caffe's pooling_layer.cpp forward loops (MAX with mask, AVE, STOCHASTIC test)."""
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    n, c, h, w = x.shape
    oh, ow = ref_pool_size(h, kh, sh, ph, ceil), ref_pool_size(w, kw, sw, pw, ceil)
    y, mask = np.zeros((n, c, oh, ow)), -np.ones((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * sh - ph, j * sw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs:he, ws:we].reshape(n, c, -1)
            if method == "AVE":
                with np.errstate(invalid="ignore"):
                    y[:, :, i, j] = win.sum(-1) / size
            elif method == "STOCHASTIC":
                tot = win.sum(-1)
                y[:, :, i, j] = np.where(tot > 0, (win ** 2).sum(-1) / np.where(tot > 0, tot, 1), 0)
            elif win.shape[-1] == 0:
                y[:, :, i, j] = -FLT_MAX
            else:
                a = win.argmax(-1)          # numpy's argmax is the first maximum, as Caffe's scan
                y[:, :, i, j] = win.max(-1)
                mask[:, :, i, j] = (hs + a // (we - ws)) * w + ws + a % (we - ws)
    return y, mask


def pool_layer(method, k, s, p, extra="", tops=("y",)):
    top = " ".join(f'top: "{t}"' for t in tops)
    return (f'layer {{ name: "pool" type: "Pooling" bottom: "x" {top} pooling_param {{ pool: {method} '
            f'kernel_h: {k[0]} kernel_w: {k[1]} stride_h: {s[0]} stride_w: {s[1]} '
            f'pad_h: {p[0]} pad_w: {p[1]} {extra} }} }}')


POOL_GEOMETRIES = [
    ((3, 3), (2, 2), (0, 0), (9, 10)),    # AlexNet/GoogLeNet style, ceil clipping
    ((3, 3), (2, 2), (1, 1), (7, 8)),
    ((2, 2), (2, 2), (1, 1), (5, 6)),     # last-window rule drops a row
    ((3, 2), (1, 3), (2, 1), (6, 7)),     # pad > kernel/2: torch cannot pad this itself
    ((1, 2), (3, 3), (0, 0), (5, 4)),     # stride > kernel, no pad: Caffe keeps an empty window
    ((2, 2), (4, 4), (0, 0), (4, 9)),     # empty window starting exactly at the border
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("ceil", [True, False])
@pytest.mark.parametrize("k,s,p,hw", POOL_GEOMETRIES)
def test_pool_matches_caffe_loops(method, ceil, k, s, p, hw):
    x = rng().normal(size=(2, 3, *hw)).astype(np.float32)
    extra = "" if ceil else "round_mode: FLOOR"
    tops = ("y", "mask") if method == "MAX" else ("y",)
    compiled, out = run(pool_layer(method, k, s, p, extra, tops), x=x)
    want, mask = ref_pool(x.astype(np.float64), method, k, s, p, ceil)
    assert inferred(compiled) == want.shape == tuple(out["y"].shape)
    np.testing.assert_allclose(out["y"].detach().numpy(), want, rtol=1e-5, atol=1e-6)
    if method == "MAX":
        np.testing.assert_array_equal(out["mask"].numpy(), mask)


@pytest.mark.parametrize("k,s,p,hw", POOL_GEOMETRIES[1:4])
@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pool_gradcheck(method, k, s, p, hw):
    # distinct values: the gradient of MAX is only defined without ties
    x = rng(1).permutation(2 * 2 * hw[0] * hw[1]).reshape(2, 2, *hw) / 7.0
    gradcheck(build(pool_layer(method, k, s, p), x=x), x)


@pytest.mark.parametrize("k,s,p,hw", POOL_GEOMETRIES)
def test_max_pool_backward_goes_to_the_first_maximum(k, s, p, hw):
    # few distinct values: many ties, which Caffe breaks by row-major order
    x = rng(8).integers(0, 3, size=(2, 2, *hw)).astype(np.float32)
    compiled = build(pool_layer("MAX", k, s, p), x=x)
    inp = torch.tensor(x, requires_grad=True)
    y = compiled.module(x=inp)["y"]
    dy = rng(9).normal(size=y.shape)
    y.backward(torch.tensor(dy, dtype=torch.float32))
    _, mask = ref_pool(x, "MAX", k, s, p)
    want = np.zeros((2, 2, hw[0] * hw[1]))
    for idx in np.ndindex(mask.shape):
        if mask[idx] >= 0:
            want[idx[0], idx[1], int(mask[idx])] += dy[idx]
    np.testing.assert_allclose(inp.grad.numpy().reshape(want.shape), want, rtol=1e-6, atol=1e-6)


def test_stochastic_pooling_at_test_is_probability_weighted():
    x = rng(2).uniform(-0.2, 1, size=(2, 2, 7, 6)).astype(np.float32)
    x[0, 0, :3, :3] = -1           # a window with a non-positive sum gives 0
    compiled, out = run(pool_layer("STOCHASTIC", (3, 3), (2, 2), (0, 0)), "TEST", x=x)
    want, _ = ref_pool(x.astype(np.float64), "STOCHASTIC", (3, 3), (2, 2), (0, 0))
    assert want[0, 0, 0, 0] == 0
    np.testing.assert_allclose(out["y"].numpy(), want, rtol=1e-5, atol=1e-6)


def test_stochastic_pooling_in_train_is_refused():
    x = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(NetspecError, match="STOCHASTIC pooling in TRAIN"):
        build(pool_layer("STOCHASTIC", (2, 2), (2, 2), (0, 0)), x=x)


@pytest.mark.parametrize("extra,match", [
    ("", "must be smaller than the kernel"),
])
def test_pool_pad_must_be_smaller_than_kernel(extra, match):
    with pytest.raises(NetspecError, match=match):
        build(pool_layer("MAX", (2, 2), (1, 1), (2, 0), extra), x=np.zeros((1, 1, 5, 5)))


@pytest.mark.parametrize("text,match", [
    ("pool: MAX kernel_size: 3 kernel_h: 3 kernel_w: 3", "either kernel_size or"),
    ("pool: MAX kernel_h: 3", "kernel_h needs kernel_w"),
    ("pool: MAX", "kernel_size .* is required"),
    ("pool: AVE global_pooling: true kernel_size: 2", "global_pooling takes the whole plane"),
    ("pool: AVE global_pooling: true stride: 2", "global_pooling needs pad 0 and stride 1"),
    ("pool: AVE kernel_size: 2 stride: 0", "stride must be positive"),
    ("pool: AVE kernel_size: 3 round_mode: FLOOR ceil_mode: true", "contradicts round_mode"),
])
def test_pool_parameter_errors(text, match):
    layer = f'layer {{ name: "p" type: "Pooling" bottom: "x" top: "y" pooling_param {{ {text} }} }}'
    with pytest.raises(NetspecError, match=match):
        build(layer, x=np.zeros((1, 1, 6, 6)))


@pytest.mark.parametrize("text,match", [
    ("stride_w: 2", "stride_w is given without stride_h, which Caffe then reads as 0"),
    ("kernel_h: 3 kernel_w: 3 stride_h: 2", "stride_h is given without stride_w"),
    ("kernel_size: 3 kernel_h: 3 kernel_w: 3", "either kernel_size or kernel_h/kernel_w"),
    ("stride: 0", r"stride must be positive, got \[0, 0\]"),
    ("dilation: 0", "dilation must be positive"),
])
def test_convolution_geometry_errors_are_reported_once(text, match):
    """Caffe's pair rule for the _h/_w fields (the one not given is 0), and each geometry
    error once: shape inference and the blob shapes used to report it twice."""
    extra = "" if "kernel" in text else "kernel_size: 3 "
    layer = (f'layer {{ name: "c" type: "Convolution" bottom: "x" top: "y" '
             f'convolution_param {{ num_output: 2 {extra}{text} }} }}')
    with pytest.raises(NetspecError, match=match) as e:
        build(layer, x=np.zeros((1, 1, 6, 6)))
    errors = [d.message for d in e.value.diagnostics if d.is_error]
    assert len(errors) == 1, errors


def test_padding_alone_on_one_axis_is_caffe_valid():
    """pad_h without pad_w is fine in Caffe (pad_w stays 0): no pair error for pad."""
    layer = ('layer { name: "c" type: "Convolution" bottom: "x" top: "y" '
             'convolution_param { num_output: 2 kernel_size: 3 pad_h: 1 } }')
    assert inferred(build(layer, x=np.zeros((1, 1, 6, 6)))) == (1, 2, 6, 4)


def test_pool_mask_top_only_for_max():
    with pytest.raises(NetspecError, match="only MAX pooling has a second top"):
        build(pool_layer("AVE", (2, 2), (2, 2), (0, 0), tops=("y", "m")), x=np.zeros((1, 1, 4, 4)))


@pytest.mark.parametrize("ceil_mode,rows", [("true", 4), ("false", 3)])
def test_ceil_mode_dialect(ceil_mode, rows):
    compiled = build(pool_layer("MAX", (3, 3), (2, 2), (0, 0), f"ceil_mode: {ceil_mode}"),
                     x=np.zeros((1, 1, 8, 8)))
    assert inferred(compiled)[2] == rows


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(method):
    x = rng(3).normal(size=(2, 3, 5, 4))
    layer = (f'layer {{ name: "p" type: "Pooling" bottom: "x" top: "y" '
             f'pooling_param {{ pool: {method} global_pooling: true }} }}')
    compiled, out = run(layer, x=x.astype(np.float32))
    want = x.max((2, 3), keepdims=True) if method == "MAX" else x.mean((2, 3), keepdims=True)
    assert inferred(compiled) == (2, 3, 1, 1)
    np.testing.assert_allclose(out["y"].numpy(), want, rtol=1e-5)
    gradcheck(compiled, x)


def _zoo_pool_params(path, names):
    from netspec.check import load
    _, src = load(path)
    layers = {lp.name: lp.pooling_param for lp in src.net.layer}
    return [layers[n] for n in names]


def _pool_chain(params, size):
    sizes = [size]
    for pp in params:
        text = pool_layer("MAX", (pp.kernel_size,) * 2, (pp.stride,) * 2, (pp.pad,) * 2)
        sizes.append(inferred(build(text, x=np.zeros((1, 1, sizes[-1], sizes[-1]))))[2])
    return sizes


def test_googlenet_pooling_chain():
    from conftest import shared_path
    params = _zoo_pool_params(shared_path("caffe-zoo/models/bvlc_googlenet/train_val.prototxt"),
                              ["pool1/3x3_s2", "pool2/3x3_s2", "pool3/3x3_s2", "pool4/3x3_s2"])
    assert [(p.kernel_size, p.stride, p.pad) for p in params] == [(3, 2, 0)] * 4
    assert _pool_chain(params, 112) == [112, 56, 28, 14, 7]   # floor would give 55, 27, 13, 6


def test_alexnet_pooling_chain():
    from conftest import shared_path
    params = _zoo_pool_params(shared_path("caffe-zoo/models/bvlc_alexnet/train_val.prototxt"),
                              ["pool1", "pool2", "pool5"])
    assert _pool_chain(params, 55) == [55, 27, 13, 6]


@SETTINGS
@given(k=st.tuples(st.integers(1, 4), st.integers(1, 4)), s=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       p=st.tuples(st.integers(0, 3), st.integers(0, 3)), hw=st.tuples(st.integers(1, 9), st.integers(1, 9)),
       method=st.sampled_from(["MAX", "AVE"]), ceil=st.booleans())
def test_pool_shapes(k, s, p, hw, method, ceil):
    p = tuple(min(pi, ki - 1) for pi, ki in zip(p, k))
    if min(ref_pool_size(n, ki, si, pi, ceil) for n, ki, si, pi in zip(hw, k, s, p)) <= 0:
        return
    x = rng().normal(size=(1, 2, *hw)).astype(np.float32)
    compiled, out = run(pool_layer(method, k, s, p, "" if ceil else "round_mode: FLOOR"), x=x)
    assert inferred(compiled) == tuple(out["y"].shape)
    want, _ = ref_pool(x.astype(np.float64), method, k, s, p, ceil)
    np.testing.assert_allclose(out["y"].numpy(), want, rtol=1e-5, atol=1e-6)


# -- SPP ------------------------------------------------------------------------------------

def ref_spp(x, height, method):
    """Caffe's SPP from spp_layer.cpp: per level kernel = ceil(H / bins), pad = (k*bins - H + 1) / 2."""
    parts = []
    for level in range(height):
        bins = 2 ** level
        geo = [(math.ceil(n / bins), (math.ceil(n / bins) * bins - n + 1) // 2) for n in x.shape[2:]]
        k, p = tuple(g[0] for g in geo), tuple(g[1] for g in geo)
        y, _ = ref_pool(x, method, k, k, p)
        parts.append(y.reshape(x.shape[0], -1))
    return np.concatenate(parts, 1) if height > 1 else y


@pytest.mark.parametrize("height,method,hw", [(3, "MAX", (9, 7)), (2, "AVE", (6, 8)), (1, "MAX", (5, 5))])
def test_spp_matches_reference(height, method, hw):
    x = rng(4).permutation(2 * 2 * hw[0] * hw[1]).reshape(2, 2, *hw) / 11.0
    layer = (f'layer {{ name: "spp" type: "SPP" bottom: "x" top: "y" '
             f'spp_param {{ pyramid_height: {height} pool: {method} }} }}')
    compiled, out = run(layer, x=x.astype(np.float32))
    want = ref_spp(x, height, method)
    assert inferred(compiled) == want.shape == tuple(out["y"].shape)
    np.testing.assert_allclose(out["y"].numpy(), want, rtol=1e-5, atol=1e-6)
    gradcheck(compiled, x)


def test_spp_refuses_a_level_with_pad_as_large_as_the_kernel():
    # 10 rows in 8 bins: kernel 2, pad 3 -> Caffe's pooling would abort
    layer = 'layer { name: "spp" type: "SPP" bottom: "x" top: "y" spp_param { pyramid_height: 4 } }'
    with pytest.raises(NetspecError, match="needs pad 3 >= kernel 2"):
        build(layer, x=np.zeros((1, 1, 10, 10)))


@SETTINGS
@given(hw=st.tuples(st.integers(1, 12), st.integers(1, 12)), height=st.integers(1, 4))
def test_spp_shapes(hw, height):
    x = rng().normal(size=(1, 2, *hw))
    layer = (f'layer {{ name: "spp" type: "SPP" bottom: "x" top: "y" '
             f'spp_param {{ pyramid_height: {height} }} }}')
    try:
        compiled, out = run(layer, x=x.astype(np.float32))
    except NetspecError as e:
        assert "which Caffe's pooling refuses" in str(e)
        return
    assert inferred(compiled) == tuple(out["y"].shape)
    np.testing.assert_allclose(out["y"].numpy(), ref_spp(x, height, "MAX"), rtol=1e-5, atol=1e-6)


# -- Deconvolution / Convolution -------------------------------------------------------------

def ref_deconv(x, w, b, stride, pad, dilation, group):
    """Transposed convolution by scattering each input pixel times the kernel (Caffe's col2im)."""
    n, cin, h, wd = x.shape
    cpg, kh, kw = w.shape[1], w.shape[2], w.shape[3]
    oh = stride[0] * (h - 1) + dilation[0] * (kh - 1) + 1 - 2 * pad[0]
    ow = stride[1] * (wd - 1) + dilation[1] * (kw - 1) + 1 - 2 * pad[1]
    full = np.zeros((n, cpg * group, stride[0] * h + dilation[0] * kh, stride[1] * wd + dilation[1] * kw))
    for ci in range(cin):
        g = ci // (cin // group)
        for i in range(h):
            for j in range(wd):
                for a in range(kh):
                    for c in range(kw):
                        full[:, g * cpg:(g + 1) * cpg, i * stride[0] + a * dilation[0],
                             j * stride[1] + c * dilation[1]] += x[:, ci, i, j, None] * w[ci, :, a, c]
    y = full[:, :, pad[0]:pad[0] + oh, pad[1]:pad[1] + ow]
    return y + (0 if b is None else b[None, :, None, None])


def deconv_layer(num_output, k, s, p, d=(1, 1), group=1, bias=True, type_="Deconvolution"):
    return (f'layer {{ name: "dc" type: "{type_}" bottom: "x" top: "y" convolution_param {{ '
            f'num_output: {num_output} kernel_h: {k[0]} kernel_w: {k[1]} stride_h: {s[0]} '
            f'stride_w: {s[1]} pad_h: {p[0]} pad_w: {p[1]} dilation: {d[0]} dilation: {d[1]} '
            f'group: {group} bias_term: {str(bias).lower()} '
            f'weight_filler {{ type: "gaussian" std: 1 }} bias_filler {{ type: "gaussian" std: 1 }} }} }}')


@pytest.mark.parametrize("cin,cout,k,s,p,d,group", [
    (2, 3, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    (4, 6, (2, 3), (2, 1), (0, 1), (1, 1), 2),
    (3, 3, (3, 2), (1, 2), (2, 0), (2, 1), 3),
])
def test_deconv_matches_reference(cin, cout, k, s, p, d, group):
    x = rng(5).normal(size=(2, cin, 4, 5)).astype(np.float32)
    compiled, out = run(deconv_layer(cout, k, s, p, d, group), x=x)
    w = compiled.module.state_dict()[compiled.blob_key("dc", 0)].numpy()
    b = compiled.module.state_dict()[compiled.blob_key("dc", 1)].numpy()
    assert w.shape == (cin, cout // group, *k)
    want = ref_deconv(x.astype(np.float64), w, b, s, p, d, group)
    assert inferred(compiled) == want.shape
    np.testing.assert_allclose(out["y"].detach().numpy(), want, rtol=1e-4, atol=1e-4)
    gradcheck(compiled, x, params=True)


@SETTINGS
@given(k=st.tuples(st.integers(1, 4), st.integers(1, 4)), s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       p=st.tuples(st.integers(0, 3), st.integers(0, 3)), d=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       hw=st.tuples(st.integers(1, 6), st.integers(1, 6)),
       type_=st.sampled_from(["Convolution", "Deconvolution"]))
def test_conv_and_deconv_shapes(k, s, p, d, hw, type_):
    x = np.zeros((1, 2, *hw), np.float32)
    try:
        compiled, out = run(deconv_layer(2, k, s, p, d, 1, type_=type_), x=x)
    except NetspecError as e:
        assert "output would be empty" in str(e) or "removes the whole output" in str(e)
        return
    assert inferred(compiled) == tuple(out["y"].shape)


# -- Crop -----------------------------------------------------------------------------------

@SETTINGS
@given(a=st.lists(st.integers(1, 5), min_size=2, max_size=4), data=st.data())
def test_crop_matches_slicing(a, data):
    axis = data.draw(st.integers(0, len(a) - 1))
    b = [ai if i < axis else data.draw(st.integers(1, ai)) for i, ai in enumerate(a)]
    offs = [data.draw(st.integers(0, ai - bi)) for ai, bi in zip(a[axis:], b[axis:])]
    x = rng().normal(size=a).astype(np.float32)
    ref = np.zeros(b, np.float32)
    offset = " ".join(f"offset: {o}" for o in offs)
    layer = (f'layer {{ name: "c" type: "Crop" bottom: "x" bottom: "r" top: "y" '
             f'crop_param {{ axis: {axis} {offset} }} }}')
    compiled, out = run(layer, x=x, r=ref)
    idx = (slice(None),) * axis + tuple(slice(o, o + n) for o, n in zip(offs, b[axis:]))
    assert inferred(compiled) == tuple(b) == tuple(out["y"].shape)
    np.testing.assert_array_equal(out["y"].numpy(), x[idx])


def test_crop_gradient_and_reference_blob():
    x, r = rng().normal(size=(2, 3, 5, 6)), np.zeros((2, 3, 3, 3))
    layer = ('layer { name: "c" type: "Crop" bottom: "x" bottom: "r" top: "y" '
             'crop_param { offset: 1 offset: 2 } }')
    compiled = build(layer, x=x, r=r)
    assert compiled.net.graph.layer("c").impl.no_grad_bottoms == (1,)
    gradcheck(compiled, x, r)


def test_crop_refuses_out_of_range_offsets():
    layer = ('layer { name: "c" type: "Crop" bottom: "x" bottom: "r" top: "y" '
             'crop_param { axis: 2 offset: 3 } }')
    with pytest.raises(NetspecError, match="cannot crop 3 elements at offset 3"):
        build(layer, x=np.zeros((1, 1, 5, 5)), r=np.zeros((1, 1, 3, 3)))


# -- LRN ------------------------------------------------------------------------------------

def ref_lrn(x, size, alpha, beta, k, within):
    n, c, h, w = x.shape
    pre = (size - 1) // 2
    if within:
        sq = np.pad(x ** 2, ((0, 0), (0, 0), (pre, pre), (pre, pre)))
        avg = sum(sq[:, :, i:i + h, j:j + w] for i in range(size) for j in range(size)) / size ** 2
        return x * (1 + alpha * avg) ** -beta
    sq = np.pad(x ** 2, ((0, 0), (pre, size - pre - 1), (0, 0), (0, 0)))
    total = sum(sq[:, i:i + c] for i in range(size))
    return x * (k + alpha / size * total) ** -beta


@pytest.mark.parametrize("size,region", [(5, "ACROSS_CHANNELS"), (3, "ACROSS_CHANNELS"),
                                         (3, "WITHIN_CHANNEL"), (5, "WITHIN_CHANNEL")])
def test_lrn_matches_reference(size, region):
    x = rng(6).normal(size=(2, 7, 5, 4))
    layer = (f'layer {{ name: "n" type: "LRN" bottom: "x" top: "y" lrn_param {{ local_size: {size} '
             f'alpha: 0.7 beta: 0.6 k: 1.5 norm_region: {region} }} }}')
    compiled, out = run(layer, x=x.astype(np.float32))
    want = ref_lrn(x, size, np.float32(0.7), np.float32(0.6), 1.5, region == "WITHIN_CHANNEL")
    np.testing.assert_allclose(out["y"].numpy(), want, rtol=1e-5, atol=1e-6)
    gradcheck(compiled, x)


def test_lrn_refuses_even_sizes():
    layer = 'layer { name: "n" type: "LRN" bottom: "x" top: "y" lrn_param { local_size: 4 } }'
    with pytest.raises(NetspecError, match="positive odd number"):
        build(layer, x=np.zeros((1, 3, 2, 2)))


# -- BatchNorm ------------------------------------------------------------------------------

def bn_layer(extra="", params=""):
    return (f'layer {{ name: "bn" type: "BatchNorm" bottom: "x" top: "y" {params} '
            f'batch_norm_param {{ {extra} }} }}')


def _set_bn(compiled, mean, var, s):
    with torch.no_grad():
        for i, v in enumerate((mean, var, [s])):
            dict(compiled.module.named_buffers())[compiled.blob_key("bn", i)].copy_(torch.tensor(v))


def test_batchnorm_train_normalises_and_updates_running_sums():
    x = rng(7).normal(2, 3, size=(3, 4, 2, 5))
    compiled = build(bn_layer("moving_average_fraction: 0.5 eps: 0.01"), x=x)
    mean0, var0 = rng(8).normal(size=4), rng(9).uniform(1, 2, size=4)
    _set_bn(compiled, mean0, var0, 2.0)
    y = compiled.module(x=torch.tensor(x, dtype=torch.float32))["y"].numpy()
    mu, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
    want = (x - mu[None, :, None, None]) / np.sqrt(var + 0.01)[None, :, None, None]
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
    buffers = {k: v.numpy() for k, v in compiled.module.named_buffers()}
    m = 3 * 2 * 5
    np.testing.assert_allclose(buffers[compiled.blob_key("bn", 0)], 0.5 * mean0 + mu, rtol=1e-5)
    np.testing.assert_allclose(buffers[compiled.blob_key("bn", 1)], 0.5 * var0 + m / (m - 1) * var, rtol=1e-5)
    np.testing.assert_allclose(buffers[compiled.blob_key("bn", 2)], [2.0], rtol=1e-6)


@pytest.mark.parametrize("s", [0.8, 0.0])
def test_batchnorm_test_uses_global_stats(s):
    x = rng(10).normal(size=(2, 3, 4))
    compiled = build(bn_layer(), "TEST", x=x)
    mean, var = rng(11).normal(size=3), rng(12).uniform(1, 2, size=3)
    _set_bn(compiled, mean, var, s)
    y = compiled.module(x=torch.tensor(x, dtype=torch.float32))["y"].numpy()
    inv = 0 if s == 0 else 1 / s
    want = (x - inv * mean[None, :, None]) / np.sqrt(inv * var + 1e-5)[None, :, None]
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("extra,phase", [("", "TRAIN"), ("use_global_stats: true", "TRAIN")])
def test_batchnorm_gradcheck_and_buffers(extra, phase):
    x = rng(13).normal(size=(3, 2, 3))
    compiled = build(bn_layer(extra), phase, x=x)
    _set_bn(compiled, [0.1, -0.2], [1.5, 0.7], 1.25)
    node = compiled.net.graph.layer("bn")
    assert [node.impl.learnable(i) for i in range(3)] == [False] * 3
    assert not list(compiled.module.parameters())
    assert {k for k, _ in compiled.module.named_buffers()} == {compiled.blob_key("bn", i) for i in range(3)}
    gradcheck(compiled, x)


def test_batchnorm_refuses_learnable_statistics():
    with pytest.raises(NetspecError, match="lr_mult must be 0"):
        build(bn_layer(params="param { lr_mult: 0 } param { lr_mult: 1 }"), x=np.zeros((2, 3)))


# -- Scale / Bias ---------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axis,num_axes,blob_shape", [
    ((2, 3, 4, 5), 1, 1, (3,)), ((2, 3, 4, 5), 2, 2, (4, 5)), ((2, 3, 4), -1, 1, (4,)),
    ((2, 3, 4), 0, 0, ()), ((2, 3, 4), 1, -1, (3, 4)),
])
@pytest.mark.parametrize("type_", ["Scale", "Bias"])
def test_scale_and_bias_with_a_learned_blob(shape, axis, num_axes, blob_shape, type_):
    x = rng(14).normal(size=shape)
    param = type_.lower() + "_param"
    bias = " bias_term: true bias_filler { type: 'gaussian' }" if type_ == "Scale" else ""
    layer = (f'layer {{ name: "s" type: "{type_}" bottom: "x" top: "y" {param} {{ axis: {axis} '
             f'num_axes: {num_axes} filler {{ type: "gaussian" }}{bias} }} }}')
    compiled, out = run(layer, x=x.astype(np.float32))
    state = compiled.module.state_dict()
    blob = state[compiled.blob_key("s", 0)].numpy().astype(np.float64)
    assert blob.shape == blob_shape
    start = 0 if not blob_shape else axis % len(shape)
    view = blob.reshape((1,) * start + blob_shape + (1,) * (len(shape) - start - len(blob_shape)))
    if type_ == "Scale":
        bias = state[compiled.blob_key("s", 1)].numpy().reshape(view.shape)
        want = x * view + bias
    else:
        want = x + view
    np.testing.assert_allclose(out["y"].detach().numpy(), want, rtol=1e-5, atol=1e-6)
    gradcheck(compiled, x, params=True)


@pytest.mark.parametrize("type_,op", [("Scale", np.multiply), ("Bias", np.add)])
def test_scale_and_bias_with_a_second_bottom(type_, op):
    x, s = rng(15).normal(size=(2, 3, 4, 5)), rng(16).normal(size=(3, 4))
    layer = f'layer {{ name: "s" type: "{type_}" bottom: "x" bottom: "s" top: "y" }}'
    compiled, out = run(layer, x=x.astype(np.float32), s=s.astype(np.float32))
    np.testing.assert_allclose(out["y"].numpy(), op(x, s[None, :, :, None]), rtol=1e-5, atol=1e-6)
    assert not compiled.net.graph.layer("s").impl.blobs
    gradcheck(compiled, x, s)


def test_scale_with_a_second_bottom_and_a_bias():
    x, s = rng(18).normal(size=(2, 3, 4)), rng(19).normal(size=(3,))
    layer = ('layer { name: "s" type: "Scale" bottom: "x" bottom: "s" top: "y" '
             'scale_param { bias_term: true bias_filler { type: "gaussian" } } }')
    compiled, out = run(layer, x=x.astype(np.float32), s=s.astype(np.float32))
    assert compiled.net.graph.layer("s").impl.blobs == ("bias",)
    bias = compiled.module.state_dict()[compiled.blob_key("s", 0)].numpy()
    want = x * s[None, :, None] + bias[None, :, None]
    np.testing.assert_allclose(out["y"].detach().numpy(), want, rtol=1e-5, atol=1e-6)
    gradcheck(compiled, x, s, params=True)


def test_scale_default_filler_is_one():
    compiled = build('layer { name: "s" type: "Scale" bottom: "x" top: "y" }', x=np.zeros((2, 3)))
    np.testing.assert_array_equal(compiled.module.state_dict()[compiled.blob_key("s", 0)].numpy(), 1)


def test_scale_shape_mismatch_is_a_shape_error():
    with pytest.raises(NetspecError, match="does not match axes"):
        build('layer { name: "s" type: "Scale" bottom: "x" bottom: "s" top: "y" }',
              x=np.zeros((2, 3, 4)), s=np.zeros((4,)))


# -- MVN ------------------------------------------------------------------------------------

@pytest.mark.parametrize("across,variance", [(False, True), (True, True), (False, False)])
def test_mvn_matches_reference(across, variance):
    x = rng(17).normal(1, 2, size=(2, 3, 4, 5))
    layer = (f'layer {{ name: "m" type: "MVN" bottom: "x" top: "y" mvn_param {{ '
             f'across_channels: {str(across).lower()} normalize_variance: {str(variance).lower()} '
             f'eps: 0.1 }} }}')
    compiled, out = run(layer, x=x.astype(np.float32))
    axes = (1, 2, 3) if across else (2, 3)
    want = x - x.mean(axes, keepdims=True)
    if variance:
        # Caffe adds eps to the standard deviation
        want = want / (np.sqrt((want ** 2).mean(axes, keepdims=True)) + 0.1)
    np.testing.assert_allclose(out["y"].numpy(), want, rtol=1e-5, atol=1e-5)
    if not variance:    # with eps, Caffe's backward is not the exact derivative: tests/test_caffe_exactness.py
        gradcheck(compiled, x)
