"""Check pass: losses and their gradient scopes.

A loss is any layer with a nonzero loss_weight on a top (``*Loss`` layers
default to weight 1 on top 0).  Its *scope* is the set of layers its gradient
reaches: walk backwards from the loss over bottoms the layer propagates into
(``propagate_down``, label inputs and non-differentiable layers stop it), and
never into a blob named by ``gradient_scope { stop_at }``.

``stop_at: "b"`` blocks *every version* of blob ``b``: when ``b`` is rewritten
in place (``conv3`` -> ReLU ``relu3`` with top ``conv3``), the loss sends no
gradient into any of them, so neither ``relu3`` nor ``conv3`` nor anything
reached only through them receives it.

``gradient_scope { max_depth: N }`` keeps the N consecutive weight layers
nearest the loss: along each backward path, the k-th layer with learnable
parameters is kept while k <= N, and the N-th sends no gradient into its
bottoms (distance is the minimum over paths).

A scope binds only the BP modes its ``modes`` list names, RELAY when it names none:
MULTIWAY on a net carrying Relay scopes is the paper's MW-BP (every layer from the
input to the loss), and ``modes: RELAY modes: MULTIWAY`` asks for the hybrid.
JOINT and STANDARD never apply a scope.

A loss's *head* is its own branch: the layers whose only downstream loss is this
one (an exit's pooling and classifier).  The trunk depth where the exit attaches is
the longest weight-layer path to a non-head ancestor (MW-BP's L_i).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from ..diagnostics import Diagnostics, did_you_mean
from ..graph import Blob, LayerNode, NetGraph
from ..proto import caffe_pb2

SCOPED_MODES = ("RELAY", "MULTIWAY")      # the modes a gradient_scope can bind
DEFAULT_SCOPE_MODES = ("RELAY",)


@dataclass
class Loss:
    """One loss layer: its weighted tops and the layers its gradient reaches."""

    layer: str
    tops: list[tuple[Blob, float]]          # (top blob, loss_weight) for nonzero weights
    stop_at: list[str] = field(default_factory=list)
    max_depth: int = 0
    scope: set[str] = field(default_factory=set)
    depth: int = 0                          # longest path from the inputs, in layers
    modes: tuple = ()                       # BP modes the scope binds (none without a scope)
    reach: set[str] = field(default_factory=set)     # layers reached with the scope ignored

    @property
    def weight(self) -> float:
        return sum(w for _, w in self.tops)

    @property
    def has_scope(self) -> bool:
        return bool(self.stop_at or self.max_depth)

    def binds(self, mode: str) -> bool:
        """Whether this loss's gradient_scope applies under BP mode ``mode``."""
        return self.has_scope and mode in self.modes

    def scope_for(self, mode: str) -> set[str]:
        """The layers this loss's gradient reaches under ``mode``."""
        return self.scope if self.binds(mode) else self.reach

    def stops_for(self, mode: str) -> tuple:
        return tuple(self.stop_at) if self.binds(mode) else ()


def learnable(node: LayerNode) -> bool:
    """Whether the layer has a blob that training updates (lr_mult != 0)."""
    impl = node.impl
    if not impl.blobs:
        return False
    return any(impl.learnable(i) for i in range(len(impl.blobs)))


def find_losses(graph: NetGraph, src, diags: Diagnostics) -> list[Loss]:
    """Every loss of the net with its scope, checked; problems go to ``diags``."""
    depth = graph.depth()
    losses = []
    for node in graph.layers():
        has_scope = node.lp.HasField("gradient_scope")
        if not node.is_loss:
            if has_scope:
                diags.error("E0402", f"layer '{node.name}' has a gradient_scope but is not a loss",
                            src.name_span(node.path + ("gradient_scope",)),
                            help=["give one of its tops a nonzero loss_weight, or remove the scope"])
            continue
        gs = node.lp.gradient_scope
        loss = Loss(node.name, [(t, w) for t, w in zip(node.tops, node.loss_weights) if w != 0],
                    list(gs.stop_at), gs.max_depth, depth=depth[node.name])
        _check_stop_at(graph, node, loss, src, diags)
        loss.modes = _scope_modes(node, gs, src, diags) if loss.has_scope else ()
        loss.scope = gradient_reach(graph, node, set(loss.stop_at), loss.max_depth,
                                    src.net.force_backward)
        loss.reach = gradient_reach(graph, node, set(), 0, src.net.force_backward)
        if not any(learnable(graph.layer(n)) for n in loss.scope):
            report = diags.error if has_scope else diags.warning
            code = "E0401" if has_scope else "W0300"
            report(code, f"the gradient of loss '{node.name}' reaches no learnable parameter",
                   src.span(node.path + (("gradient_scope",) if has_scope else ("name",))),
                   help=["widen its gradient_scope" if has_scope else
                         "nothing below this loss has lr_mult != 0 parameters"])
        losses.append(loss)
    return losses


def _scope_modes(node: LayerNode, gs, src, diags) -> tuple:
    names = [caffe_pb2.SolverParameter.BPMode.Name(m) for m in gs.modes]
    for i, name in enumerate(names):
        if name not in SCOPED_MODES:
            diags.error("E0403", f"gradient_scope of loss '{node.name}' names mode {name}, which "
                        "never applies a scope", src.span(node.path + ("gradient_scope", "modes", i)),
                        help=["JOINT and STANDARD train every ancestor of every loss; "
                              "scopes bind RELAY and MULTIWAY"])
    return tuple(dict.fromkeys(n for n in names if n in SCOPED_MODES)) or DEFAULT_SCOPE_MODES


def unused_scope_warnings(graph: NetGraph, losses: list, mode: str, src, diags: Diagnostics) -> None:
    """Warn (W0301) about every gradient_scope that BP mode ``mode`` does not apply."""
    for loss in losses:
        if loss.has_scope and not loss.binds(mode):
            node = graph.layer(loss.layer)
            binds = " and ".join(loss.modes)
            diags.warning("W0301", f"the gradient_scope of loss '{loss.layer}' binds {binds}; "
                          f"bp_mode {mode} ignores it", src.name_span(node.path + ("gradient_scope",)),
                          help=[f"under {mode} this loss trains every layer from the input to it"] +
                          (["add `modes: MULTIWAY` to the scope for the MW-BP/Relay hybrid"]
                           if mode == "MULTIWAY" else []))


def exit_heads(graph: NetGraph, losses: list) -> dict[str, set[str]]:
    """Loss layer -> its head: the loss and the layers whose only downstream loss is it."""
    names = {l.layer for l in losses}
    feeds: dict[str, set[str]] = {}
    for name in names:
        for layer in graph.ancestors(name) | {name}:
            feeds.setdefault(layer, set()).add(name)
    return {name: {layer for layer, fed in feeds.items() if fed == {name}} for name in names}


def trunk_depths(graph: NetGraph, losses: list) -> dict[str, int]:
    """Loss layer -> weight layers on the longest path from the inputs to where its head attaches.

    MW-BP's L_i (Eq. 5; the public code's ``n * p_i + 1``): the exit's own branch is
    not counted, so exits after conv3, conv6 and conv9 sit at depths 3, 6 and 9.
    """
    depth = graph.depth(learnable)
    heads = exit_heads(graph, losses)
    return {l.layer: max((depth[a] for a in graph.ancestors(l.layer) if a not in heads[l.layer]),
                         default=0) for l in losses}


def _check_stop_at(graph: NetGraph, node: LayerNode, loss: Loss, src, diags) -> None:
    ancestors = graph.ancestors(node.name) | {node.name}
    upstream = {b.name for a in ancestors for b in graph.layer(a).bottoms}
    everywhere = {b.name for n in graph.layers() for b in n.tops}
    for i, name in enumerate(loss.stop_at):
        if name in upstream:
            continue
        why = ("it is not an ancestor of this loss" if name in everywhere
               else "no layer produces a blob of that name")
        diags.error("E0400", f"stop_at blob '{name}' of loss '{node.name}': {why}",
                    src.span(node.path + ("gradient_scope", "stop_at", i)),
                    help=did_you_mean(name, upstream) or
                    ["name a blob on a path from the inputs to this loss"])


def gradient_reach(graph: NetGraph, loss: LayerNode, stop: set[str], max_depth: int,
                   force_backward: bool = False) -> set[str]:
    """Layers that receive this loss's gradient (the loss layer itself included).

    ``force_backward`` overrides ``propagate_down: false``, as in Caffe.
    """
    start = 1 if learnable(loss) else 0
    best = {loss.name: start}
    heap = [(start, loss.index, loss.name)]
    while heap:
        d, _, name = heapq.heappop(heap)
        if d > best[name]:
            continue
        node = graph.layer(name)
        if not node.impl.differentiable or (max_depth and d >= max_depth and learnable(node)):
            continue                    # the N-th weight layer sends nothing further down
        for producer, blob, i in graph.in_edges(name):
            blocked = not (node.propagate_down[i] or force_backward)
            if blocked or i in node.impl.no_grad_bottoms or blob.name in stop:
                continue
            prod = graph.layer(producer)
            dp = d + (1 if learnable(prod) else 0)
            if max_depth and dp > max_depth:
                continue
            if dp < best.get(producer, 1 << 30):
                best[producer] = dp
                heapq.heappush(heap, (dp, prod.index, producer))
    return set(best)


def check_unreached(graph: NetGraph, losses: list[Loss], src, diags: Diagnostics) -> None:
    """Warn about layers with learnable parameters that no loss's gradient reaches."""
    reached = set().union(*(l.scope for l in losses)) if losses else set()
    for node in graph.layers():
        if learnable(node) and node.name not in reached:
            diags.warning("W0300", f"no loss reaches layer '{node.name}'; its parameters will "
                          "not train", src.span(node.path + ("name",)),
                          help=["connect it to a loss, or set its lr_mult to 0"])
