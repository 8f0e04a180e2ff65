"""Common layers: numpy references written from Caffe's definitions, gradchecks,
shape inference against the compiled modules, refused configurations and the Caffe oracle."""
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from layer_util import compile_text
from netspec.diagnostics import NetspecError
from netspec.layers import REGISTRY
from oracle_harness import ORACLE, manifest, run_case

MINE = {"InnerProduct", "Embed", "Eltwise", "Concat", "Slice", "Split", "Flatten", "Reshape",
        "Tile", "Reduction", "ArgMax", "Softmax", "Silence", "Parameter", "Accuracy"}
CASES = [c for c in manifest() if c["kind"] == "layer" and MINE & set(c["layer_types"])]
FAST = settings(max_examples=15, deadline=None)


# -- one-layer nets --------------------------------------------------------------------

def net(ltype, inputs, body="", bottoms=None, tops=("y",)):
    """An Input layer with ``inputs`` (name -> shape) feeding one ``ltype`` layer named 'l'."""
    shapes = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in inputs.values())
    source = "" if not inputs else f"""
        layer {{ name: "input" type: "Input" {' '.join(f'top: "{n}"' for n in inputs)}
                 input_param {{ {shapes} }} }}"""
    bottoms = list(inputs) if bottoms is None else bottoms
    return compile_text(f"""{source}
        layer {{ name: "l" type: "{ltype}" {' '.join(f'bottom: "{b}"' for b in bottoms)}
                 {' '.join(f'top: "{t}"' for t in tops)} {body} }}""")


def run(compiled, **arrays):
    """Forward in float64 with numpy inputs; returns numpy outputs."""
    m = compiled.module.double()
    out = m(**{k: torch.as_tensor(v, dtype=torch.float64) for k, v in arrays.items()})
    return {k: v.detach().numpy() for k, v in out.items()}


def inferred(compiled, name):
    """The shape netspec's checker inferred for blob ``name``."""
    return next(s for b, s in compiled.net.shapes.items() if b.name == name)


def gradcheck(compiled, tops, **arrays):
    """gradcheck of the sum of ``tops`` (random weights) w.r.t. every input and parameter."""
    m = compiled.module.double()
    names = list(arrays)
    leaves = [torch.as_tensor(arrays[k], dtype=torch.float64).clone().requires_grad_(True) for k in names]
    params = list(m.parameters())

    def f(*xs):
        out = m(**dict(zip(names, xs[:len(names)])))
        return tuple(out[t] for t in tops)
    assert torch.autograd.gradcheck(f, leaves + params, eps=1e-6, atol=1e-6, rtol=1e-4)


def randn(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def fails(fn, *words):
    """``fn`` raises NetspecError whose messages mention every word in ``words``."""
    with pytest.raises(NetspecError) as e:
        fn()
    text = str(e.value) + " ".join(getattr(d, "message", "") for d in getattr(e.value, "diagnostics", []))
    for w in words:
        assert w in text, text


# -- InnerProduct -----------------------------------------------------------------------

@pytest.mark.parametrize("axis,transpose,bias", [(1, False, True), (2, False, False), (1, True, True),
                                                 (-1, True, False), (0, False, True)])
def test_inner_product_matches_reference(axis, transpose, bias):
    c = net("InnerProduct", {"x": (2, 3, 4)},
            f"inner_product_param {{ num_output: 5 axis: {axis} transpose: {str(transpose).lower()} "
            f"bias_term: {str(bias).lower()} weight_filler {{ type: 'gaussian' }} "
            f"bias_filler {{ type: 'gaussian' }} }}")
    x = randn(2, 3, 4)
    state = {k: v.double().numpy() for k, v in c.module.state_dict().items()}
    w = state[c.blob_key("l", 0)]
    a = axis % 3
    flat = x.reshape(int(np.prod(x.shape[:a])), -1)
    ref = flat @ (w if transpose else w.T) + (state[c.blob_key("l", 1)] if bias else 0)
    y = run(c, x=x)["y"]
    assert y.shape == x.shape[:a] + (5,) == inferred(c, "y")
    np.testing.assert_allclose(y, ref.reshape(y.shape), rtol=1e-10)
    gradcheck(c, ["y"], x=x)


# -- Embed --------------------------------------------------------------------------------

def test_embed_looks_up_rows_and_adds_bias():
    c = net("Embed", {"x": (2, 3)}, "embed_param { num_output: 4 input_dim: 7 "
            "weight_filler { type: 'gaussian' } bias_filler { type: 'gaussian' } }")
    x = np.array([[0, 6, 3], [3, 1, 2]], dtype=np.float64)
    state = {k: v.double().numpy() for k, v in c.module.state_dict().items()}
    w, b = state[c.blob_key("l", 0)], state[c.blob_key("l", 1)]
    assert w.shape == (7, 4)
    y = run(c, x=x)["y"]
    assert y.shape == (2, 3, 4) == inferred(c, "y")
    np.testing.assert_allclose(y, w[x.astype(int)] + b)
    m = c.module.double()
    params = list(m.parameters())
    assert torch.autograd.gradcheck(lambda *p: m(x=torch.as_tensor(x))["y"], params)


@pytest.mark.parametrize("bad", [7.0, -1.0, 2.5])
def test_embed_rejects_bad_indices_at_run_time(bad):
    c = net("Embed", {"x": (3,)}, "embed_param { num_output: 2 input_dim: 7 }")
    with pytest.raises((IndexError, ValueError), match="Embed"):
        c.module(x=torch.tensor([0.0, bad, 1.0]))


def test_embed_cannot_backprop_into_indices():
    assert REGISTRY["Embed"].no_grad_bottoms == (0,)


# -- Eltwise ------------------------------------------------------------------------------

def ref_eltwise_max(xs):
    """Caffe's loop: bottom 1 wins ties with bottom 0, later bottoms must be strictly greater."""
    top = np.where(xs[0] > xs[1], xs[0], xs[1])
    mask = np.where(xs[0] > xs[1], 0, 1)
    for i, x in enumerate(xs[2:], 2):
        mask = np.where(x > top, i, mask)
        top = np.maximum(top, x)
    return top, mask


@pytest.mark.parametrize("body,ref", [
    ("", lambda a, b, c: a + b + c),
    ("eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 1.5 }", lambda a, b, c: .5 * a - 2 * b + 1.5 * c),
    ("eltwise_param { operation: PROD }", lambda a, b, c: a * b * c),
    ("eltwise_param { operation: MAX }", lambda a, b, c: ref_eltwise_max([a, b, c])[0]),
])
def test_eltwise_matches_reference(body, ref):
    shape = {"a": (2, 3, 4), "b": (2, 3, 4), "c": (2, 3, 4)}
    c = net("Eltwise", shape, body)
    xs = {k: randn(*s, seed=i) for i, (k, s) in enumerate(shape.items())}
    np.testing.assert_allclose(run(c, **xs)["y"], ref(*xs.values()), rtol=1e-12)
    gradcheck(c, ["y"], **xs)


def test_eltwise_max_routes_ties_like_caffe():
    c = net("Eltwise", {"a": (5,), "b": (5,), "c": (5,)}, "eltwise_param { operation: MAX }")
    a = np.array([1., 2., 0., 3., 1.])
    b = np.array([1., 1., 0., 3., 0.])
    d = np.array([1., 2., 0., 1., 1.])
    t = {k: torch.tensor(v, requires_grad=True) for k, v in zip("abc", (a, b, d))}
    c.module.double()(**t)["y"].sum().backward()
    _, mask = ref_eltwise_max([a, b, d])
    for i, k in enumerate("abc"):
        np.testing.assert_array_equal(t[k].grad.numpy(), (mask == i).astype(float))


def test_eltwise_refuses_mismatched_shapes_and_coeffs():
    fails(lambda: net("Eltwise", {"a": (2, 3), "b": (2, 4)}), "(2, 3)", "(2, 4)")
    fails(lambda: net("Eltwise", {"a": (2,), "b": (2,)}, "eltwise_param { coeff: 1 }"), "coeff")
    fails(lambda: net("Eltwise", {"a": (2,), "b": (2,)},
                      "eltwise_param { operation: PROD coeff: 1 coeff: 2 }"), "SUM")


# -- Concat, Slice, Split -----------------------------------------------------------------

@FAST
@given(st.lists(st.integers(1, 4), min_size=2, max_size=4), st.integers(1, 3), st.integers(0, 2),
       st.booleans())
def test_concat_shapes_and_values(sizes, nb, axis, legacy):
    base = [2, 3, 2]
    shapes = {f"b{i}": tuple(n if j == axis else d for j, d in enumerate(base)) for i, n in enumerate(sizes[:nb + 1])}
    body = f"concat_param {{ {'concat_dim' if legacy else 'axis'}: {axis} }}"
    c = net("Concat", shapes, body)
    xs = {k: randn(*s, seed=i) for i, (k, s) in enumerate(shapes.items())}
    y = run(c, **xs)["y"]
    assert y.shape == inferred(c, "y")
    np.testing.assert_array_equal(y, np.concatenate(list(xs.values()), axis=axis))


def test_concat_gradient_and_mismatch():
    c = net("Concat", {"a": (2, 1, 3), "b": (2, 2, 3)})
    gradcheck(c, ["y"], a=randn(2, 1, 3), b=randn(2, 2, 3, seed=1))
    fails(lambda: net("Concat", {"a": (2, 1, 3), "b": (3, 2, 3)}), "concat axis 1")
    fails(lambda: net("Concat", {"a": (2, 3), "b": (2, 3)}, "concat_param { axis: 1 concat_dim: 1 }"),
          "not both")


@FAST
@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 2), st.booleans(), st.data())
def test_slice_shapes_and_values(per, ntops, axis, points, data):
    dim = per * ntops
    shape = [2, 3, 2]
    shape[axis] = dim
    if points and dim > ntops:
        cuts = sorted(data.draw(st.sets(st.integers(1, dim - 1), min_size=ntops - 1, max_size=ntops - 1)))
    else:
        cuts = []
    body = f"slice_param {{ axis: {axis} {' '.join(f'slice_point: {p}' for p in cuts)} }}"
    tops = [f"y{i}" for i in range(ntops)]
    c = net("Slice", {"x": tuple(shape)}, body, tops=tops)
    x = randn(*shape)
    out = run(c, x=x)
    ref = np.split(x, cuts or ntops, axis=axis)
    for t, r in zip(tops, ref):
        assert out[t].shape == inferred(c, t)
        np.testing.assert_array_equal(out[t], r)


def test_slice_gradient_and_refusals():
    c = net("Slice", {"x": (2, 6)}, "slice_param { slice_point: 1 slice_point: 4 }", tops=("a", "b", "c"))
    gradcheck(c, ["a", "b", "c"], x=randn(2, 6))
    fails(lambda: net("Slice", {"x": (2, 5)}, "slice_param { axis: 1 }", tops=("a", "b")), "divisible")
    fails(lambda: net("Slice", {"x": (2, 5)}, "slice_param { slice_point: 5 }", tops=("a", "b")), "slice_point")
    fails(lambda: net("Slice", {"x": (2, 5)}, "slice_param { slice_point: 3 slice_point: 2 }",
                      tops=("a", "b", "c")), "increase")
    fails(lambda: net("Slice", {"x": (2, 5)}, "slice_param { slice_point: 3 }", tops=("a", "b", "c")),
          "slice_point")


def test_split_copies_and_sums_gradients():
    c = net("Split", {"x": (2, 3)}, tops=("a", "b", "c"))
    x = randn(2, 3)
    out = run(c, x=x)
    for t in "abc":
        np.testing.assert_array_equal(out[t], x)
    t = torch.tensor(x, requires_grad=True)
    res = c.module(x=t)
    (res["a"] + 2 * res["b"] + 3 * res["c"]).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), np.full_like(x, 6.0))


# -- Flatten, Reshape, Tile ---------------------------------------------------------------

@FAST
@given(st.lists(st.integers(1, 3), min_size=1, max_size=4), st.data())
def test_flatten_shapes(shape, data):
    n = len(shape)
    axis = data.draw(st.integers(-n, n - 1))
    end = data.draw(st.integers(-n, n - 1))
    assume(end % n >= axis % n)
    c = net("Flatten", {"x": tuple(shape)}, f"flatten_param {{ axis: {axis} end_axis: {end} }}")
    x = randn(*shape)
    a, e = axis % n, end % n
    ref = x.reshape(tuple(shape[:a]) + (int(np.prod(shape[a:e + 1])),) + tuple(shape[e + 1:]))
    y = run(c, x=x)["y"]
    assert y.shape == inferred(c, "y") == ref.shape
    np.testing.assert_array_equal(y, ref)


def test_flatten_end_before_axis_inserts_a_unit_axis():
    # Caffe's count(axis, end_axis + 1) is 1 when end_axis == axis - 1
    c = net("Flatten", {"x": (2, 3)}, "flatten_param { axis: 1 end_axis: 0 }")
    assert run(c, x=randn(2, 3))["y"].shape == (2, 1, 3) == inferred(c, "y")
    fails(lambda: net("Flatten", {"x": (2, 3, 4)}, "flatten_param { axis: 2 end_axis: 0 }"), "end_axis")


def test_flatten_and_reshape_refuse_in_place():
    fails(lambda: net("Flatten", {"x": (2, 3)}, tops=("x",)), "in place")
    fails(lambda: net("Reshape", {"x": (2, 3)}, "reshape_param { shape { dim: -1 } }", tops=("x",)), "in place")


def ref_reshape(shape, dims, axis, num_axes):
    """Caffe's ReshapeLayer::Reshape, transcribed."""
    n = len(shape)
    start = axis if axis >= 0 else n + axis + 1
    end = n if num_axes == -1 else start + num_axes
    top = list(shape[:start]) + list(dims) + list(shape[end:])
    for i, d in enumerate(dims):
        if d == 0:
            top[start + i] = shape[start + i]
    if -1 in dims:
        top[start + dims.index(-1)] = 1
        top[start + dims.index(-1)] = int(np.prod(shape)) // int(np.prod(top))
    return tuple(top)


@pytest.mark.parametrize("shape,dims,axis,num_axes", [
    ((2, 3, 4), [0, -1], 0, -1), ((2, 3, 4), [2, 2], 2, 1), ((2, 3, 4), [-1], 1, -1),
    ((2, 3, 4), [1, 1], -1, 0), ((2, 3, 4), [1], 0, 0), ((2, 3, 4), [4, 0, -1], 0, -1),
    ((2, 3, 4), [-1, 2], 1, 2), ((6,), [], 0, 0), ((2, 3, 4), [0, 0, 0], 0, -1)])
def test_reshape_rules(shape, dims, axis, num_axes):
    body = f"reshape_param {{ shape {{ {' '.join(f'dim: {d}' for d in dims)} }} axis: {axis} num_axes: {num_axes} }}"
    c = net("Reshape", {"x": shape}, body)
    x = randn(*shape)
    y = run(c, x=x)["y"]
    assert y.shape == inferred(c, "y") == ref_reshape(shape, dims, axis, num_axes)
    np.testing.assert_array_equal(y.ravel(), x.ravel())


def test_reshape_refusals():
    body = "reshape_param { shape { %s } }"
    fails(lambda: net("Reshape", {"x": (2, 3)}, body % "dim: -1 dim: -1"), "-1")
    fails(lambda: net("Reshape", {"x": (2, 3)}, body % "dim: 4 dim: -1"), "multiple")
    fails(lambda: net("Reshape", {"x": (2, 3)}, body % "dim: 4 dim: 2"), "elements")
    fails(lambda: net("Reshape", {"x": (2, 3)}, body % "dim: 0 dim: 0 dim: 0"), "no axis 2")
    fails(lambda: net("Reshape", {"x": (2, 3)}, body % "dim: -2"), "-2")


@FAST
@given(st.lists(st.integers(1, 3), min_size=1, max_size=4), st.integers(1, 3), st.data())
def test_tile_shapes_and_values(shape, tiles, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    c = net("Tile", {"x": tuple(shape)}, f"tile_param {{ axis: {axis} tiles: {tiles} }}")
    x = randn(*shape)
    a = axis % len(shape)
    outer = int(np.prod(shape[:a]))
    ref = np.tile(x.reshape(outer, -1), (1, tiles)).reshape(shape[:a] + [shape[a] * tiles] + shape[a + 1:])
    y = run(c, x=x)["y"]
    assert y.shape == inferred(c, "y")
    np.testing.assert_array_equal(y, ref)


def test_tile_and_flatten_gradients():
    gradcheck(net("Tile", {"x": (2, 3)}, "tile_param { tiles: 2 }"), ["y"], x=randn(2, 3))
    gradcheck(net("Flatten", {"x": (2, 3, 2)}), ["y"], x=randn(2, 3, 2))
    gradcheck(net("Reshape", {"x": (2, 3)}, "reshape_param { shape { dim: -1 } }"), ["y"], x=randn(2, 3))
    fails(lambda: net("Tile", {"x": (2, 3)}, "tile_param { tiles: 0 }"), "tiles")


# -- Reduction, Softmax -------------------------------------------------------------------

REDUCE = {"SUM": np.sum, "ASUM": lambda v, axis: np.abs(v).sum(axis), "SUMSQ": lambda v, axis: (v * v).sum(axis),
          "MEAN": np.mean}


@FAST
@given(st.lists(st.integers(1, 3), min_size=1, max_size=4), st.sampled_from(sorted(REDUCE)),
       st.sampled_from([1.0, -0.5, 2.0]), st.data())
def test_reduction_matches_reference(shape, op, coeff, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    c = net("Reduction", {"x": tuple(shape)}, f"reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }}")
    x = randn(*shape)
    a = axis % len(shape)
    ref = coeff * REDUCE[op](x.reshape(tuple(shape[:a]) + (-1,)), axis=-1)
    y = run(c, x=x)["y"]
    assert y.shape == inferred(c, "y") == tuple(shape[:a])
    np.testing.assert_allclose(y, ref, rtol=1e-12)


@pytest.mark.parametrize("op", sorted(REDUCE))
def test_reduction_gradients(op):
    gradcheck(net("Reduction", {"x": (2, 3, 2)}, f"reduction_param {{ operation: {op} axis: 1 coeff: 0.5 }}"),
              ["y"], x=randn(2, 3, 2))


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_softmax_matches_reference(axis):
    c = net("Softmax", {"x": (2, 3, 4)}, f"softmax_param {{ axis: {axis} }}")
    x = randn(2, 3, 4)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    np.testing.assert_allclose(run(c, x=x)["y"], e / e.sum(axis=axis, keepdims=True), rtol=1e-12)
    gradcheck(c, ["y"], x=x)


# -- ArgMax -------------------------------------------------------------------------------

def ref_argmax(x, top_k, out_max_val, axis):
    """Caffe's loop with std::greater on (value, index) pairs."""
    if axis is None:
        flat = x.reshape(x.shape[0], -1)
        rows = [sorted(((v, j) for j, v in enumerate(r)), reverse=True)[:top_k] for r in flat]
        idx = np.array([[j for _, j in r] for r in rows], float)
        val = np.array([[v for v, _ in r] for r in rows])
        top = np.stack([idx, val], 1) if out_max_val else idx[:, None]
        return top.reshape(top.shape + (1,) * (x.ndim - 3))
    moved = np.moveaxis(x, axis, -1)
    out = np.empty(moved.shape[:-1] + (top_k,))
    for pos in np.ndindex(*moved.shape[:-1]):
        best = sorted(((v, j) for j, v in enumerate(moved[pos])), reverse=True)[:top_k]
        out[pos] = [v if out_max_val else j for v, j in best]
    return np.moveaxis(out, -1, axis)


@FAST
@given(st.lists(st.integers(1, 4), min_size=2, max_size=4), st.integers(1, 3), st.booleans(),
       st.booleans(), st.data())
def test_argmax_matches_reference(shape, top_k, out_max_val, has_axis, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1)) if has_axis else None
    dim = shape[axis] if has_axis else int(np.prod(shape[1:]))
    assume(top_k <= dim)
    body = f"argmax_param {{ top_k: {top_k} out_max_val: {str(out_max_val).lower()} " \
           f"{'' if axis is None else f'axis: {axis}'} }}"
    c = net("ArgMax", {"x": tuple(shape)}, body)
    x = np.round(randn(*shape), 0)        # coarse values: many ties
    y = run(c, x=x)["y"]
    assert y.shape == inferred(c, "y")
    np.testing.assert_array_equal(y, ref_argmax(x, top_k, out_max_val, None if axis is None else axis % len(shape)))


def test_argmax_refuses_too_large_top_k():
    fails(lambda: net("ArgMax", {"x": (2, 3)}, "argmax_param { top_k: 4 }"), "top_k")


# -- Silence, Parameter ------------------------------------------------------------------

def test_silence_consumes_blobs_so_they_are_not_outputs():
    c = net("Silence", {"a": (2,), "b": (3,)}, bottoms=["b"], tops=())
    assert c.generated.outputs == ["a"]
    node = c.net.graph.layer("l")
    assert node.impl.infer([(3,)]) == []
    # codegen writes `_ = <expr>` for a layer without tops: the expression must be valid
    assert eval(node.impl.forward(["b"], [(3,)]), {"b": torch.zeros(3)}) is None


def test_parameter_top_is_its_weight():
    c = net("Parameter", {}, "parameter_param { shape { dim: 2 dim: 3 } }", bottoms=[])
    key = c.blob_key("l", 0)
    w = dict(c.module.named_parameters())[key]
    assert tuple(w.shape) == (2, 3) == inferred(c, "y")
    with torch.no_grad():
        w.copy_(torch.as_tensor(randn(2, 3)))
    y = c.module()["y"]
    np.testing.assert_array_equal(y.detach().numpy(), w.detach().numpy())
    (3 * y).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), np.full((2, 3), 3.0, np.float32))


# -- Accuracy -----------------------------------------------------------------------------

def ref_accuracy(x, label, top_k, axis, ignore):
    """Caffe's loop: correct when fewer than top_k classes other than the true one score >= it."""
    c = x.shape[axis]
    scores = np.moveaxis(x, axis, -1).reshape(-1, c)
    hits, seen, right = 0, np.zeros(c), np.zeros(c)
    for s, l in zip(scores, label.reshape(-1).astype(int)):
        if ignore is not None and l == ignore:
            continue
        seen[l] += 1
        if (s >= s[l]).sum() - 1 < top_k:
            hits += 1
            right[l] += 1
    n = seen.sum()
    return (hits / n if n else 0.0), np.where(seen > 0, right / np.maximum(seen, 1), 0)


@FAST
@given(st.integers(1, 4), st.integers(2, 5), st.integers(1, 3), st.booleans(), st.booleans(),
       st.integers(0, 10**6))
def test_accuracy_matches_reference(n, classes, top_k, spatial, ignore, seed):
    assume(top_k <= classes)
    rng = np.random.default_rng(seed)
    xshape, lshape, axis = ((n, classes, 2), (n, 2), 1) if spatial else ((n, classes), (n,), 1)
    ign = 0 if ignore else None
    body = f"accuracy_param {{ top_k: {top_k} {'ignore_label: 0' if ignore else ''} }}"
    c = net("Accuracy", {"x": xshape, "label": lshape}, body, tops=("acc", "per"))
    x = rng.integers(-2, 3, size=xshape).astype(float)      # integers: ties are frequent
    label = rng.integers(0, classes, size=lshape).astype(float)
    out = run(c, x=x, label=label)
    acc, per = ref_accuracy(x, label, top_k, axis, ign)
    assert out["acc"].shape == () == inferred(c, "acc")
    assert out["per"].shape == (classes,) == inferred(c, "per")
    np.testing.assert_allclose(out["acc"], acc, rtol=1e-12)
    np.testing.assert_allclose(out["per"], per, rtol=1e-12)


def test_accuracy_counts_ties_against_the_prediction():
    c = net("Accuracy", {"x": (1, 3), "label": (1,)})
    assert run(c, x=np.array([[1.0, 1.0, 0.0]]), label=np.array([0.0]))["y"] == 0.0
    assert run(c, x=np.array([[2.0, 1.0, 0.0]]), label=np.array([0.0]))["y"] == 1.0


def test_accuracy_refusals():
    fails(lambda: net("Accuracy", {"x": (4, 3), "label": (3,)}), "label has 3 elements")
    fails(lambda: net("Accuracy", {"x": (4, 3), "label": (4,)}, "accuracy_param { top_k: 4 }"), "top_k")


# -- Caffe oracle -------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_caffe_oracle(case):
    missing = set(case["layer_types"]) - set(REGISTRY)
    if missing:
        pytest.skip(f"layer types not implemented yet: {sorted(missing)}")
    bad = run_case(ORACLE / case["dir"])
    assert not bad, "\n".join(map(str, bad))


def test_oracle_cases_exist():
    if not (Path(ORACLE) / "manifest.json").exists():
        pytest.skip("no oracle data")
    assert len(CASES) >= 30
