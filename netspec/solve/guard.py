"""The solver's non-finite guard and Caffe's ``debug_info``.

A NaN or inf loss or gradient stops training by default (``nonfinite: STOP``), with a
diagnostic naming the iteration, the loss and the first layer whose output (forward) or
gradient (backward) went non-finite.  The layer is found by *replaying* the failing
iteration's batch layer by layer (the generated forward executed statement by statement,
each layer's backward on its own, as ``netspec time`` does), because the fused training
module has no per-layer hook points.  ``SKIP`` drops the update (and logs it); ``CONTINUE``
trains on as Caffe does.

``debug_info: true`` prints Caffe's per-layer lines (``[Forward] Layer conv1, top blob
conv1 data: ...``, ``[Backward] ... diff: ...``, ``[Update] ...``) from the same replay: the
iteration's first batch, on the weights the iteration starts from, one backward per
backward step of the schedule.  The replay leaves RNG and BatchNorm statistics as it
found them, so training follows the same path with and without it.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..compile.module import Compiled
from ..diagnostics import Diagnostic, NetspecError
from ..proto import caffe_pb2
from ..schedule import Backward
from ..tools.timing import (GLUE, is_float, isolated_backward, isolated_forward, layer_params,
                            statements_cached)

STOP, SKIP, CONTINUE = (caffe_pb2.SolverParameter.STOP, caffe_pb2.SolverParameter.SKIP,
                        caffe_pb2.SolverParameter.CONTINUE)


class NonFinite(Exception):
    """Raised inside an iteration when the guard sees a NaN/inf; caught by the solver."""

    def __init__(self, stage: str, slot: str | None = None, losses: dict | None = None,
                 params: list[str] | None = None):
        super().__init__(f"non-finite {stage}")
        self.stage, self.slot, self.losses, self.params = stage, slot, losses or {}, params or []


class NonFiniteError(NetspecError):
    """Training stopped on a non-finite loss or gradient (``nonfinite: STOP``)."""


def all_finite(tensors) -> bool:
    """One device sync for a whole list of tensors."""
    flags = [torch.isfinite(t).all() for t in tensors if t is not None and t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def nonfinite_keys(tensors: dict) -> list[str]:
    return [k for k, t in tensors.items() if t is not None and t.is_floating_point()
            and not bool(torch.isfinite(t).all())]


class GuardedUpdate:
    """A ``CaffeUpdate`` whose ``apply`` refuses non-finite gradients and results.

    Everything else (``param``, ``specs``, ``new_state``...) is the wrapped rule's."""

    def __init__(self, inner, slot: str, guard: "Guard"):
        self.inner, self.slot, self.guard = inner, slot, guard

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def apply(self, params: dict, grads: dict, state: dict, it: int, iter_size: int | None = None):
        g = self.guard
        if g.kept is not None:
            g.kept[self.slot] = {k: v.detach() for k, v in grads.items() if v is not None}
        if g.policy == CONTINUE:
            info = self.inner.apply(params, grads, state, it, iter_size)
        else:
            if not all_finite(grads.values()):
                bad = nonfinite_keys(grads)
                if g.policy == SKIP:
                    g.log(f"Iteration {it}: non-finite gradient in {_preview(bad)} (update "
                          f"'{self.slot}'); update dropped (nonfinite: SKIP)")
                    g.skipped += 1
                    return None
                raise NonFinite("backward", self.slot, params=bad)
            info = self.inner.apply(params, grads, state, it, iter_size)
            if not all_finite(params.values()):      # the update itself overflowed
                raise NonFinite("update", self.slot, params=nonfinite_keys(params))
        if g.debug:
            g.update_lines(params, grads)
        return info


@dataclass
class Finding:
    """Where a replay first saw a non-finite value."""

    stage: str                 # "forward" (a top), "parameter" (a weight), "backward" (a diff)
    layer: str
    what: str                  # "top blob conv3", "param blob 0", "bottom blob pool2"


@dataclass
class Guard:
    """The policy, the log, and the replay that locates and prints per-layer values."""

    policy: int
    debug: bool
    log: object
    skipped: int = 0
    last_losses: dict = field(default_factory=dict)    # the latest forward's loss tops (tensors)
    kept: dict | None = None       # slot -> {"layer/i": diff} of the latest update, when asked for

    # -- forward check ----------------------------------------------------------------
    def watch(self, module: torch.nn.Module, loss_tops: set[str]):
        """Raise NonFinite as soon as a forward of ``module`` returns a non-finite loss top."""
        def hook(_module, _args, out):
            tops = {k: v for k, v in out.items() if k in loss_tops}
            self.last_losses = {k: v.detach() for k, v in tops.items()}
            if not all_finite(tops.values()):
                raise NonFinite("forward", losses={k: float(v.detach().float().sum())
                                                   for k, v in tops.items()})
        return module.register_forward_hook(hook)

    # -- debug_info -------------------------------------------------------------------
    def update_lines(self, params: dict, grads: dict) -> None:
        for key, w in params.items():
            layer, i = key.rsplit("/", 1)
            d = grads.get(key)
            diff = _mean_abs(d) if d is not None else 0.0
            self.log(f"    [Update] Layer {layer}, param {i} data: {_mean_abs(w):g}; diff: {diff:g}")


# -- the replay ---------------------------------------------------------------------------

@dataclass
class Replay:
    """One forward of ``compiled`` layer by layer, each layer on detached copies of its bottoms."""

    compiled: Compiled
    record: list = field(default_factory=list)     # (layer, bottoms{var: t}, tops{var: t})

    def forward(self, batch: dict, amp=None, device_type: str = "cpu") -> Finding | None:
        """Run it; returns the first layer whose parameters or tops are non-finite."""
        with torch.enable_grad(), _autocast(amp, device_type):
            self.record = isolated_forward(self.compiled, batch)
        for layer, _, tops in self.record:
            found = None if layer == GLUE else self._check_forward(layer, tops)
            if found is not None:
                return found
        return None

    def _check_forward(self, layer: str, tops: dict) -> Finding | None:
        for i, p in enumerate(self.params(layer)):
            if not all_finite([p]):
                return Finding("parameter", layer, f"param blob {i}")
        for var, t in tops.items():
            if is_float(t) and not all_finite([t]):
                return Finding("forward", layer, f"top blob {self.blob_name(layer, var)}")
        return None

    def params(self, layer: str) -> list[torch.Tensor]:
        return layer_params(self.compiled, layer)

    def blob_name(self, layer: str, var: str) -> str:
        """The Caffe blob a forward variable holds (its name when the layer's tops line up)."""
        if layer == GLUE:
            return var
        node = self.compiled.net.graph.layer(layer)
        writes = [v for l, _, tops in self.record if l == layer for v in tops]
        if len(writes) == len(node.tops) and var in writes:
            return str(node.tops[writes.index(var)])
        return var

    def backward(self, seeds: dict[str, float], stop: set[str] = frozenset()):
        """Each layer's backward in reverse order: yields (layer, {bottom var: diff}, [param diffs]).

        ``seeds``: forward variable -> loss weight (the gradient a loss top starts with);
        ``stop``: variables whose gradient is zeroed (``gradient_scope.stop_at``)."""
        # one replay serves every backward step of the schedule: keep the graph
        for layer, diffs, _, pgrads in isolated_backward(self.compiled, self.record, seeds, stop,
                                                         retain_graph=True):
            yield layer, diffs, pgrads


def loss_seeds(compiled: Compiled, losses, factors: dict[str, float]) -> dict[str, float]:
    """Forward variable of each loss top -> its weight (loss_weight x the schedule's factor)."""
    by = {l.layer: l for l in compiled.net.losses}
    seeds = {}
    for name in losses:
        for blob, w in by[name].tops:
            var = _var_of(compiled, blob)
            if var:
                seeds[var] = seeds.get(var, 0.0) + factors.get(name, 1.0) * w
    return seeds


def stop_vars(compiled: Compiled, names) -> set[str]:
    """The forward variables holding any version of the blobs ``names``."""
    names = set(names)
    return {v for node in compiled.net.graph.layers() for b in node.tops if b.name in names
            for v in [_var_of(compiled, b)] if v}


def locate(compiled: Compiled, batch: dict, steps: list, factors: dict, amp=None,
           device_type: str = "cpu") -> Finding | None:
    """Replay one batch: the first non-finite forward top or weight, else the first layer
    (in backward order) whose bottom or parameter diff is non-finite, for each backward step."""
    with preserved(compiled):
        replay = Replay(compiled)
        found = replay.forward(batch, amp, device_type)
        if found is not None:
            return found
        for step in steps:
            seeds = loss_seeds(compiled, step.losses, factors)
            for layer, diffs, pgrads in replay.backward(seeds, stop_vars(compiled, step.stop_at)):
                for var, g in diffs.items():
                    if not all_finite([g]):
                        return Finding("backward", layer, f"bottom blob {_bottom_name(replay, var)}")
                for i, g in enumerate(pgrads):
                    if g is not None and not all_finite([g]):
                        return Finding("backward", layer, f"param blob {i}")
    return None


def debug_lines(compiled: Compiled, batch: dict, steps: list, factors: dict, amp=None,
                device_type: str = "cpu") -> list[str]:
    """Caffe's ForwardDebugInfo / BackwardDebugInfo lines for one batch (see module doc)."""
    lines = []
    with preserved(compiled):
        replay = Replay(compiled)
        replay.forward(batch, amp, device_type)
        for layer, _, tops in replay.record:
            if layer == GLUE:
                continue
            for var, t in tops.items():
                if is_float(t):
                    lines.append(f"    [Forward] Layer {layer}, top blob {replay.blob_name(layer, var)} "
                                 f"data: {_mean_abs(t):g}")
            for i, p in enumerate(replay.params(layer)):
                lines.append(f"    [Forward] Layer {layer}, param blob {i} data: {_mean_abs(p):g}")
        for step in steps:
            lines.append(f"    [Backward] step {step}")
            seeds = loss_seeds(compiled, step.losses, factors)
            norms = [0.0, 0.0, 0.0, 0.0]          # L1 data, L1 diff, sumsq data, sumsq diff
            for layer, diffs, pgrads in replay.backward(seeds, stop_vars(compiled, step.stop_at)):
                for var, g in diffs.items():
                    lines.append(f"    [Backward] Layer {layer}, bottom blob {_bottom_name(replay, var)} "
                                 f"diff: {_mean_abs(g):g}")
                for i, (p, g) in enumerate(zip(replay.params(layer), pgrads)):
                    if g is None:
                        continue
                    lines.append(f"    [Backward] Layer {layer}, param blob {i} diff: {_mean_abs(g):g}")
                    norms = [norms[0] + float(p.detach().abs().sum()), norms[1] + float(g.abs().sum()),
                             norms[2] + float((p.detach() ** 2).sum()), norms[3] + float((g ** 2).sum())]
            lines.append(f"    [Backward] All net params (data, diff): L1 norm = ({norms[0]:g}, {norms[1]:g}); "
                         f"L2 norm = ({math.sqrt(norms[2]):g}, {math.sqrt(norms[3]):g})")
    return lines


def backward_steps(schedule) -> list[Backward]:
    return [s for s in schedule.steps if isinstance(s, Backward)]


@contextmanager
def preserved(compiled: Compiled):
    """Put RNG state and buffers (BatchNorm statistics) back after a replay."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    buffers = {k: b.detach().clone() for k, b in compiled.module.named_buffers()}
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        with torch.no_grad():
            for k, b in compiled.module.named_buffers():
                if k in buffers:
                    b.copy_(buffers[k])


# -- helpers ------------------------------------------------------------------------------

def _bottom_name(replay: Replay, var: str) -> str:
    """A bottom variable's blob name: look it up as the top of the layer that wrote it."""
    for layer, _, tops in replay.record:
        if var in tops:
            return replay.blob_name(layer, var)
    return var


def _var_of(compiled: Compiled, blob) -> str | None:
    producer = compiled.net.graph.producer.get(blob)
    stmts, _, _ = statements_cached(compiled)
    writes = [w for s in stmts if s.layer == producer for w in s.writes]
    if producer is not None and not writes:       # a data layer's top: the forward's argument
        node = compiled.net.graph.layer(producer)
        if node.impl.is_data and blob.name in compiled.generated.inputs:
            return blob.name
    return writes[-1] if writes else None


def _mean_abs(t: torch.Tensor) -> float:
    """Caffe's asum / count."""
    t = t.detach()
    return float(t.abs().sum()) / max(1, t.numel())


def _preview(names: list[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


@contextmanager
def _autocast(amp, device_type: str):
    if amp is None:
        yield
    else:
        with torch.autocast(device_type, dtype=amp):
            yield


def nonfinite_error(it: int, losses: dict[str, float], finding: Finding | None, e: NonFinite, net,
                    help_: list[str]) -> NonFiniteError:
    """The diagnostic for a stopped run: iteration, loss, first layer, what to do."""
    what = {"forward": "loss", "backward": "gradient", "update": "weights after the update"}[e.stage]
    where = f" in the update of '{e.slot}'" if e.slot and e.slot != "shared" else ""
    loss_text = ", ".join(f"{k} = {v:g}" for k, v in losses.items()) or "not computed"
    msg = f"iteration {it}: non-finite {what}{where} (loss {loss_text}); training stopped"
    span, notes = None, []
    if finding is not None:
        node = net.graph.layer(finding.layer)
        kind = {"forward": "output", "parameter": "weights", "backward": "gradient"}[finding.stage]
        msg += f"; first non-finite {kind}: layer '{finding.layer}' ({node.type}), {finding.what}"
        span = node.span
    else:
        notes.append("replaying the iteration layer by layer did not reproduce the non-finite value "
                     "(it arose in a later backward step or under the fused module)")
    return NonFiniteError([Diagnostic("E0702", msg, span, help=help_, notes=notes)])
