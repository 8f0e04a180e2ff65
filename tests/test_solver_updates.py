"""Caffe's learning-rate policies and solver update rules (netspec.solve).

Three kinds of oracle: real Caffe trajectories (../shared/caffe-oracle/solvers: 12
iterations of Solver::Step per case), scalar formulas written out by hand in float64,
and the policy formulas of SGDSolver::GetLearningRate.
"""
import json
import math
import pickle

import h5py
import numpy as np
import pytest
import torch
from google.protobuf import text_format

from netspec.check import check_net, load
from netspec.compile.module import compile_net
from netspec.interop.caffemodel import copy_blobs, read_caffemodel
from netspec.lower import NetState
from netspec.proto import caffe_pb2
from netspec.solve.lr_policy import learning_rate, lr_changed, lr_dropped, step_index
from netspec.solve.updates import HISTORY_SLOTS, CaffeUpdate, solver_type
from oracle_harness import ORACLE, close, manifest

SOLVER_CASES = [c for c in manifest() if c["kind"] == "solver"]
CASE_IDS = [c["name"] for c in SOLVER_CASES]


def solver(text: str):
    return text_format.Parse(text, caffe_pb2.SolverParameter())


# ---------------------------------------------------------------- Caffe trajectories

class Case:
    """One solver case: its SolverParameter, trajectory and the blob name <-> key map."""

    def __init__(self, entry):
        self.dir = ORACLE / entry["dir"]
        self.json = json.loads((self.dir / "case.json").read_text())
        _, (self.param, _) = load(self.dir / "solver.prototxt")
        self.traj = np.load(self.dir / "trajectory.npz")
        self.blobs = sorted(k.split("/", 1)[1] for k in self.traj.files if k.startswith("param/"))
        self.iters = self.json["iterations"]
        self.tol = self.json["tolerance"]

    def caffe(self, kind: str, blob: str, k: int) -> np.ndarray:
        return self.traj[f"{kind}/{blob}"][k]


def build(case: Case):
    with h5py.File(case.dir / "data.h5", "r") as f:
        data, label = f["data"][()], f["label"][()]
    _, src = load(case.dir / "net.prototxt")
    net = check_net(src, NetState.of("TRAIN"), input_shapes={"data": (8, *data.shape[1:]), "label": (8,)})
    compiled = compile_net(net, seed=0)
    copy_blobs(compiled, read_caffemodel(case.dir / "init.caffemodel"))
    keys = {b: compiled.blob_key(b.split("/")[0], int(b.split("/")[1])) for b in case.blobs}
    return compiled, keys, torch.from_numpy(data), torch.from_numpy(label)


def loss_and_grads(compiled, data, label, k: int, iter_size: int):
    """Caffe's Step: mean loss over iter_size batches, parameter diffs summed."""
    params = dict(compiled.module.named_parameters())
    losses, grads = [], {n: torch.zeros_like(p) for n, p in params.items()}
    for j in range(iter_size):
        b = (k * iter_size + j) % 4
        loss = compiled.module(data=data[b * 8:(b + 1) * 8], label=label[b * 8:(b + 1) * 8])["loss"]
        gs = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for n, g in zip(params, gs):
            if g is not None:
                grads[n] += g
        losses.append(float(loss.detach()))
    return float(np.float32(np.sum(np.float32(losses)) / np.float32(iter_size))), grads


def check_clip(case: Case, k: int, info, errors: list) -> None:
    clipped = k in case.json["clipped_iterations"]
    if info.clipped != clipped:
        errors.append(f"iteration {k}: clipping fired={info.clipped}, Caffe={clipped}")
    elif clipped:   # Caffe logs 6 significant digits
        log = case.json["clip_log"][str(k)]
        if not (math.isclose(info.l2norm, log["l2norm"], rel_tol=2e-5)
                and math.isclose(info.clip_scale, log["scale"], rel_tol=2e-5)):
            errors.append(f"iteration {k}: clip norm {info.l2norm:.6g} scale {info.clip_scale:.6g}, "
                          f"Caffe logged {log}")


@pytest.mark.parametrize("entry", SOLVER_CASES, ids=CASE_IDS)
def test_caffe_trajectory(entry):
    """netspec net + CaffeUpdate reproduce Caffe's 12 iterations: loss, lr, every param."""
    case = Case(entry)
    compiled, keys, data, label = build(case)
    params = {n: p.data for n, p in compiled.module.named_parameters()}
    update, state = CaffeUpdate(case.param, compiled.param_specs()), {}
    errors = []
    for k in range(case.iters):
        loss, grads = loss_and_grads(compiled, data, label, k, case.param.iter_size)
        ok, msg = close(np.float32(loss), case.traj["loss"][k], case.tol["loss"])
        if not ok:
            errors.append(f"iteration {k} loss {loss:.7g} vs Caffe {case.traj['loss'][k]:.7g}: {msg}")
        grad_errors = [b for b in case.blobs
                       if not close(grads[keys[b]].numpy(), case.caffe("grad", b, k), case.tol["params"])[0]]
        info = update.apply(params, grads, state, k)
        check_clip(case, k, info, errors)
        if not math.isclose(info.rate, case.traj["lr"][k], rel_tol=case.tol["lr"]["rtol"]):
            errors.append(f"iteration {k}: lr {info.rate!r} vs Caffe {case.traj['lr'][k]!r}")
        for b in case.blobs:
            ok, msg = close(params[keys[b]].numpy(), case.caffe("param", b, k + 1), case.tol["params"])
            if not ok:
                cause = "gradient differs too" if b in grad_errors else "gradient matches: update-rule error"
                errors.append(f"iteration {k} param {b} ({cause}): {msg}")
        if errors:
            break
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("entry", SOLVER_CASES, ids=CASE_IDS)
def test_update_rule_replays_caffe_gradients(entry):
    """Fed Caffe's own raw gradients, the update alone reproduces Caffe's parameters.

    No net involved: this isolates the update rule (clip, normalise, regularise,
    ComputeUpdateValue) from gradient computation.
    """
    case = Case(entry)
    params = {b: torch.from_numpy(case.caffe("param", b, 0).copy()) for b in case.blobs}
    specs = spec_of_blobs(case)
    update, state = CaffeUpdate(case.param, specs), {}
    errors = []
    for k in range(case.iters):
        grads = {b: torch.from_numpy(case.caffe("grad", b, k).copy()) for b in case.blobs}
        before = {b: g.clone() for b, g in grads.items()}
        info = update.apply(params, grads, state, k)
        assert all(torch.equal(grads[b], before[b]) for b in grads), "apply modified the caller's grads"
        check_clip(case, k, info, errors)
        for b in case.blobs:
            ok, msg = close(params[b].numpy(), case.caffe("param", b, k + 1), case.tol["params"])
            if not ok:
                errors.append(f"iteration {k} param {b}: {msg}")
    assert not errors, "\n".join(errors)


def spec_of_blobs(case: Case) -> dict:
    """(lr_mult, decay_mult) per 'layer/i' from the case's own net (param { } blocks)."""
    _, src = load(case.dir / "net.prototxt")
    specs = {}
    for layer in src.net.layer:
        for i, ps in enumerate(layer.param):
            specs[f"{layer.name}/{i}"] = (ps.lr_mult, ps.decay_mult)
    assert set(specs) == set(case.blobs)
    return specs


@pytest.mark.parametrize("entry", SOLVER_CASES, ids=CASE_IDS)
def test_lr_matches_caffe_bit_for_bit(entry):
    case = Case(entry)
    mine = np.float32([learning_rate(case.param, k) for k in range(case.iters)])
    np.testing.assert_array_equal(mine, case.traj["lr"])


# ---------------------------------------------------------------- hand-derived formulas
#
# Each reference works on Python floats element by element, written from Caffe's
# sgd_solvers.cpp; the solver is run in float64 so the comparison is tight.

W0 = [0.5, -1.25, 0.0, 2.0]
GRADS = [[0.3, -0.2, 0.7, 0.0], [-1.0, 0.4, 0.25, 0.5], [0.6, 0.6, -0.3, -0.9],
         [0.1, -0.8, 0.2, 0.3], [-0.4, 0.05, 0.9, -0.6]]
LR_MULT, DECAY_MULT, DECAY = 2.0, 0.5, 0.125
# step policy: base_lr 0.5, gamma 0.5, stepsize 2 -> rates 0.5 0.5 0.25 0.25 0.125 (exact)
RATES = [0.5 * 0.5 ** (k // 2) for k in range(len(GRADS))]
HYPER = {"SGD": "momentum: 0.75", "Nesterov": "momentum: 0.75", "AdaGrad": "delta: 0.001",
         "RMSProp": "rms_decay: 0.875 delta: 0.001", "AdaDelta": "momentum: 0.875 delta: 0.001",
         "Adam": "momentum: 0.75 momentum2: 0.875 delta: 0.001"}


def ref_sgd(w, g, h, lr, p, t):
    h["v"] = p.momentum * h.get("v", 0.0) + lr * g
    return w - h["v"]


def ref_nesterov(w, g, h, lr, p, t):
    old = h.get("v", 0.0)
    h["v"] = p.momentum * old + lr * g
    return w - ((1 + p.momentum) * h["v"] - p.momentum * old)


def ref_adagrad(w, g, h, lr, p, t):
    h["n"] = h.get("n", 0.0) + g * g
    return w - lr * g / (math.sqrt(h["n"]) + p.delta)


def ref_rmsprop(w, g, h, lr, p, t):
    h["n"] = p.rms_decay * h.get("n", 0.0) + (1 - p.rms_decay) * g * g
    return w - lr * g / (math.sqrt(h["n"]) + p.delta)


def ref_adadelta(w, g, h, lr, p, t):
    rho = p.momentum
    h["g2"] = rho * h.get("g2", 0.0) + (1 - rho) * g * g
    dx = g * math.sqrt((h.get("u2", 0.0) + p.delta) / (h["g2"] + p.delta))
    h["u2"] = rho * h.get("u2", 0.0) + (1 - rho) * dx * dx
    return w - lr * dx


def ref_adam(w, g, h, lr, p, t):
    b1, b2 = p.momentum, p.momentum2
    h["m"] = b1 * h.get("m", 0.0) + (1 - b1) * g
    h["v"] = b2 * h.get("v", 0.0) + (1 - b2) * g * g
    corrected = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    return w - corrected * h["m"] / (math.sqrt(h["v"]) + p.delta)


REFS = {"SGD": ref_sgd, "Nesterov": ref_nesterov, "AdaGrad": ref_adagrad, "RMSProp": ref_rmsprop,
        "AdaDelta": ref_adadelta, "Adam": ref_adam}


def hand_solver(kind: str, reg: str, extra: str = ""):
    return solver(f'type: "{kind}" base_lr: 0.5 lr_policy: "step" gamma: 0.5 stepsize: 2 '
                  f'weight_decay: {DECAY} regularization_type: "{reg}" {HYPER[kind]} {extra}')


def reference(kind, p, iter_size=1, clip=None):
    """Trajectory of W0 under GRADS (each the sum of iter_size passes), element by element."""
    ws, hist, out = list(W0), [{} for _ in W0], []
    for k, gs in enumerate(GRADS):
        if clip is not None:
            norm = math.sqrt(sum(g * g for g in gs))
            gs = [g * clip / norm for g in gs] if norm > clip else gs
        sign = lambda x: (x > 0) - (x < 0)
        for i, (w, g) in enumerate(zip(ws, gs)):
            g = g / iter_size + DECAY * DECAY_MULT * (w if p.regularization_type == "L2" else sign(w))
            ws[i] = REFS[kind](w, g, hist[i], RATES[k] * LR_MULT, p, k + 1)
        out.append(list(ws))
    return out


def run_update(p, iter_size=None):
    w = {"w": torch.tensor(W0, dtype=torch.float64)}
    update, state, out = CaffeUpdate(p, {"w": (LR_MULT, DECAY_MULT)}), {}, []
    for k, gs in enumerate(GRADS):
        update.apply(w, {"w": torch.tensor(gs, dtype=torch.float64)}, state, k, iter_size)
        out.append(w["w"].tolist())
    return out


@pytest.mark.parametrize("reg", ["L2", "L1"])
@pytest.mark.parametrize("kind", sorted(REFS))
def test_update_formula_by_hand(kind, reg):
    """Five iterations with a rate drop at 2 and 4, lr_mult, decay_mult, L1/L2 decay."""
    p = hand_solver(kind, reg)
    assert [learning_rate(p, k) for k in range(len(GRADS))] == RATES
    np.testing.assert_allclose(run_update(p), reference(kind, p), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["SGD", "Adam"])
def test_iter_size_and_clipping_by_hand(kind):
    """Clipping scales the *summed* diffs (before 1/iter_size), by the global L2 norm."""
    p = hand_solver(kind, "L2", "clip_gradients: 0.9 iter_size: 2")
    expected = reference(kind, p, iter_size=2, clip=p.clip_gradients)   # the float32 0.9
    np.testing.assert_allclose(run_update(p), expected, rtol=1e-12, atol=1e-14)
    unclipped = reference(kind, p, iter_size=2)
    assert not np.allclose(expected, unclipped)     # the case does exercise clipping


def test_clip_norm_spans_all_params():
    """One norm over every param: a small diff is scaled by a big diff elsewhere."""
    p = solver('type: "SGD" base_lr: 1 clip_gradients: 1')
    w = {"a": torch.zeros(1, dtype=torch.float64), "b": torch.zeros(2, dtype=torch.float64)}
    g = {"a": torch.tensor([0.1], dtype=torch.float64), "b": torch.tensor([3.0, 4.0], dtype=torch.float64)}
    info = CaffeUpdate(p, {"a": (1, 1), "b": (1, 1)}).apply(w, g, {}, 0)
    norm = math.sqrt(0.01 + 25)
    assert info.clipped and info.l2norm == pytest.approx(norm) and info.clip_scale == pytest.approx(1 / norm)
    assert w["a"].item() == pytest.approx(-0.1 / norm)
    np.testing.assert_allclose(w["b"].numpy(), [-3 / norm, -4 / norm])
    g_small = {"a": torch.tensor([0.1], dtype=torch.float64)}
    assert not CaffeUpdate(p, {"a": (1, 1), "b": (1, 1)}).apply(w, g_small, {}, 0).clipped


def test_missing_grad_is_zero_and_lr_mult_zero_freezes():
    p = solver('type: "SGD" base_lr: 0.5 momentum: 0.5 weight_decay: 0.25')
    w = {"a": torch.ones(2, dtype=torch.float64), "f": torch.ones(2, dtype=torch.float64)}
    update = CaffeUpdate(p, {"a": (1, 1), "f": (0, 1)})
    update.apply(w, {"f": torch.ones(2, dtype=torch.float64)}, {}, 0)
    # 'a': only weight decay, 0.5 * 0.25 * 1; 'f': lr_mult 0 never moves
    np.testing.assert_allclose(w["a"].numpy(), [1 - 0.125] * 2)
    np.testing.assert_allclose(w["f"].numpy(), [1.0, 1.0])


# ---------------------------------------------------------------- per-loss state

def test_states_evolve_independently():
    """MW-BP keeps one state per loss on shared params: each history sees only its grads."""
    p = solver('type: "Adam" base_lr: 0.1 momentum: 0.9 momentum2: 0.99')
    update = CaffeUpdate(p, {"w": (1, 1)})
    rng = np.random.default_rng(0)
    ga = [torch.from_numpy(rng.normal(size=3)) for _ in range(4)]
    gb = [torch.from_numpy(rng.normal(size=3)) for _ in range(4)]
    shared, sa, sb = {"w": torch.zeros(3, dtype=torch.float64)}, {}, {}
    alone_a, alone_b, ta, tb = {"w": torch.zeros(3, dtype=torch.float64)}, {"w": torch.zeros(3, dtype=torch.float64)}, {}, {}
    for k in range(4):
        update.apply(shared, {"w": ga[k]}, sa, k)
        update.apply(shared, {"w": gb[k]}, sb, k)
        update.apply(alone_a, {"w": ga[k]}, ta, k)
        update.apply(alone_b, {"w": gb[k]}, tb, k)
    for slot in HISTORY_SLOTS["Adam"]:
        assert torch.equal(sa["w"][slot], ta["w"][slot]) and torch.equal(sb["w"][slot], tb["w"][slot])
        assert not torch.equal(sa["w"][slot], sb["w"][slot])
    # no weight decay: Adam's steps do not depend on w, so the shared param moved by both
    np.testing.assert_allclose(shared["w"].numpy(), (alone_a["w"] + alone_b["w"]).numpy(), rtol=1e-12)
    restored = pickle.loads(pickle.dumps(sa))
    assert torch.equal(restored["w"]["history2"], sa["w"]["history2"])


def test_new_state_and_v1_solver_type():
    assert solver_type(solver("solver_type: ADAM")) == "Adam"
    assert solver_type(solver("solver_type: NESTEROV")) == "Nesterov"
    assert solver_type(solver("")) == "SGD"
    state = CaffeUpdate(solver('type: "AdaDelta"'), {"w": (1, 1)}).new_state({"w": torch.ones(2)})
    assert set(state["w"]) == {"history", "history2"} and not state["w"]["history"].any()


# ---------------------------------------------------------------- learning-rate policies

POLICY_CASES = [
    ('lr_policy: "fixed"', lambda it: 0.01),
    ('lr_policy: "step" gamma: 0.1 stepsize: 3', lambda it: 0.01 * 0.1 ** (it // 3)),
    ('lr_policy: "exp" gamma: 0.95', lambda it: 0.01 * 0.95 ** it),
    ('lr_policy: "inv" gamma: 0.0001 power: 0.75', lambda it: 0.01 * (1 + 0.0001 * it) ** -0.75),
    ('lr_policy: "multistep" gamma: 0.5 stepvalue: 2 stepvalue: 5',
     lambda it: 0.01 * 0.5 ** ((it >= 2) + (it >= 5))),
    ('lr_policy: "poly" power: 1.5 max_iter: 20', lambda it: 0.01 * (1 - it / 20) ** 1.5),
    ('lr_policy: "sigmoid" gamma: -0.5 stepsize: 4', lambda it: 0.01 / (1 + math.exp(0.5 * (it - 4)))),
]


@pytest.mark.parametrize("text,formula", POLICY_CASES, ids=[t.split('"')[1] for t, _ in POLICY_CASES])
def test_policy_formula(text, formula):
    p = solver("base_lr: 0.01 " + text)
    for it in (0, 1, 2, 3, 4, 5, 6, 9, 13, 19):
        assert learning_rate(p, it) == pytest.approx(formula(it), rel=1e-6), it


def test_default_policy_is_fixed():
    assert learning_rate(solver("base_lr: 0.25"), 1000) == 0.25


def test_step_index_and_drops():
    step = solver('base_lr: 1 lr_policy: "step" gamma: 0.5 stepsize: 3')
    assert [step_index(step, i) for i in range(7)] == [0, 0, 0, 1, 1, 1, 2]
    assert [i for i in range(10) if lr_dropped(step, i)] == [3, 6, 9]
    # Caffe's multistep advances current_step_ at most once per iteration
    multi = solver('base_lr: 1 lr_policy: "multistep" gamma: 0.5 stepvalue: 2 stepvalue: 2 stepvalue: 6')
    assert [step_index(multi, i) for i in range(8)] == [0, 0, 1, 2, 2, 2, 3, 3]
    assert [i for i in range(10) if lr_dropped(multi, i)] == [2, 3, 6]
    assert learning_rate(multi, 3) == 0.25
    expo = solver('base_lr: 1 lr_policy: "exp" gamma: 0.9')
    assert not any(lr_dropped(expo, i) for i in range(5)) and all(lr_changed(expo, i) for i in range(1, 5))
    assert not lr_changed(expo, 0) and not lr_changed(solver("base_lr: 1"), 3)
