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


def executor(text: str, param, seed: int = 3, device: str = "cpu") -> Executor:
    net = checked(text)
    sched = build_schedule(net, param)
    specs = {}
    for node in net.graph.layers():
        for i in range(len(node.impl.blobs)):
            specs[f"{node.name}/{i}"] = (node.impl.lr_mult(i), node.impl.decay_mult(i))
    slots = {s.slot for s in sched.steps if isinstance(s, Update)}
    ex = Executor(net, sched, {s: CaffeUpdate(param, specs) for s in slots}, seed=seed, device=device,
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
    check_conv_multiway_against_algorithm_1(order, shared, "cpu")


@pytest.mark.cuda
@pytest.mark.parametrize("order, shared", [(("loss_aux", "loss"), True), (("loss", "loss_aux"), False)])
def test_multiway_matches_algorithm_1_on_a_conv_net_on_cuda(order, shared):
    """The same oracle (computed on the CPU) and tolerance for an executor on the GPU (not yet
    run on one: no GPU has been available; see docs/benchmarks.md)."""
    check_conv_multiway_against_algorithm_1(order, shared, "cuda")


def check_conv_multiway_against_algorithm_1(order, shared, device):
    kw = {"shared_forward": shared}
    if order[0] == "loss":
        kw["order"] = caffe_pb2.MultiwayParameter.DEEP_TO_SHALLOW
    ex = executor(CONV, solver("MULTIWAY", **kw), device=device)
    W = {k: v.detach().cpu().clone() for k, v in ex.params.items()}
    g = torch.Generator().manual_seed(1)
    data = [{"data": torch.randn(4, 2, 6, 6, generator=g, dtype=torch.float64),
             "label": torch.randint(0, 3, (4,), generator=g).double()} for _ in range(3)]
    for it, b in enumerate(data):
        ex.iteration([{k: v.to(device) for k, v in b.items()}], it, {})
    ref = reference_conv_multiway(W, data, order, shared)
    assert set(ref) == set(ex.params)
    for k, v in ex.params.items():
        assert v.device.type == device
        np.testing.assert_allclose(v.detach().cpu().numpy(), ref[k].numpy(), rtol=0, atol=1e-10, err_msg=k)


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


# ------------------------------------------- scopes bind per mode: MW-BP ignores Relay's
def scoped(text: str, loss_layers: dict) -> str:
    """``text`` with a gradient_scope (written as in ``loss_layers``) on the named losses."""
    for name, scope in loss_layers.items():
        i = text.index(f'name: "{name}" type: "SoftmaxWithLoss"')
        j = text.index("\n", i) - 1              # the layer's closing brace
        text = text[:j] + f"gradient_scope {{ {scope} }} " + text[j:]
    return text


RELAY_CONV = scoped(CONV, {"loss_aux": "max_depth: 1", "loss": 'stop_at: "c2"'})
HYBRID_CONV = scoped(CONV, {"loss_aux": "max_depth: 1 modes: RELAY modes: MULTIWAY",
                            "loss": 'stop_at: "c2" modes: MULTIWAY'})


def conv_batches():
    g = torch.Generator().manual_seed(1)
    return [{"data": torch.randn(4, 2, 6, 6, generator=g, dtype=torch.float64),
             "label": torch.randint(0, 3, (4,), generator=g).double()} for _ in range(3)]


def test_multiway_ignores_relay_scopes_by_default():
    """The conv net with Relay scopes on both losses: MULTIWAY is still Algorithm 1 over
    every layer from the input to each loss (the independent per-layer VJP reference)."""
    ex = executor(RELAY_CONV, solver("MULTIWAY"))
    assert {l.layer: l.modes for l in ex.net.losses} == {"loss_aux": ("RELAY",), "loss": ("RELAY",)}
    assert ex.schedule.scoped == () and not any(s.stop_at for s in ex.schedule.steps
                                                if isinstance(s, Backward))
    W = {k: v.detach().clone() for k, v in ex.params.items()}
    data = conv_batches()
    for it, b in enumerate(data):
        ex.iteration([b], it, {})
    ref = reference_conv_multiway(W, data, ("loss_aux", "loss"))
    for k, v in ex.params.items():
        np.testing.assert_allclose(v.detach().numpy(), ref[k].numpy(), rtol=0, atol=1e-10, err_msg=k)
    # the same scopes do restrict RELAY
    relay = build_schedule(ex.net, solver("RELAY"))
    assert relay.scoped == ("loss_aux", "loss") and relay.params["loss_aux"] == ("ipa/0", "ipa/1")


def test_scopes_that_name_multiway_give_the_hybrid():
    net = checked(HYBRID_CONV)
    mw = build_schedule(net, solver("MULTIWAY"))
    assert mw.scoped == ("loss_aux", "loss") and "hybrid" in mw.variant
    assert mw.params["loss_aux"] == ("ipa/0", "ipa/1")                 # max_depth 1: the head only
    assert set(mw.params["loss"]) == {"conv3/0", "conv3/1", "ip3/0", "ip3/1"}    # stop_at c2
    back = [s for s in mw.steps if isinstance(s, Backward)]
    assert back[1].stop_at == ("c2",)
    # loss's scope binds MULTIWAY only: RELAY trains every ancestor for it
    relay = build_schedule(net, solver("RELAY"))
    assert relay.scoped == ("loss_aux",) and "conv1/0" in relay.params["loss"]
    for mode in ("JOINT", "STANDARD"):
        assert build_schedule(net, solver(mode)).scoped == ()


def test_heads_are_the_exits_own_branches_never_trunk_layers():
    """Under the hybrid, conv1 is trained by loss_aux alone, yet it is trunk: gamma scales it."""
    net = checked(scoped(CONV, {"loss_aux": "max_depth: 3 modes: MULTIWAY",
                                "loss": 'stop_at: "c1" modes: MULTIWAY'}))
    mw = build_schedule(net, solver("MULTIWAY"))
    back = {s.losses[0]: s for s in mw.steps if isinstance(s, Backward)}
    assert "conv1/0" in back["loss_aux"].params and "conv1/0" not in back["loss"].params
    assert back["loss_aux"].head == ("ipa/0", "ipa/1")
    assert back["loss"].head == ("conv3/0", "conv3/1", "ip3/0", "ip3/1")   # layers feeding only 'loss'


# ------------------------------------------------- the reference code's lr split (LAMBDA)
MLP3 = """name: "mlp3"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 6 dim: 5 } shape { dim: 6 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "h1"
  inner_product_param { num_output: 7 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "h1" top: "h1" }
layer { name: "ipa" type: "InnerProduct" bottom: "h1" top: "za"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss_a" type: "SoftmaxWithLoss" bottom: "za" bottom: "label" top: "loss_a" loss_weight: 0.25 }
layer { name: "ip2" type: "InnerProduct" bottom: "h1" top: "h2"
  inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "relu2" type: "ReLU" bottom: "h2" top: "h2" }
layer { name: "ipb" type: "InnerProduct" bottom: "h2" top: "zb"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss_b" type: "SoftmaxWithLoss" bottom: "zb" bottom: "label" top: "loss_b" loss_weight: 0.5 }
layer { name: "ip3" type: "InnerProduct" bottom: "h2" top: "z3"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "z3" bottom: "label" top: "loss" }
"""


def mlp3_grads(loss, W, A, y):
    """One loss's unweighted gradients by hand, current weights W, stored activations A."""
    head, z = {"loss_a": ("ipa", "za"), "loss_b": ("ipb", "zb"), "loss": ("ip3", "z3")}[loss]
    dz = softmax_grad(A[z], y)
    bottom = "h1" if loss == "loss_a" else "h2"
    g = {f"{head}/0": dz.T @ A[bottom], f"{head}/1": dz.sum(0)}
    d = dz @ W[f"{head}/0"]
    if loss != "loss_a":
        d = d * (A["z2"] > 0)
        g["ip2/0"], g["ip2/1"] = d.T @ A["h1"], d.sum(0)
        d = d @ W["ip2/0"]
    d = d * (A["z1"] > 0)
    g["ip1/0"], g["ip1/1"] = d.T @ A["x"], d.sum(0)
    return g


def mlp3_forward(W, x):
    A = {"x": x, "z1": x @ W["ip1/0"].T + W["ip1/1"]}
    A["h1"] = np.maximum(A["z1"], 0)
    A["z2"] = A["h1"] @ W["ip2/0"].T + W["ip2/1"]
    A["h2"] = np.maximum(A["z2"], 0)
    A["za"] = A["h1"] @ W["ipa/0"].T + W["ipa/1"]
    A["zb"] = A["h2"] @ W["ipb/0"].T + W["ipb/1"]
    A["z3"] = A["h2"] @ W["ip3/0"].T + W["ip3/1"]
    return A


def test_segment_lr_lambda_is_the_reference_codes_lr_weight():
    """Hand-computed: gammas 0.25 (loss_a), 0.5 (loss_b), 1 (loss).  Lambda_a = 0.25 + 0.5,
    Lambda_b = 0.5 (the deeper auxiliary losses' gammas summed); an auxiliary loss's segment
    steps with lr / Lambda and gradient gamma * g, its head with lr and g; loss keeps lr."""
    lam = {"loss_a": F32(0.25) + F32(0.5), "loss_b": F32(0.5)}
    gam = {"loss_a": F32(0.25), "loss_b": F32(0.5), "loss": 1.0}
    heads = {"loss_a": ("ipa/0", "ipa/1"), "loss_b": ("ipb/0", "ipb/1"), "loss": ("ip3/0", "ip3/1")}
    ex = executor(MLP3, solver("MULTIWAY", segment_lr=caffe_pb2.MultiwayParameter.LAMBDA))
    assert ex.schedule.segment_lr == "LAMBDA"
    W = weights_of(ex)
    V = {n: {} for n in gam}
    data = batches(3)
    for it, b in enumerate(data):
        ex.iteration([b], it, {})
        x, y = b["data"].numpy(), b["label"].numpy()
        A = mlp3_forward(W, x)
        for name in ("loss_a", "loss_b", "loss"):
            for k, g in mlp3_grads(name, W, A, y).items():
                head = k in heads[name]
                g = g if head else gam[name] * g
                rate = LR if head or name == "loss" else F32(F32(LR) / lam[name])
                V[name][k] = F32(MU) * V[name].get(k, 0) + rate * (g + F32(DECAY) * W[k])
                W[k] = W[k] - V[name][k]
    for k, v in weights_of(ex).items():
        np.testing.assert_allclose(v, W[k], rtol=1e-6, atol=1e-9, err_msg=k)


def test_segment_lambdas_sum_the_deeper_auxiliary_gammas():
    from netspec.solve.loss_weights import segment_lambdas
    gammas = {"e1": 1 / 9, "e2": 4 / 9, "e3": 1.0, "main": 1.0}     # digits: (3/9)^2, (6/9)^2, 1
    depths = {"e1": 3, "e2": 6, "e3": 9, "main": 12}
    lam = segment_lambdas(gammas, depths, "main")
    assert lam == pytest.approx({"e1": 14 / 9, "e2": 13 / 9, "e3": 1.0})


def test_segment_lr_scaling_is_loss_count():
    from netspec.schedule import segment_lr_rule
    mp = caffe_pb2.MultiwayParameter(segment_lr_scaling=True)
    assert segment_lr_rule(mp) == "LOSS_COUNT"
    assert segment_lr_rule(caffe_pb2.MultiwayParameter()) == "NONE"


# ---------------------------------------------------------- same seed, same start weights
def test_every_mode_starts_from_the_same_weights(tmp_path):
    """STANDARD prunes the exit heads from its module, but fills the whole net first: for one
    random_seed the trunk blobs of all four modes are identical (and the exits of the others)."""
    from conftest import REPO
    from netspec.solve.solver import Solver
    digits = REPO / "models" / "digits"
    start = {}
    for mode in ("standard", "joint", "relay", "multiway"):
        text = (digits / f"solver_{mode}.prototxt").read_text()
        text = text.replace('net: "', f'net: "{digits}/').replace("random_seed: 1", "random_seed: 5")
        (tmp_path / f"{mode}.prototxt").write_text(text)
        s = Solver(tmp_path / f"{mode}.prototxt", log=lambda line: None)
        start[mode] = {k: v.detach().clone() for k, v in s.executor.params.items()}
    trunk = {f"conv{i}/{j}" for i in range(1, 13) for j in (0, 1)} | {"main_fc/0", "main_fc/1"}
    assert set(start["standard"]) == trunk
    for mode in ("joint", "relay", "multiway"):
        assert set(start[mode]) == trunk | {f"exit{i}_fc/{j}" for i in (1, 2, 3) for j in (0, 1)}
        for k in start[mode]:
            assert torch.equal(start[mode][k], start["joint"][k]), (mode, k)
        for k in trunk:
            assert torch.equal(start[mode][k], start["standard"][k]), (mode, k)


def test_two_segment_lr_rules_at_once_are_an_error(tmp_path):
    from netspec.diagnostics import NetspecError
    from netspec.solve.solver import read_solver
    path = tmp_path / "s.prototxt"
    path.write_text('net: "n.prototxt"\nbase_lr: 0.1\nbp_mode: MULTIWAY\n'
                    "multiway_param { segment_lr_scaling: true segment_lr: LAMBDA }\n")
    with pytest.raises(NetspecError) as e:
        read_solver(path)
    codes = {d.code: d for d in e.value.diagnostics if d.severity == "error"}
    assert "E0600" in codes and "segment_lr: LAMBDA" in codes["E0600"].message
    assert codes["E0600"].span.line == 4


def test_lambda_through_the_solver_on_digits(tmp_path):
    """The bundled MW-BP solver with segment_lr: LAMBDA: Eq. 5's gammas 1/9, 4/9, 1 give
    Lambda = 14/9, 13/9, 1; two iterations run through the solver's guarded update rules."""
    from conftest import REPO
    from netspec.solve.solver import Solver
    digits = REPO / "models" / "digits"
    text = (digits / "solver_multiway.prototxt").read_text().replace('net: "', f'net: "{digits}/')
    (tmp_path / "s.prototxt").write_text(text + "multiway_param { segment_lr: LAMBDA }\n")
    s = Solver(tmp_path / "s.prototxt", log=lambda line: None)
    specs = {k: v for k, v in s.executor.updaters["exit1_loss"].specs.items()}
    s.step(2)
    assert s.executor.lr_scale == pytest.approx({"exit1_loss": 9 / 14, "exit2_loss": 9 / 13, "exit3_loss": 1.0})
    assert s.executor.updaters["exit1_loss"].specs == specs          # restored after each update


def test_loss_count_divides_by_the_losses_updating_a_parameter(tmp_path):
    from conftest import REPO
    from netspec.solve.solver import Solver
    digits = REPO / "models" / "digits"
    text = (digits / "solver_multiway.prototxt").read_text().replace('net: "', f'net: "{digits}/')
    (tmp_path / "s.prototxt").write_text(text + "multiway_param { segment_lr: LOSS_COUNT }\n")
    s = Solver(tmp_path / "s.prototxt", log=lambda line: None)
    assert s.schedule.segment_lr == "LOSS_COUNT" and s.executor.lr_scale == {}
    specs = s.executor.updaters["main_loss"].specs
    # conv1 is updated by all 4 losses, conv7 by exit3 and main, conv12 by main; biases lr_mult 2
    assert specs["conv1/0"] == (0.25, 1) and specs["conv7/1"] == (1.0, 0) and specs["conv12/0"] == (1, 1)
