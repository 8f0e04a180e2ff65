"""Cut a training module into segments for per-segment ``torch.compile`` (issue 14).

A compiled graph is one opaque autograd node: a backward restricted to a loss's scope
(``torch.autograd.grad(..., inputs=scope)``) runs all of it or none of it.  So the net is
cut where the schedule's scopes and exits meet: every layer gets a *signature*, the set of
losses whose backward reaches it (only when the schedule has several backward steps:
RELAY, MULTIWAY) and the set of forward steps that compute it (Naive MW-BP's per-loss
forwards), and a segment is a maximal run of layers with one signature.  Each loss's
backward then runs exactly the segments of its scope, and each forward step exactly the
segments it needs.  Every version of a ``stop_at`` blob ends a segment, so the executor's
gating hooks sit on a tensor between two compiled graphs, where autograd sees them.

Each segment is generated as its own module source (``SegmentWriter``: the code generator
with the segment's boundary blobs as ``forward`` arguments) whose layers share the
parameter tensors of the training module.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..check import CheckedNet
from ..graph import Blob, LayerNode
from .codegen import Generated, _Writer, identifier, output_keys
from .module import Compiled, load_generated


@dataclass
class Segment:
    """A run of layers with one signature, and the blobs it reads and hands on."""

    layers: list[LayerNode]
    inputs: list[Blob] = field(default_factory=list)
    outputs: list[Blob] = field(default_factory=list)
    signature: tuple = ()

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.layers]


def signatures(layers: list[LayerNode], reach: dict[str, set], needed: dict) -> dict[str, tuple]:
    """Layer -> (losses whose backward reaches it, forward steps that compute it)."""
    return {n.name: (frozenset(l for l, r in reach.items() if n.name in r),
                     frozenset(k for k, r in needed.items() if n.name in r)) for n in layers}


def _order(net: CheckedNet, layers: list[LayerNode], sig: dict[str, tuple]) -> list[LayerNode]:
    """A topological order of ``layers`` that keeps layers of one signature together
    (Kahn's algorithm; among ready layers, one of the last placed layer's signature first,
    then the net's execution order)."""
    index = {n.name: i for i, n in enumerate(layers)}
    deps = {n.name: {net.graph.producer[b] for b in n.bottoms} & index.keys() for n in layers}
    users: dict[str, list[str]] = {n: [] for n in index}
    for name, ds in deps.items():
        for d in ds:
            users[d].append(name)
    ready = [index[n] for n, ds in deps.items() if not ds]
    heapq.heapify(ready)
    out: list[LayerNode] = []
    while ready:
        last = sig[out[-1].name] if out else None
        same = [i for i in ready if sig[layers[i].name] == last]
        pick = min(same) if same else ready[0]
        ready.remove(pick)
        heapq.heapify(ready)
        node = layers[pick]
        out.append(node)
        for u in users[node.name]:
            deps[u].discard(node.name)
            if not deps[u]:
                heapq.heappush(ready, index[u])
    return out


def plan_segments(net: CheckedNet, layers: list[LayerNode], reach: dict[str, set], needed: dict,
                  stops: set[Blob], outputs: set[Blob]) -> list[Segment]:
    """Cut ``layers`` (the training module's, in execution order) into segments.

    ``reach``: loss -> layers its backward reaches (empty when one backward trains all);
    ``needed``: forward step key -> layers it computes; ``stops``: blobs that must sit
    between segments; ``outputs``: blobs some forward step returns.
    """
    body = [n for n in layers if not (n.impl.is_data and not n.impl.generates)]
    sig = signatures(body, reach, needed)
    segments: list[Segment] = []
    made: set[Blob] = set()               # blobs produced by the open segment
    for node in _order(net, body, sig):
        cut = not segments or sig[node.name] != segments[-1].signature or any(b in made and b in stops
                                                                              for b in node.bottoms)
        if cut:
            segments.append(Segment([], signature=sig[node.name]))
            made = set()
        segments[-1].layers.append(node)
        made |= set(node.tops)
    _boundaries(segments, outputs)
    return segments


def _boundaries(segments: list[Segment], outputs: set[Blob]) -> None:
    """Each segment's inputs (read, made elsewhere) and outputs (read later, or returned)."""
    made_in = {b: i for i, s in enumerate(segments) for n in s.layers for b in n.tops}
    read_later = {b for i, s in enumerate(segments) for n in s.layers for b in n.bottoms
                  if made_in.get(b, i) != i}
    for i, seg in enumerate(segments):
        inside = {b for n in seg.layers for b in n.tops}
        seg.inputs = list(dict.fromkeys(b for n in seg.layers for b in n.bottoms if b not in inside))
        seg.outputs = list(dict.fromkeys(b for n in seg.layers for b in n.tops
                                         if b in read_later or b in outputs))


class SegmentWriter(_Writer):
    """The code generator for one segment: its boundary blobs are ``forward``'s arguments."""

    def __init__(self, net: CheckedNet, segment: Segment, class_name: str, fuse: bool = True):
        super().__init__(net, segment.layers, segment.outputs, class_name, fuse)
        self.segment_inputs = segment.inputs

    def _inputs(self) -> list[Blob]:
        for blob in self.segment_inputs:
            self.vars[blob] = identifier(str(blob).replace("@", "_v"), self.taken)
        return list(self.segment_inputs)


def generate_segment(net: CheckedNet, segment: Segment, index: int) -> Generated:
    """The module source of ``segment`` (positional arguments: ``segment.inputs``)."""
    return SegmentWriter(net, segment, f"Segment{index}").write()


class SegmentedModule(nn.Module):
    """Runs a training module's forward as a chain of (compiled) segment modules.

    ``forward(**inputs)`` computes what one forward step of the schedule returns: the
    segments that step needs, in order, each called on its boundary blobs.  ``INPUTS``
    and ``OUTPUTS`` follow the generated modules, so ``run_module`` can call it.
    """

    def __init__(self, source: nn.Module, segments: list[Segment], modules: list[nn.Module],
                 outputs: list[Blob], run: list[int]):
        super().__init__()
        self.source = [source]                # not a submodule: its parameters are the segments'
        self.segments, self.run = segments, run
        self.parts = nn.ModuleList(modules)
        self.outputs = outputs
        self.INPUTS = source.INPUTS
        self.OUTPUTS = tuple(output_keys(outputs))
        self._drop = _last_uses(segments, run, outputs)

    def forward(self, **inputs) -> dict:
        env: dict[Blob, torch.Tensor] = {}
        for i in self.run:
            seg = self.segments[i]
            args = [env[b] if b in env else inputs[b.name] for b in seg.inputs]
            got = self.parts[i](*args)
            env.update(zip(seg.outputs, got.values()))
            for b in self._drop[i]:           # free what no later segment reads
                env.pop(b, None)
        out = {k: env[b] for k, b in zip(self.OUTPUTS, self.outputs)}
        source = self.source[0]
        for hook in list(source._forward_hooks.values()):   # e.g. the solver's non-finite guard
            hook(source, (), out)
        return out


def _last_uses(segments: list[Segment], run: list[int], outputs: list[Blob]) -> dict[int, list[Blob]]:
    last: dict[Blob, int] = {}
    for i in run:
        for b in segments[i].inputs:
            last[b] = i
    return {i: [b for b, j in last.items() if j == i and b not in outputs] for i in run}


def segment_modules(net: CheckedNet, main: Compiled, segments: list[Segment]) -> list[Compiled]:
    """One module per segment, its layers using ``main``'s parameter and buffer tensors."""
    from ..solve.executor import share_parameters
    out = []
    for i, seg in enumerate(segments):
        gen = generate_segment(net, seg, i)
        module = load_generated(gen, f"{net.source.path}:segment{i}")()
        part = Compiled(module, gen, net)
        module.to(next(iter(main.module.parameters()), torch.empty(0)).device)
        share_parameters(main, part)
        out.append(part)
    return out
