"""Caffe's ``SGDSolver::ApplyUpdate`` and the six update rules, on raw tensors.

Not ``torch.optim``: multi-way back-propagation applies several updates per iteration
to ``.data`` aliases of the same parameters, each loss with its own history, so the
history lives in a plain ``state`` dict the caller owns (one per loss) and snapshots.

Order of operations, per Caffe (sgd_solver.cpp)::

    rate = GetLearningRate(iter)
    ClipGradients()                       # global L2 norm of the summed diffs
    for each param: Normalize (1/iter_size), Regularize (L1/L2), ComputeUpdateValue
    Net::Update()                         # w -= diff

Scalars are computed in the parameters' dtype as Caffe<Dtype> does (float32 for
float32 tensors, float64 for float64 ones); the rate comes from ``lr_policy``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..check.solver import _V1_TYPES
from .lr_policy import learning_rate

# History blobs per type, in Caffe's layout: 'history' is history_[i], 'history2' is
# history_[i + N] (AdaDelta: squared updates; Adam: second moment v).  Caffe writes
# them to a .solverstate in that order: every 'history', then every 'history2'.
HISTORY_SLOTS = {"SGD": ("history",), "Nesterov": ("history",), "AdaGrad": ("history",),
                 "RMSProp": ("history",), "AdaDelta": ("history", "history2"),
                 "Adam": ("history", "history2")}


def solver_type(param) -> str:
    """The solver type name, from ``type`` or the deprecated V1 ``solver_type`` enum."""
    if param.HasField("solver_type") and not param.HasField("type"):
        return _V1_TYPES[param.solver_type]
    return param.type


@dataclass
class UpdateInfo:
    """What one ``apply`` did: the policy rate, the global diff norm, the clip scale."""

    rate: float
    l2norm: float | None = None      # computed only when clip_gradients >= 0
    clip_scale: float | None = None  # set when clipping fired

    @property
    def clipped(self) -> bool:
        return self.clip_scale is not None


@dataclass
class _Step:
    """The per-param inputs of one ComputeUpdateValue, scalars already in Dtype."""

    diff: torch.Tensor
    hist: dict
    local_rate: float
    it: int
    p: object
    S: type            # np.float32 or np.float64: Caffe's Dtype


def _sgd(s: _Step) -> torch.Tensor:
    # history = local_rate * diff + momentum * history; the update is the history.
    h = s.hist["history"]
    h.mul_(float(s.S(s.p.momentum))).add_(s.diff, alpha=s.local_rate)
    return h


def _nesterov(s: _Step) -> torch.Tensor:
    h = s.hist["history"]
    mu = s.S(s.p.momentum)
    old = h.clone()
    h.mul_(float(mu)).add_(s.diff, alpha=s.local_rate)
    # step back, then over-step: (1 + mu) * h_new - mu * h_old
    return h.mul(float(s.S(1) + mu)).add_(old, alpha=-float(mu))


def _adagrad(s: _Step) -> torch.Tensor:
    h = s.hist["history"]
    h.add_(s.diff * s.diff)
    return (s.diff / (h.sqrt() + float(s.S(s.p.delta)))).mul_(s.local_rate)


def _rmsprop(s: _Step) -> torch.Tensor:
    h = s.hist["history"]
    decay = s.S(s.p.rms_decay)
    h.mul_(float(decay)).add_(s.diff * s.diff, alpha=float(s.S(1) - decay))
    return (s.diff / (h.sqrt() + float(s.S(s.p.delta)))).mul_(s.local_rate)


def _adadelta(s: _Step) -> torch.Tensor:
    g2, u2 = s.hist["history"], s.hist["history2"]
    mu, delta = s.S(s.p.momentum), float(s.S(s.p.delta))
    g2.mul_(float(mu)).add_(s.diff * s.diff, alpha=float(s.S(1) - mu))
    step = s.diff * ((u2 + delta) / (g2 + delta)).sqrt()
    # Caffe accumulates the squared update *before* applying the rate.
    u2.mul_(float(mu)).add_(step * step, alpha=float(s.S(1) - mu))
    return step.mul_(s.local_rate)


def _adam(s: _Step) -> torch.Tensor:
    m, v = s.hist["history"], s.hist["history2"]
    b1, b2, t = s.S(s.p.momentum), s.S(s.p.momentum2), s.it + 1
    # sqrt(1 - b2^t) / (1 - b1^t): pow(Dtype, int) is a double in Caffe.
    correction = s.S(math.sqrt(1.0 - float(b2) ** t) / (1.0 - float(b1) ** t))
    m.mul_(float(b1)).add_(s.diff, alpha=float(s.S(1) - b1))
    v.mul_(float(b2)).add_(s.diff * s.diff, alpha=float(s.S(1) - b2))
    return (m / (v.sqrt() + float(s.S(s.p.delta)))).mul_(float(s.S(s.local_rate) * correction))


RULES = {"SGD": _sgd, "Nesterov": _nesterov, "AdaGrad": _adagrad, "RMSProp": _rmsprop,
         "AdaDelta": _adadelta, "Adam": _adam}


def _regularize(diff, w, local_decay: float, kind: str) -> None:
    if local_decay == 0:
        return
    diff.add_(w if kind == "L2" else torch.sign(w), alpha=local_decay)


class CaffeUpdate:
    """One solver's update rule: ``SolverParameter`` + per-param (lr_mult, decay_mult).

    ``specs`` maps each parameter name (as in ``params``) to ``(lr_mult, decay_mult)``,
    e.g. ``Compiled.param_specs()``.
    """

    def __init__(self, param, specs: dict[str, tuple[float, float]]):
        self.param = param
        self.specs = dict(specs)
        self.type = solver_type(param)
        self.rule = RULES[self.type]

    def rate(self, it: int) -> float:
        return learning_rate(self.param, it)

    def new_state(self, params: dict[str, torch.Tensor]) -> dict:
        """Zero history for ``params``: ``{name: {slot: tensor}}`` (picklable)."""
        return {n: {k: torch.zeros_like(w) for k in HISTORY_SLOTS[self.type]} for n, w in params.items()}

    @torch.no_grad()
    def apply(self, params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor | None],
              state: dict, it: int, iter_size: int | None = None) -> UpdateInfo:
        """Update ``params`` in place from ``grads`` (summed over ``iter_size`` passes).

        ``grads`` is left untouched (work happens on copies); a missing or ``None``
        gradient counts as zero, as Caffe's cleared diff.  ``state`` gets its history
        created on first use.  ``iter_size`` defaults to the solver's.
        """
        iter_size = self.param.iter_size if iter_size is None else iter_size
        info = UpdateInfo(self.rate(it))
        diffs = {n: self._diff(w, grads.get(n)) for n, w in params.items()}
        self._clip(diffs, info)
        for name, w in params.items():
            self._update_one(name, w, diffs[name], state, it, iter_size, info.rate)
        return info

    def _diff(self, w, g) -> torch.Tensor:
        if g is None:
            return torch.zeros_like(w)
        return g.detach().to(dtype=w.dtype, copy=True).reshape(w.shape)

    def _clip(self, diffs: dict, info: UpdateInfo) -> None:
        clip = self.param.clip_gradients
        if clip < 0 or not diffs:
            return
        sumsq = torch.stack([(d * d).sum() for d in diffs.values()]).sum()
        info.l2norm = float(sumsq.sqrt())
        S = _dtype_scalar(next(iter(diffs.values())))
        if S(info.l2norm) > S(clip):
            info.clip_scale = float(S(clip) / S(info.l2norm))
            for d in diffs.values():
                d.mul_(info.clip_scale)

    def _update_one(self, name, w, diff, state, it, iter_size, rate) -> None:
        if name not in self.specs:
            raise KeyError(f"no (lr_mult, decay_mult) given for parameter '{name}'")
        lr_mult, decay_mult = self.specs[name]
        S = _dtype_scalar(w)
        if iter_size != 1:
            diff.mul_(float(S(1) / S(iter_size)))
        _regularize(diff, w, float(S(self.param.weight_decay) * S(decay_mult)), self.param.regularization_type)
        hist = state.setdefault(name, {})
        for slot in HISTORY_SLOTS[self.type]:
            if slot not in hist:
                hist[slot] = torch.zeros_like(w)
        local_rate = float(S(rate) * S(lr_mult))
        w.sub_(self.rule(_Step(diff, hist, local_rate, it, self.param, S)))


def _dtype_scalar(t: torch.Tensor) -> type:
    """Caffe's Dtype for scalar arithmetic on ``t``."""
    return np.float64 if t.dtype == torch.float64 else np.float32
