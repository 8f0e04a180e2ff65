"""The backward schedule: a plain, printable list of steps that the solver executes.

One schedule per BP mode (solver field ``bp_mode``), compiled from the net's
losses and their scopes:

* STANDARD: forward, one backward of the primary loss over all its ancestors,
  one update.  Branches that feed only other losses are pruned from the module.
* JOINT: forward, one backward of sum_i w_i * loss_i over every ancestor
  (``gradient_scope`` is ignored: this is GoogLeNet/DSN/CNDS training), update.
* RELAY: forward, then per loss a backward restricted to its scope (its
  ``stop_at`` blobs block the gradient), accumulating; then one update.  Each
  parameter receives sum_i w_i * d(loss_i)/dp over the losses whose scope holds
  it.  Cost: one forward plus one backward per loss over that loss's scope.
* MULTIWAY (MW-BP, Algorithm 1): one shared forward, then per loss (shallow to
  deep by default) a backward over every layer from the input to that loss
  followed by an update of exactly those parameters, with optimizer state kept
  per (loss, parameter).  Later backward passes see the updated weights and the
  shared forward's activations.  ``multiway_param { shared_forward: false }``
  forwards again before each backward (Naive MW-BP); ``order: DEEP_TO_SHALLOW``
  reverses the order.  A gradient_scope restricts a MULTIWAY backward only when
  its ``modes`` name MULTIWAY (the MW-BP/Relay hybrid); by default scopes bind
  RELAY alone.

Each loss's *head* (its own branch, ``check.scopes.exit_heads``) is listed on its
backward step: MW-BP scales the other (segment) gradients by gamma, not the head's.

Nothing else in netspec special-cases a mode: the solver runs these steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .check import CheckedNet, Loss
from .check.scopes import exit_heads, gradient_reach, learnable
from .diagnostics import Diagnostic, NetspecError
from .proto import caffe_pb2

MODES = tuple(caffe_pb2.SolverParameter.BPMode.keys())


@dataclass(frozen=True)
class Forward:
    """Run the module for the tops of ``losses`` (and everything they need)."""

    losses: tuple

    def __str__(self) -> str:
        return f"forward({', '.join(self.losses)})"


@dataclass(frozen=True)
class Backward:
    """Gradient of the weighted ``losses`` into ``params``; ``stop_at`` blobs block it.

    ``head`` lists the parameters of the loss's own branch (``check.scopes.exit_heads``):
    under MULTIWAY the loss weight gamma scales the other (segment) gradients and,
    unless ``scale_head_gradients`` is set, not these.
    """

    losses: tuple
    params: tuple
    stop_at: tuple = ()
    head: tuple = ()
    accumulate: bool = False

    def __str__(self) -> str:
        stop = f", stop_at={list(self.stop_at)}" if self.stop_at else ""
        acc = ", accumulate" if self.accumulate else ""
        return (f"backward({' + '.join(f'w[{l}]*{l}' for l in self.losses)}, "
                f"params={len(self.params)}{stop}{acc})")


@dataclass(frozen=True)
class Update:
    """Apply the solver's update rule to ``params`` with optimizer state ``slot``."""

    params: tuple
    slot: str = "shared"

    def __str__(self) -> str:
        return f"update(params={len(self.params)}, state={self.slot})"


@dataclass
class Schedule:
    """The steps of one training iteration, and what the solver needs to run them."""

    mode: str
    steps: list
    losses: list[str]                                 # every loss the schedule trains, in order
    primary: str
    params: dict[str, tuple] = field(default_factory=dict)     # loss -> params its gradient reaches
    variant: str = ""
    reach: dict[str, set] = field(default_factory=dict)        # loss -> layers its gradient reaches
    scoped: tuple = ()                                         # losses whose gradient_scope applies
    segment_lr: str = "NONE"                                   # MULTIWAY: multiway_param.segment_lr

    def outputs(self) -> set[str]:
        """The losses whose tops the training module must compute."""
        return {l for s in self.steps if isinstance(s, Forward) for l in s.losses}

    def __str__(self) -> str:
        title = f"{self.mode}{f' ({self.variant})' if self.variant else ''} schedule, primary loss " \
                f"'{self.primary}':"
        return "\n".join([title] + [f"  {i + 1}. {s}" for i, s in enumerate(self.steps)])


def layer_params(net: CheckedNet, layers) -> tuple:
    """The learnable blobs (as "layer/i") of ``layers``, owners only for shared blobs, in net order."""
    keep = set(layers)
    out = []
    for node in net.graph.layers():
        if node.name not in keep or not learnable(node):
            continue
        for i in range(len(node.impl.blobs)):
            key = f"{node.name}/{i}"
            if node.impl.learnable(i):
                out.append(net.shared.get(key) and "/".join(map(str, net.shared[key])) or key)
    return tuple(dict.fromkeys(out))


def primary_loss(net: CheckedNet, name: str = "") -> Loss:
    """The loss the solver names, or else the deepest loss (longest path from the inputs)."""
    if not net.losses:
        raise NetspecError([Diagnostic("E0600", f"net '{net.name}' has no loss to train",
                                       net.source.span(("name",)),
                                       help=["give a layer a nonzero loss_weight, or use a *Loss layer"])])
    if name:
        for loss in net.losses:
            if loss.layer == name or any(t.name == name for t, _ in loss.tops):
                return loss
        raise NetspecError([Diagnostic("E0600", f"primary_loss '{name}' is not a loss of net "
                                       f"'{net.name}'", help=["losses: " + ", ".join(l.layer for l in net.losses)])])
    return max(net.losses, key=lambda l: (l.depth, net.graph.layer(l.layer).index))


def full_reach(net: CheckedNet, loss: Loss) -> set[str]:
    """Every layer the loss's gradient reaches when its gradient_scope is ignored."""
    if loss.reach:
        return loss.reach
    node = net.graph.layer(loss.layer)
    return gradient_reach(net.graph, node, set(), 0, net.source.net.force_backward)


def build_schedule(net: CheckedNet, solver=None) -> Schedule:
    """Compile the schedule for ``net`` under the solver's ``bp_mode`` (STANDARD when None)."""
    mode = caffe_pb2.SolverParameter.BPMode.Name(solver.bp_mode) if solver is not None else "STANDARD"
    primary = primary_loss(net, solver.primary_loss if solver is not None else "")
    return _BUILDERS[mode](net, solver, primary)


def _standard(net, solver, primary) -> Schedule:
    params = layer_params(net, full_reach(net, primary))
    steps = [Forward((primary.layer,)), Backward((primary.layer,), params), Update(params)]
    return Schedule("STANDARD", steps, [primary.layer], primary.layer, {primary.layer: params},
                    reach={primary.layer: full_reach(net, primary)})


def _joint(net, solver, primary) -> Schedule:
    names = tuple(l.layer for l in net.losses)
    reach = {l.layer: full_reach(net, l) for l in net.losses}
    params = layer_params(net, set().union(*reach.values()))
    per = {name: layer_params(net, layers) for name, layers in reach.items()}
    steps = [Forward(names), Backward(names, params), Update(params)]
    return Schedule("JOINT", steps, list(names), primary.layer, per, reach=reach)


def _relay(net, solver, primary) -> Schedule:
    names = tuple(l.layer for l in net.losses)
    reach = {l.layer: l.scope_for("RELAY") for l in net.losses}
    per = {name: layer_params(net, layers) for name, layers in reach.items()}
    steps = [Forward(names)]
    steps += [Backward((l.layer,), per[l.layer], l.stops_for("RELAY"), accumulate=True) for l in net.losses]
    steps.append(Update(layer_params(net, set().union(*reach.values()))))
    return Schedule("RELAY", steps, list(names), primary.layer, per, reach=reach,
                    scoped=tuple(l.layer for l in net.losses if l.binds("RELAY")))


def segment_lr_rule(mp) -> str:
    """multiway_param's segment lr rule by name (``segment_lr_scaling: true`` is LOSS_COUNT)."""
    rule = caffe_pb2.MultiwayParameter.SegmentLr.Name(mp.segment_lr)
    return "LOSS_COUNT" if mp.segment_lr_scaling and rule == "NONE" else rule


def _multiway(net, solver, primary) -> Schedule:
    mp = solver.multiway_param if solver is not None else caffe_pb2.MultiwayParameter()
    order = sorted(net.losses, key=lambda l: (l.depth, net.graph.layer(l.layer).index))
    if mp.order == caffe_pb2.MultiwayParameter.DEEP_TO_SHALLOW:
        order.reverse()
    reach = {l.layer: l.scope_for("MULTIWAY") for l in order}
    per = {name: layer_params(net, layers) for name, layers in reach.items()}
    heads = exit_heads(net.graph, net.losses)
    names = tuple(l.layer for l in order)
    steps = [] if not mp.shared_forward else [Forward(names)]
    for loss in order:
        if not mp.shared_forward:
            steps.append(Forward((loss.layer,)))
        mine = set(layer_params(net, heads[loss.layer] & reach[loss.layer]))
        head = tuple(p for p in per[loss.layer] if p in mine)
        steps.append(Backward((loss.layer,), per[loss.layer], loss.stops_for("MULTIWAY"), head))
        steps.append(Update(per[loss.layer], slot=loss.layer))
    variant = ("naive " if not mp.shared_forward else "") + \
        ("reverse " if mp.order == caffe_pb2.MultiwayParameter.DEEP_TO_SHALLOW else "")
    scoped = tuple(l.layer for l in order if l.binds("MULTIWAY"))
    variant += "MW-BP/Relay hybrid" if scoped else ""
    return Schedule("MULTIWAY", steps, list(names), primary.layer, per, variant.strip(), reach=reach,
                    scoped=scoped, segment_lr=segment_lr_rule(mp))


_BUILDERS = {"STANDARD": _standard, "JOINT": _joint, "RELAY": _relay, "MULTIWAY": _multiway}


def gradient_sources(net: CheckedNet, schedule: Schedule) -> dict[str, list[str]]:
    """Layer name -> the losses whose gradient reaches it under ``schedule`` (for drawing)."""
    reach: dict[str, list[str]] = {n.name: [] for n in net.graph.layers()}
    for step in schedule.steps:
        if not isinstance(step, Backward):
            continue
        for loss in step.losses:
            layers = schedule.reach.get(loss)
            if layers is None:            # a hand-built Schedule: every ancestor
                layers = full_reach(net, next(l for l in net.losses if l.layer == loss))
            for layer in layers:
                if loss not in reach[layer]:
                    reach[layer].append(loss)
    return reach


def scope_notes(net: CheckedNet, schedule: Schedule) -> dict[str, str]:
    """Loss layer -> how its gradient_scope stands under the schedule's mode (losses with a scope)."""
    out = {}
    for loss in net.losses:
        if not loss.has_scope:
            continue
        parts = ([f"stop_at {', '.join(loss.stop_at)}"] if loss.stop_at else []) + \
            ([f"max_depth {loss.max_depth}"] if loss.max_depth else [])
        state = "applies" if loss.layer in schedule.scoped else "ignored"
        out[loss.layer] = f"{'; '.join(parts)} (binds {', '.join(loss.modes)}: {state} under {schedule.mode})"
    return out
