"""Loss-weight schedules (solver ``loss_weight_schedule``): per-loss factors over time.

The effective weight of loss i at iteration t is ``loss_weight_i * factor_i(t)``:

* CONSTANT: factor 1 (the net's loss_weight).
* CNDS_DECAY (CNDS eq. 2): auxiliary weights follow alpha_t <- alpha_t * (1 - t/N) once
  per epoch t = 1, 2, ... of N (``epochs``), starting from the net's loss_weight; the
  primary loss keeps its weight.  With ``unit: ITERATION`` t counts iterations.
* MULTIWAY_POWER (MW-BP eq. 5): gamma_i = max(min_gamma, (L_i / L_{K-1})^nu) for the
  auxiliary losses, L_i being the trunk depth where exit i attaches (weight layers on the
  longest path from the inputs, the exit's own branch not counted, as the public code's
  ``(n * p_i + 1) / (n * p_lastaux + 1)``) and L_{K-1} the deepest auxiliary exit's; the
  primary loss has gamma = 1.  gamma replaces loss_weight.
* ADAPTIVE_I / ADAPTIVE_II: MULTIWAY_POWER with nu starting at 1/2 and doubling at each
  learning-rate drop (I), or starting at 2 and halving (II).

Every factor is a pure function of the iteration, so nothing needs snapshotting.
"""
from __future__ import annotations

import math

from ..check import CheckedNet
from ..check.scopes import trunk_depths
from ..proto import caffe_pb2
from .lr_policy import step_index

LWS = caffe_pb2.LossWeightSchedule


def exit_depths(net: CheckedNet) -> dict[str, int]:
    """Loss layer -> MW-BP's L_i: weight layers on the longest path to where its exit attaches."""
    return trunk_depths(net.graph, net.losses)


def segment_lambdas(gammas: dict[str, float], depths: dict[str, int], primary: str) -> dict[str, float]:
    """Auxiliary loss -> Lambda_i, the sum of the gammas of it and every deeper auxiliary loss.

    The public MW-BP code's ``lr_weight`` (aux_trainer.py): auxiliary loss i's segment
    learning rate is divided by it.  Exits at the same depth count each other.
    """
    aux = {n: g for n, g in gammas.items() if n != primary}
    return {n: sum(g for m, g in aux.items() if depths[m] >= depths[n]) for n in aux}


class LossWeights:
    """Computes each loss's weight factor at an iteration, per the solver's schedule."""

    def __init__(self, param, net: CheckedNet, primary: str, iters_per_epoch: int = 0):
        self.param = param
        self.sched = param.loss_weight_schedule
        self.primary = primary
        self.base = {l.layer: l.weight for l in net.losses}
        self.depths = exit_depths(net)
        self.iters_per_epoch = iters_per_epoch or param.iters_per_epoch or 1
        self.kind = LWS.Type.Name(self.sched.type)

    def factors(self, it: int) -> dict[str, float]:
        """Loss layer -> factor multiplying its loss_weight at iteration ``it``."""
        if self.kind == "CONSTANT":
            return {}
        if self.kind == "CNDS_DECAY":
            alpha = self._cnds(it)
            return {name: alpha for name in self.base if name != self.primary}
        return {name: gamma / self.base[name] if self.base[name] else 0.0
                for name, gamma in self.gammas(it).items()}

    def _cnds(self, it: int) -> float:
        n = self.sched.epochs
        t = it // self.iters_per_epoch if self.sched.unit == LWS.EPOCH else it
        alpha = 1.0
        for k in range(1, t + 1):
            alpha *= max(0.0, 1.0 - k / n) if n else 1.0
        return alpha

    def nu(self, it: int) -> float:
        if self.kind == "ADAPTIVE_I":
            return 0.5 * 2.0 ** step_index(self.param, it)
        if self.kind == "ADAPTIVE_II":
            return 2.0 / 2.0 ** step_index(self.param, it)
        return self.sched.nu

    def gammas(self, it: int) -> dict[str, float]:
        """MW-BP's gamma for every loss (1 for the primary)."""
        aux = {n: d for n, d in self.depths.items() if n != self.primary}
        deepest = max(aux.values(), default=1) or 1
        nu = self.nu(it)
        out = {n: max(self.sched.min_gamma, math.pow(d / deepest, nu)) for n, d in aux.items()}
        out[self.primary] = 1.0
        return out
