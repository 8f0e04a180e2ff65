"""Execute a backward schedule: the one place where BP modes act.

Gradients come from ``torch.autograd.grad`` restricted to each step's parameters
(``inputs=``), so autograd only walks the part of the graph a loss's scope needs.
``stop_at`` blobs are gated by tensor hooks that zero the gradient of the loss
being back-propagated, and only of that loss.

Updates write through persistent ``.data`` aliases of the parameters.  An alias
shares storage with its parameter but not its version counter, so an update
between two backward passes over the same retained graph is seen by autograd's
saved tensors (the weights in the Jacobians) without tripping the "modified by
an inplace operation" check: this is how MW-BP's later backward passes use the
updated weights with the shared forward's activations.

Every mode starts from the same weights for a given seed: the fillers run over the
whole net (every loss's branch), and a pruned training module (STANDARD's) copies
its blobs from that.  ``segment_lr: LAMBDA`` divides an auxiliary loss's segment
learning rate by Lambda_i at each of its updates (``loss_weights.segment_lambdas``).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..check import CheckedNet
from ..compile.module import Compiled, compile_net, run_module
from ..graph import Blob
from ..schedule import Backward, Forward, Schedule, Update
from .loss_weights import exit_depths, segment_lambdas


@dataclass
class StepResult:
    losses: dict[str, float]          # loss layer -> sum_j w_j * top_j (weighted as in Caffe)
    outputs: dict[str, torch.Tensor]  # last forward's outputs


def loss_tops(net: CheckedNet, losses) -> list[Blob]:
    by = {l.layer: l for l in net.losses}
    return [t for name in losses for t, _ in by[name].tops]


def stop_blobs(net: CheckedNet, schedule: Schedule) -> list[Blob]:
    """Every version of every blob some backward step stops at."""
    names = {n for s in schedule.steps if isinstance(s, Backward) for n in s.stop_at}
    return [b for node in net.graph.layers() for b in node.tops if b.name in names]


def copy_parameters(src: Compiled, dst: Compiled) -> None:
    """Copy ``src``'s parameter and buffer values into ``dst``'s, matched by Caffe layer name."""
    for layer, attr in dst.generated.attrs.items():
        if layer not in src.generated.attrs or not hasattr(dst.module, attr):
            continue
        a, b = getattr(src.module, src.generated.attrs[layer]), getattr(dst.module, attr)
        theirs = dict(a.named_parameters(recurse=False)) | dict(a.named_buffers(recurse=False))
        with torch.no_grad():
            for name, t in list(b.named_parameters(recurse=False)) + list(b.named_buffers(recurse=False)):
                if name in theirs:
                    t.copy_(theirs[name])


def share_parameters(src: Compiled, dst: Compiled) -> None:
    """Make ``dst`` use ``src``'s parameter and buffer tensors, matched by Caffe layer name."""
    for layer, attr in dst.generated.attrs.items():
        if layer not in src.generated.attrs or not hasattr(dst.module, attr):
            continue                  # layers without a module (inputs, activations)
        a, b = getattr(src.module, src.generated.attrs[layer]), getattr(dst.module, attr)
        for name, p in list(a.named_parameters(recurse=False)):
            setattr(b, name, p)
        for name, buf in list(a.named_buffers(recurse=False)):
            if name in dict(b.named_buffers(recurse=False)):
                b._buffers[name] = buf


class Executor:
    """Runs one iteration of a Schedule: forward(s), backward(s) and update(s)."""

    def __init__(self, net: CheckedNet, schedule: Schedule, updaters: dict, seed: int = 0,
                 dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                 scale_head_gradients: bool = False, amp: torch.dtype | None = None,
                 channels_last: bool = False):
        self.net, self.schedule, self.updaters = net, schedule, updaters
        self.scale_head = scale_head_gradients
        self.device = torch.device(device)
        self.amp, self.channels_last = amp, channels_last
        self.stops = stop_blobs(net, schedule)
        self.main = self._compile(schedule.outputs(), seed, dtype, device)
        everything = frozenset(l.layer for l in net.losses)
        if everything - schedule.outputs():      # pruned: fill the whole net, then copy (same start)
            copy_parameters(self._compile(everything, seed, dtype, device), self.main)
        self.modules = {frozenset(schedule.outputs()): self.main}
        for step in schedule.steps:
            key = frozenset(step.losses) if isinstance(step, Forward) else None
            if key is not None and key not in self.modules:
                sub = self._compile(key, seed, dtype, device)
                share_parameters(self.main, sub)
                self.modules[key] = sub
        named = dict(self.main.module.named_parameters())
        self.params = {f"{l}/{i}": named[self.main.blob_key(l, i)]
                       for l in self.main.generated.layers
                       for i in range(len(net.graph.layer(l).impl.blobs))
                       if self.main.blob_key(l, i) in named}
        self.data = {k: p.data for k, p in self.params.items()}     # persistent aliases
        self.state: dict[str, dict] = {slot: {} for slot in {s.slot for s in schedule.steps
                                                             if isinstance(s, Update)}}
        self._active_stop: set[str] = set()
        self.depths = exit_depths(net) if schedule.segment_lr == "LAMBDA" else {}
        self.heads = {s.losses[0]: set(s.head) for s in schedule.steps
                      if isinstance(s, Backward) and len(s.losses) == 1}
        self.lr_scale: dict[str, float] = {}       # slot -> segment lr factor this iteration

    def _compile(self, losses, seed, dtype, device) -> Compiled:
        outputs = list(dict.fromkeys(loss_tops(self.net, sorted(losses)) + self.stops))
        compiled = compile_net(self.net, outputs=outputs, seed=seed, dtype=dtype, fuse=True)
        compiled.module.to(device)
        if self.channels_last:
            compiled.module.to(memory_format=torch.channels_last)
        return compiled

    def forward(self, module, batch: dict) -> dict:
        """One forward, under autocast and in channels_last when the solver asks for them."""
        if self.channels_last:
            batch = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                     for k, v in batch.items()}
        if self.amp is None:
            return run_module(module, batch)
        with torch.autocast(self.device.type, dtype=self.amp):
            out = run_module(module, batch)
        return {k: v.float() if v.is_floating_point() else v for k, v in out.items()}

    # -- one iteration ------------------------------------------------------------------
    def iteration(self, batches: list[dict], it: int, weights: dict[str, float]) -> StepResult:
        """Run the schedule; ``batches`` has iter_size input dicts; ``weights`` scales each loss.

        With iter_size > 1 every step before the (single) update runs once per batch,
        gradients summing as in Caffe; the update divides by iter_size.
        """
        steps = self.schedule.steps
        updates = [i for i, s in enumerate(steps) if isinstance(s, Update)]
        if len(batches) > 1 and len(updates) != 1:
            raise ValueError("iter_size > 1 needs a schedule with a single update (not MULTIWAY)")
        body, tail = (steps[:updates[0]], steps[updates[0]:]) if len(batches) > 1 else (steps, [])
        grads: dict[str, torch.Tensor] = {}
        totals: dict[str, float] = {}
        out = {}
        self.lr_scale = self._segment_lr_scale(weights)
        for batch in batches:
            seen: dict[str, float] = {}
            for i, step in enumerate(body):
                out = self._run(step, body[i + 1:], batch, out, grads, it, weights, seen, len(batches))
            for name, value in seen.items():
                totals[name] = totals.get(name, 0.0) + value
        for step in tail:
            self._update(step, grads, it, len(batches))
        return StepResult({k: v / len(batches) for k, v in totals.items()}, out)

    def _run(self, step, rest, batch, out, grads, it, weights, seen, repeat):
        if isinstance(step, Forward):
            out = self.forward(self.modules[frozenset(step.losses)].module, batch)
            self._gate(out)
            by = {l.layer: l for l in self.net.losses}
            for name in step.losses:       # Caffe's weighting: sum_j loss_weight_j * top_j
                seen.setdefault(name, float(sum(w * out[t.name].detach().sum() for t, w in by[name].tops)))
        elif isinstance(step, Backward):
            until = next((j for j, s in enumerate(rest) if isinstance(s, Forward)), len(rest))
            retain = any(isinstance(s, Backward) for s in rest[:until])
            self._backward(step, out, grads, weights, retain)
        else:
            self._update(step, grads, it, repeat)
        return out

    def _gate(self, out) -> None:
        for blob in self.stops:
            t = out.get(str(blob)) if str(blob) in out else out.get(blob.name)
            if t is not None and t.requires_grad:
                t.register_hook(lambda g, name=blob.name: torch.zeros_like(g)
                                if name in self._active_stop else None)

    def _backward(self, step: Backward, out, grads, weights, retain: bool) -> None:
        by = {l.layer: l for l in self.net.losses}
        objective = sum(weights.get(name, 1.0) * w * out[t.name].sum()
                        for name in step.losses for t, w in by[name].tops)
        params = [self.params[k] for k in step.params]
        self._active_stop = set(step.stop_at)
        try:
            got = self._gradients(objective, params, retain)
        finally:
            self._active_stop = set()
        head, gamma = self._head_scaling(step, weights)
        for key, g in zip(step.params, got):
            if g is None:
                g = torch.zeros_like(self.params[key])
            if key in head:
                g = g / gamma             # MW-BP: gamma scales segment gradients, not the head's
            grads[key] = grads[key] + g if key in grads else g

    def _head_scaling(self, step: Backward, weights) -> tuple[set, float]:
        """(the keys whose gradient ``_backward`` divides by gamma, gamma) for ``step``."""
        by = {l.layer: l for l in self.net.losses}
        gamma = sum(weights.get(name, 1.0) * w for name in step.losses for _, w in by[name].tops)
        return (set(step.head) if not self.scale_head and gamma != 0 else set()), gamma

    def _gradients(self, objective, params, retain: bool) -> tuple:
        """d(objective)/d(params), None where unused (the distributed executor overrides this)."""
        return torch.autograd.grad(objective, params, retain_graph=retain, allow_unused=True)

    def _segment_lr_scale(self, weights: dict[str, float]) -> dict[str, float]:
        """Slot -> 1 / Lambda_i for the auxiliary losses under ``segment_lr: LAMBDA``."""
        if not self.depths:
            return {}
        gammas = {l.layer: weights.get(l.layer, 1.0) * l.weight for l in self.net.losses}
        lambdas = segment_lambdas(gammas, self.depths, self.schedule.primary)
        return {name: 1.0 / lam for name, lam in lambdas.items() if lam > 0}

    @contextmanager
    def _segment_lr(self, step: Update):
        """Under LAMBDA, divide the slot's segment lr_mults for this one update.

        The rule's ``specs`` dict is edited in place and restored, so wrappers of the
        rule (the solver's non-finite guard) see the same numbers."""
        scale = self.lr_scale.get(step.slot)
        if scale is None:
            yield
            return
        specs = self.updaters[step.slot].specs
        head = self.heads.get(step.slot, set())
        saved = {k: specs[k] for k in step.params if k not in head and k in specs}
        specs.update({k: (lr * scale, d) for k, (lr, d) in saved.items()})
        try:
            yield
        finally:
            specs.update(saved)

    def _update(self, step: Update, grads, it: int, repeat: int) -> None:
        data = {k: self.data[k] for k in step.params}
        mine = {k: grads.pop(k) if k in grads else torch.zeros_like(self.data[k]) for k in step.params}
        with self._segment_lr(step):
            self.updaters[step.slot].apply(data, mine, self.state[step.slot], it, repeat)
