"""Backward schedules against independent oracles (float64).

* JOINT equals one backward of the weighted sum.
* RELAY: each parameter gets the sum of the gradients of the losses whose scope holds it.
* MULTIWAY (Algorithm 1) against a reference written here: numpy manual backprop for an
  MLP, and per-layer VJPs for a small conv net.  The i-th backward uses the weights
  updated by the earlier ones and the activations of the shared forward.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netspec.proto import caffe_pb2
from netspec.schedule import Backward, Forward, Update, build_schedule
from netspec.solve.executor import Executor
from netspec.solve.updates import CaffeUpdate

from test_compile import checked

MLP = """name: "mlp"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 6 dim: 5 } shape { dim: 6 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "h1"
  inner_product_param { num_output: 7 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "h1" top: "h1" }
layer { name: "ip2" type: "InnerProduct" bottom: "h1" top: "h2"
  inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "relu2" type: "ReLU" bottom: "h2" top: "h2" }
layer { name: "ipa" type: "InnerProduct" bottom: "h2" top: "za"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss_aux" type: "SoftmaxWithLoss" bottom: "za" bottom: "label" top: "loss_aux" loss_weight: 0.3 }
layer { name: "ip3" type: "InnerProduct" bottom: "h2" top: "z3"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "z3" bottom: "label" top: "loss" }
"""
LR, MU, DECAY = 0.1, 0.9, 0.01
# the solver file stores them (and loss_weight 0.3) as float32; the reference uses those values
F32 = lambda v: float(np.float32(v))  # noqa: E731


def solver(mode: str, **mw) -> caffe_pb2.SolverParameter:
    p = caffe_pb2.SolverParameter(base_lr=LR, momentum=MU, weight_decay=DECAY, lr_policy="fixed",
                                  bp_mode=caffe_pb2.SolverParameter.BPMode.Value(mode))
    for k, v in mw.items():
        setattr(p.multiway_param, k, v)
    return p


def executor(text: str, param, seed: int = 3) -> Executor:
    net = checked(text)
    sched = build_schedule(net, param)
    specs = {}
    for node in net.graph.layers():
        for i in range(len(node.impl.blobs)):
            specs[f"{node.name}/{i}"] = (node.impl.lr_mult(i), node.impl.decay_mult(i))
    slots = {s.slot for s in sched.steps if isinstance(s, Update)}
    ex = Executor(net, sched, {s: CaffeUpdate(param, specs) for s in slots}, seed=seed,
                  dtype=torch.float64, scale_head_gradients=param.multiway_param.scale_head_gradients)
    return ex


def batches(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [{"data": torch.randn(6, 5, generator=g, dtype=torch.float64),
             "label": torch.randint(0, 3, (6,), generator=g).double()} for _ in range(n)]


# ---------------------------------------------------------------- numpy reference (MLP)
def softmax_grad(z, y):
    e = np.exp(z - z.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    onehot = np.eye(z.shape[1])[y.astype(int)]
    return (p - onehot) / z.shape[0]


def mlp_forward(W, x):
    z1 = x @ W["ip1/0"].T + W["ip1/1"]
    h1 = np.maximum(z1, 0)
    z2 = h1 @ W["ip2/0"].T + W["ip2/1"]
    h2 = np.maximum(z2, 0)
    return dict(x=x, z1=z1, h1=h1, z2=z2, h2=h2, za=h2 @ W["ipa/0"].T + W["ipa/1"],
                z3=h2 @ W["ip3/0"].T + W["ip3/1"])


def mlp_backward(loss, W, A, y):
    """Gradients of one loss (unweighted) with the CURRENT weights W and stored activations A."""
    head, z = ("ipa", A["za"]) if loss == "loss_aux" else ("ip3", A["z3"])
    dz = softmax_grad(z, y)
    g = {f"{head}/0": dz.T @ A["h2"], f"{head}/1": dz.sum(0)}
    dz2 = (dz @ W[f"{head}/0"]) * (A["z2"] > 0)
    g["ip2/0"], g["ip2/1"] = dz2.T @ A["h1"], dz2.sum(0)
    dz1 = (dz2 @ W["ip2/0"]) * (A["z1"] > 0)
    g["ip1/0"], g["ip1/1"] = dz1.T @ A["x"], dz1.sum(0)
    return g


def sgd(W, V, g, keys):
    for k in keys:
        d = g[k] + F32(DECAY) * W[k]
        V[k] = F32(MU) * V.get(k, 0) + F32(LR) * d
        W[k] = W[k] - V[k]


def reference_multiway(W, data, order, shared=True, gammas=None):
    gammas = gammas or {"loss_aux": F32(0.3), "loss": 1.0}
    heads = {"loss_aux": ("ipa/0", "ipa/1"), "loss": ("ip3/0", "ip3/1")}
    V = {name: {} for name in order}
    for batch in data:
        x, y = batch["data"].numpy(), batch["label"].numpy()
        A = mlp_forward(W, x)
        for name in order:
            if not shared:
                A = mlp_forward(W, x)
            g = mlp_backward(name, W, A, y)
            for k in g:
                if k not in heads[name]:
                    g[k] = gammas[name] * g[k]       # segment gradients scaled, the head's not
            sgd(W, V[name], g, list(g))
    return W


def weights_of(ex):
    return {k: v.detach().numpy().copy() for k, v in ex.params.items()}


@pytest.mark.parametrize("order, shared", [
    (("loss_aux", "loss"), True),          # MW-BP
    (("loss", "loss_aux"), True),          # Reverse MW-BP
    (("loss_aux", "loss"), False),         # Naive MW-BP
    (("loss", "loss_aux"), False),         # Naive Reverse MW-BP
])
def test_multiway_matches_algorithm_1_on_an_mlp(order, shared):
    kw = {"shared_forward": shared}
    if order[0] == "loss":
        kw["order"] = caffe_pb2.MultiwayParameter.DEEP_TO_SHALLOW
    ex = executor(MLP, solver("MULTIWAY", **kw))
    assert [s.losses for s in ex.schedule.steps if isinstance(s, Backward)] == [(o,) for o in order]
    W = weights_of(ex)
    data = batches(3)
    for it, b in enumerate(data):
        ex.iteration([b], it, {})
    ref = reference_multiway(W, data, order, shared)
    for k, v in weights_of(ex).items():
        np.testing.assert_allclose(v, ref[k], rtol=0, atol=1e-10, err_msg=k)


def test_multiway_differs_from_joint_and_naive():
    data = batches(3)
    finals = {}
    for name, param in [("mw", solver("MULTIWAY")), ("naive", solver("MULTIWAY", shared_forward=False)),
                        ("joint", solver("JOINT"))]:
        ex = executor(MLP, param)
        for it, b in enumerate(data):
            ex.iteration([b], it, {})
        finals[name] = weights_of(ex)["ip1/0"]
    assert np.abs(finals["mw"] - finals["naive"]).max() > 1e-6
    assert np.abs(finals["mw"] - finals["joint"]).max() > 1e-6


def test_multiway_scale_head_gradients_option():
    data = batches(2)
    ex = executor(MLP, solver("MULTIWAY", scale_head_gradients=True))
    W = weights_of(ex)
    for it, b in enumerate(data):
        ex.iteration([b], it, {})
    heads = {"loss_aux": (), "loss": ()}
    # with the head scaled too, the reference is plain gamma-weighted gradients everywhere
    V = {n: {} for n in heads}
    for b in data:
        x, y = b["data"].numpy(), b["label"].numpy()
        A = mlp_forward(W, x)
        for name, gamma in (("loss_aux", F32(0.3)), ("loss", 1.0)):
            g = {k: gamma * v for k, v in mlp_backward(name, W, A, y).items()}
            sgd(W, V[name], g, list(g))
    for k, v in weights_of(ex).items():
        np.testing.assert_allclose(v, W[k], rtol=0, atol=1e-10, err_msg=k)



# ----------------------------------------------- per-layer VJP reference (small conv net)
CONV = """name: "convmw"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 4 dim: 2 dim: 6 dim: 6 } shape { dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "c1"
  convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.4 } bias_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "conv2" type: "Convolution" bottom: "c1" top: "c2"
  convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.4 } bias_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "relu2" type: "ReLU" bottom: "c2" top: "c2" }
layer { name: "ipa" type: "InnerProduct" bottom: "c2" top: "za"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss_aux" type: "SoftmaxWithLoss" bottom: "za" bottom: "label" top: "loss_aux" loss_weight: 0.3 }
layer { name: "conv3" type: "Convolution" bottom: "c2" top: "c3"
  convolution_param { num_output: 3 kernel_size: 3 stride: 2 weight_filler { type: "gaussian" std: 0.4 } } }
layer { name: "relu3" type: "ReLU" bottom: "c3" top: "c3" }
layer { name: "ip3" type: "InnerProduct" bottom: "c3" top: "z3"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "z3" bottom: "label" top: "loss" }
"""
# (layer, kind, bottom, top, stride, pad); a conv's ReLU turns top z<k> into c<k>
CONV_LAYERS = [("conv1", "conv", "x", "z1", 1, 1), ("conv2", "conv", "c1", "z2", 1, 1),
               ("conv3", "conv", "c2", "z3c", 2, 0), ("ipa", "ip", "c2", "za", 0, 0),
               ("ip3", "ip", "c3", "z3", 0, 0)]
CONV_PATHS = {"loss_aux": ["ipa", "conv2", "conv1"], "loss": ["ip3", "conv3", "conv2", "conv1"]}


def conv_layer(kind, x, w, b, stride, pad):
    if kind == "ip":
        return F.linear(x.flatten(1), w, b)
    return F.conv2d(x, w, b, stride=stride, padding=pad)


def conv_forward(W, x):
    A = {"x": x}
    for name, kind, bottom, top, stride, pad in CONV_LAYERS:
        A[top] = conv_layer(kind, A[bottom], W[f"{name}/0"], W[f"{name}/1"], stride, pad)
        if kind == "conv":
            A["c" + top[1]] = torch.relu(A[top])
    return A


def conv_backward(loss, W, A, y):
    """One loss's gradients, layer by layer: each VJP at the STORED bottom activation and
    the CURRENT weights, ReLU masks from the stored pre-activations (Algorithm 1)."""
    spec = {c[0]: c[1:] for c in CONV_LAYERS}
    head = CONV_PATHS[loss][0]
    diff = torch.from_numpy(softmax_grad(A[spec[head][2]].numpy(), y))   # d(loss)/d(head top)
    g = {}
    for name in CONV_PATHS[loss]:
        kind, bottom, top, stride, pad = spec[name]
        if kind == "conv":
            diff = diff * (A[top] > 0)
        _, vjp = torch.func.vjp(lambda inp, w, b: conv_layer(kind, inp, w, b, stride, pad),
                                A[bottom], W[f"{name}/0"], W[f"{name}/1"])
        d_bottom, g[f"{name}/0"], g[f"{name}/1"] = vjp(diff)
        diff = d_bottom
    return g


def reference_conv_multiway(W, data, order, shared=True):
    gammas = {"loss_aux": F32(0.3), "loss": 1.0}
    V = {name: {} for name in order}
    for batch in data:
        x, y = batch["data"], batch["label"].numpy()
        A = conv_forward(W, x)
        for name in order:
            if not shared:
                A = conv_forward(W, x)
            g = conv_backward(name, W, A, y)
            head = CONV_PATHS[name][0]
            g = {k: v if k.startswith(head + "/") else gammas[name] * v for k, v in g.items()}
            for k in g:                 # Caffe SGD: v = mu*v + lr*(g + decay*w); w -= v
                d = g[k] + F32(DECAY) * W[k]
                V[name][k] = F32(MU) * V[name].get(k, 0) + F32(LR) * d
                W[k] = W[k] - V[name][k]
    return W


@pytest.mark.parametrize("order, shared", [
    (("loss_aux", "loss"), True), (("loss", "loss_aux"), True),
    (("loss_aux", "loss"), False), (("loss", "loss_aux"), False)])
def test_multiway_matches_algorithm_1_on_a_conv_net(order, shared):
    kw = {"shared_forward": shared}
    if order[0] == "loss":
        kw["order"] = caffe_pb2.MultiwayParameter.DEEP_TO_SHALLOW
    ex = executor(CONV, solver("MULTIWAY", **kw))
    W = {k: v.detach().clone() for k, v in ex.params.items()}
    g = torch.Generator().manual_seed(1)
    data = [{"data": torch.randn(4, 2, 6, 6, generator=g, dtype=torch.float64),
             "label": torch.randint(0, 3, (4,), generator=g).double()} for _ in range(3)]
    for it, b in enumerate(data):
        ex.iteration([b], it, {})
    ref = reference_conv_multiway(W, data, order, shared)
    assert set(ref) == set(ex.params)
    for k, v in ex.params.items():
        np.testing.assert_allclose(v.detach().numpy(), ref[k].numpy(), rtol=0, atol=1e-10, err_msg=k)


# ------------------------------------------------------------------ JOINT and RELAY
def grads_of(ex, batch, mode_steps):
    """Run the schedule's forward/backward steps only and return the accumulated gradients."""
    grads = {}
    out = ex.main.module(**batch)
    ex._gate(out)
    for s in ex.schedule.steps:
        if isinstance(s, Backward):
            ex._backward(s, out, grads, {}, retain=True)
    return grads


def test_joint_equals_one_backward_of_the_weighted_sum():
    ex = executor(MLP, solver("JOINT"))
    b = batches(1)[0]
    grads = grads_of(ex, b, None)
    out = ex.main.module(**b)
    total = F32(0.3) * out["loss_aux"] + out["loss"]
    ref = torch.autograd.grad(total, [ex.params[k] for k in grads])
    for (k, g), r in zip(grads.items(), ref):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-12)


RELAY3 = """name: "relay3"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 4 dim: 2 dim: 6 dim: 6 } shape { dim: 4 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "conv2" type: "Convolution" bottom: "c1" top: "c2" convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "relu2" type: "ReLU" bottom: "c2" top: "c2" }
layer { name: "conv3" type: "Convolution" bottom: "c2" top: "c3" convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "skip" type: "Eltwise" bottom: "c1" bottom: "c3" top: "s" }
layer { name: "frozen" type: "InnerProduct" bottom: "data" top: "fz" inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "flat" type: "Flatten" bottom: "c1" top: "c1f" }
layer { name: "cat" type: "Concat" bottom: "c1f" bottom: "fz" top: "cat" propagate_down: true propagate_down: false }
layer { name: "fc1" type: "InnerProduct" bottom: "cat" top: "f1" inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss1" type: "SoftmaxWithLoss" bottom: "f1" bottom: "label" top: "loss1" loss_weight: 0.3 }
layer { name: "fc2" type: "InnerProduct" bottom: "c2" top: "f2" inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss2" type: "SoftmaxWithLoss" bottom: "f2" bottom: "label" top: "loss2" loss_weight: 0.5
  gradient_scope { max_depth: 2 } }
layer { name: "fc3" type: "InnerProduct" bottom: "s" top: "f3" inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss3" type: "SoftmaxWithLoss" bottom: "f3" bottom: "label" top: "loss3"
  gradient_scope { stop_at: "c2" } }
"""


def test_relay_sums_each_loss_gradient_over_its_scope_only():
    ex = executor(RELAY3, solver("RELAY"))
    b = {"data": torch.randn(4, 2, 6, 6, dtype=torch.float64), "label": torch.tensor([0., 1, 2, 1])}
    grads = grads_of(ex, b, None)
    net = ex.net
    scopes = {l.layer: l.scope for l in net.losses}
    # scopes overlap: loss3 stops at c2 (conv3 trains, conv2 does not; conv1 via the skip)
    assert "conv2" not in scopes["loss3"] and {"conv3", "conv1"} <= scopes["loss3"]
    assert scopes["loss2"] >= {"fc2", "conv2"} and "conv1" not in scopes["loss2"]
    expected = {k: torch.zeros_like(p) for k, p in ex.params.items()}
    for loss, weight in (("loss1", F32(0.3)), ("loss2", 0.5), ("loss3", 1.0)):
        # each loss separately, with stop_at applied by detaching in an independent forward
        out = ex.main.module(**b)
        value = weight * out[loss]
        keys = [k for k in ex.params if k.split("/")[0] in scopes[loss]]
        if loss == "loss3":
            c1 = F.relu(F.conv2d(b["data"], ex.params["conv1/0"], ex.params["conv1/1"], padding=1))
            c2 = out["c2@1"].detach()         # stop_at: no gradient into c2 (either version)
            c3 = F.conv2d(c2, ex.params["conv3/0"], ex.params["conv3/1"], padding=1)
            f3 = F.linear((c1 + c3).flatten(1), ex.params["fc3/0"], ex.params["fc3/1"])
            value = F.cross_entropy(f3, b["label"].long())
        for k, g in zip(keys, torch.autograd.grad(value, [ex.params[k] for k in keys], allow_unused=True)):
            if g is not None:
                expected[k] += g
    for k, g in grads.items():
        torch.testing.assert_close(g, expected[k], rtol=1e-10, atol=1e-12, msg=k)
    # computed in the forward but outside every scope (propagate_down: false): exactly zero
    assert "frozen" not in set().union(*scopes.values())
    assert "frozen/0" in ex.params and "frozen/0" not in grads
    update = ex.schedule.steps[-1]
    assert "frozen/0" not in update.params


def test_schedules_print_as_steps():
    net = checked(MLP)
    text = str(build_schedule(net, solver("MULTIWAY")))
    assert "1. forward(loss_aux, loss)" in text
    assert "update(params=6, state=loss_aux)" in text
    std = build_schedule(net, None)
    assert [type(s) for s in std.steps] == [Forward, Backward, Update] and std.primary == "loss"
