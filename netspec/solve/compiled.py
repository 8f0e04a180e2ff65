"""Compiled training: the schedule executor with every forward run as compiled segments.

``compile: true`` in the solver file (or ``netspec train --compile``) trains with
``torch.compile`` (the inductor backend) in every BP mode.  The training module is cut
into segments where the losses' scopes and exits meet (``netspec.compile.segments``) and
each segment is compiled on its own, so a loss's restricted backward runs only the
compiled backward graphs of the segments in its scope; STANDARD and JOINT, with one
backward, compile the whole module as one segment.

MW-BP's updates land between backward passes over one retained graph, and the later
passes must see the updated weights: the executor writes them through ``.data`` aliases,
which autograd's saved tensors share.  A compiled graph keeps that property only if it
saves the weights themselves, not copies: inductor's ``layout_optimization`` saves
channels_last copies of convolution weights for the backward (docs/benchmarks.md, issue 8),
so every segment is compiled with it off (``SEGMENT_OPTIONS``).
``tests/test_compiled_training.py`` checks compiled against eager for MULTIWAY (all four
variants) and RELAY, and that the check catches a backward that sees pre-update weights.
"""
from __future__ import annotations

import torch
from torch._functorch.partitioners import default_partition
from torch._inductor.custom_graph_pass import CustomPartitionerFn

from ..compile.segments import SegmentedModule, plan_segments, segment_modules
from ..schedule import Backward
from .executor import loss_tops

# inductor options of every segment; layout_optimization off keeps MW-BP exact (see above)
SEGMENT_OPTIONS = {"layout_optimization": False}


class SavingPartitioner(CustomPartitionerFn):
    """AOTAutograd's default partition instead of inductor's min-cut rematerialisation.

    The min-cut partitioner recomputes cheap pointwise results (BatchNorm's normalisation,
    ReLU masks) in the backward rather than saving them, assuming one backward per forward.
    Under RELAY and MULTIWAY a segment's backward runs once per loss whose scope holds it
    (the first trunk segment of a net with 4 exits: 5 times), so recomputing costs more than
    saving: measured on ResNet-14 MULTIWAY, 581 ms/iteration against 762 (docs/benchmarks.md,
    section 8), with bit-identical results.
    """

    def __call__(self, gm, joint_inputs, **kwargs):
        kwargs.pop("compiler", None)
        return default_partition(gm, joint_inputs, **kwargs)

    def uuid(self) -> str:            # part of inductor's cache key
        return "netspec.solve.compiled.SavingPartitioner/1"


class CompiledSegments:
    """Mixin over an executor class: forwards run as torch.compile'd segments.

    Parameters, optimizer state and the update rules stay the executor's; only the
    forward changes, so every BP mode's backward and update steps are untouched.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.segments, self.runners = [], {}
        self._build_segments()

    def _build_segments(self) -> None:
        backward = [s for s in self.schedule.steps if isinstance(s, Backward)]
        # one backward trains everything (STANDARD, JOINT): no cut needed between losses
        reach = {l: set(r) for l, r in self.schedule.reach.items()} if len(backward) > 1 else {}
        needed = {key: set(c.generated.layers) for key, c in self.modules.items()}
        outputs = {key: list(dict.fromkeys(loss_tops(self.net, sorted(key)) + self.stops))
                   for key in self.modules}
        layers = [self.net.graph.layer(n) for n in self.main.generated.layers]
        self.segments = plan_segments(self.net, layers, reach, needed, set(self.stops),
                                      {b for outs in outputs.values() for b in outs})
        parts = segment_modules(self.net, self.main, self.segments)
        options = dict(SEGMENT_OPTIONS)
        if len(backward) > 1:           # a segment's backward may run several times (see above)
            options["custom_partitioner_fn"] = SavingPartitioner()
        self.compiled_parts = [_Retainable(torch.compile(p.module, options=dict(options))) for p in parts]
        for key, c in self.modules.items():
            run = [i for i, s in enumerate(self.segments) if set(s.names) <= needed[key]]
            covered = {n for i in run for n in self.segments[i].names}
            missing = needed[key] - covered - {n.name for n in layers if n.impl.is_data and not n.impl.generates}
            if missing:          # cannot happen: each segment is homogeneous in its forward steps
                raise RuntimeError(f"segments do not cover layers {sorted(missing)}")
            self.runners[id(c.module)] = SegmentedModule(c.module, self.segments, self.compiled_parts,
                                                         outputs[key], run)

    def forward(self, module, batch: dict) -> dict:
        if getattr(self, "ddp", None) is not None and module is self.main.module:
            return super().forward(module, batch)       # DDP (STANDARD/JOINT): eager, see README
        return super().forward(self.runners.get(id(module), module), batch)

    def _gradients(self, objective, params, retain: bool) -> tuple:
        # the compiled backward checks donated buffers when it runs (see _Retainable)
        with torch._functorch.config.patch(donated_buffer=False):
            return super()._gradients(objective, params, retain)

    def describe(self) -> str:
        """One line per segment: its layers and the losses whose backward runs it."""
        lines = []
        for i, s in enumerate(self.segments):
            losses = ", ".join(sorted(s.signature[0])) or "-"
            lines.append(f"  segment {i}: {len(s.layers)} layer(s) {s.names[0]}..{s.names[-1]}; "
                         f"backward of: {losses}")
        return "\n".join(lines)


class _Retainable(torch.nn.Module):
    """A compiled segment whose backward may run with ``retain_graph`` (RELAY, MULTIWAY run
    several backward passes over one forward): AOTAutograd's donated buffers, which let a
    compiled backward reuse its saved tensors' memory, forbid that, so they are off while
    the segment compiles (compilation happens at its first call)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, *args):
        with torch._functorch.config.patch(donated_buffer=False):
            return self.inner(*args)


_CLASSES: dict[type, type] = {}


def compiled_executor_class(base):
    """``base`` (an Executor class, or a partial of one) with compiled segments mixed in."""
    func = getattr(base, "func", None)
    cls = func if func is not None else base
    if cls not in _CLASSES:
        _CLASSES[cls] = type(f"Compiled{cls.__name__}", (CompiledSegments, cls), {})
    if func is None:
        return _CLASSES[cls]
    from functools import partial
    return partial(_CLASSES[cls], *base.args, **base.keywords)


def executor_class(base, compile: bool):
    """The executor class the solver builds: ``base``, compiled when ``compile`` is set."""
    return compiled_executor_class(base) if compile else base


__all__ = ["CompiledSegments", "SEGMENT_OPTIONS", "compiled_executor_class", "executor_class"]
