"""Stage 3: lower a checked NetParameter into a :class:`NetGraph` for one net state.

Follows Caffe's Net::Init: include/exclude NetStateRules, legacy ``input:``
declarations become an Input layer, in-place tops create new blob versions,
loss weights default as in Caffe, and each layer's type resolves through the
layer registry.  Bottoms that name a blob produced *later* in the file are
accepted (netspec allows any layer order), which is how cycles can arise; the
graph checks report them.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

from .dialects import fork_type_note
from .diagnostics import Diagnostics, did_you_mean
from .graph import Blob, LayerNode, NetGraph
from .layers import REGISTRY, LayerError, known_types
from .proto import caffe_pb2
from .schema import SourceMap
from .upgrade import layer_entries


@dataclass
class NetState:
    """Caffe's NetState: the phase, level and stages a net is instantiated for."""

    phase: int = caffe_pb2.TRAIN
    level: int = 0
    stages: tuple = ()

    @classmethod
    def of(cls, phase: str | int = "TRAIN", level: int = 0, stages=()) -> "NetState":
        if isinstance(phase, str):
            phase = caffe_pb2.Phase.Value(phase.upper())
        return cls(phase, level, tuple(stages))

    @property
    def phase_name(self) -> str:
        return caffe_pb2.Phase.Name(self.phase)


@dataclass
class NetSource:
    """A NetParameter with the map back to its text (``prefix``: its path in that map)."""

    net: object
    smap: SourceMap
    prefix: tuple = ()
    path: str = "<net>"

    def span(self, path: tuple):
        return self.smap.span(self.prefix + path)

    def name_span(self, path: tuple):
        return self.smap.name_span(self.prefix + path)


def rule_met(rule, state: NetState) -> bool:
    """Caffe's Net::StateMeetsRule."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    if any(s not in state.stages for s in rule.stage):
        return False
    return not any(s in state.stages for s in rule.not_stage)


def layer_active(lp, state: NetState) -> bool:
    """Caffe's filtering: include rules select, otherwise exclude rules reject."""
    if lp.include:
        return any(rule_met(r, state) for r in lp.include)
    return not any(rule_met(r, state) for r in lp.exclude)


def lower(src: NetSource, state: NetState, diags: Diagnostics) -> NetGraph:
    """Build the graph of the layers active in ``state``; problems go to ``diags``."""
    graph = NetGraph()
    entries = [(lp, path) for lp, path in layer_entries(src, diags) if _active(src, lp, path, state, diags)]
    nodes, names = [], {}
    for index, (lp, path) in enumerate(entries):
        key = lp.name
        if lp.name in names:
            key = f"{lp.name}#{sum(1 for n in names if n.split('#')[0] == lp.name) + 1}"
            diags.warning("W0303", f"two layers are named '{lp.name}'; netspec calls this one '{key}'",
                          src.span(path + ("name",)),
                          notes=[f"the first is at {src.span(names[lp.name] + ('name',))}"],
                          help=["Caffe accepts this, but weights are copied by layer name: "
                                "give the layers distinct names"])
        names[key] = path
        node = _make_node(src, lp, path, index, state, diags, key)
        if node is not None:
            graph.add_layer(node)
            nodes.append(node)
    _Wiring(src, graph, diags).wire(nodes)
    return graph


def _active(src: NetSource, lp, path, state: NetState, diags: Diagnostics) -> bool:
    if lp.include and lp.exclude:
        diags.error("E0501", f"layer '{lp.name}' has both include and exclude rules",
                    src.name_span(path + ("exclude", 0)), help=["Caffe accepts one kind of rule per layer"])
    return layer_active(lp, state)


def _make_node(src: NetSource, lp, path, index, state, diags, key: str) -> LayerNode | None:
    cls = REGISTRY.get(lp.type)
    if cls is None:
        diags.error("E0304", f"unknown layer type '{lp.type}'", src.span(path + ("type",)),
                    help=did_you_mean(lp.type, known_types()),
                    notes=[n for n in (fork_type_note(lp.type),) if n] + ["known types: " + ", ".join(known_types())])
        return None
    try:
        impl = cls(lp, state.phase)
        impl.net_path = src.path          # data layers also look for their files beside the net
    except LayerError as e:
        diags.error(e.code, f"layer '{lp.name}' ({lp.type}): {e.message}", src.span(path + e.field),
                    help=e.help, notes=e.notes)
        return None
    for w in impl.warnings:
        diags.warning(w.code, f"layer '{lp.name}' ({lp.type}): {w.message}", src.span(path + w.field),
                      help=w.help, notes=w.notes)
    if not _arity_ok(src, cls, lp, path, diags):
        return None
    node = LayerNode(key, lp.type, index, lp, impl, src, path)
    node.loss_weights = _loss_weights(src, cls, lp, path, diags)
    node.propagate_down = _propagate_down(src, lp, path, diags)
    return node


def _arity_ok(src, cls, lp, path, diags) -> bool:
    ok = True
    for what, (lo, hi), got in (("bottom", cls.bottoms, len(lp.bottom)), ("top", cls.tops, len(lp.top))):
        if got < lo or (hi is not None and got > hi):
            want = f"exactly {lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
            diags.error("E0305", f"{lp.type} layer '{lp.name}' takes {want} {what}"
                        f"{'s' if (hi or lo) != 1 else ''}, but has {got}", src.span(path + ("name",)),
                        help=[f"check the layer's `{what}:` lines"])
            ok = False
    return ok


@functools.lru_cache(maxsize=None)
def _shared(kind: str, values: tuple) -> tuple:
    # most layers have the same defaults: one tuple for all of them, not a list per layer
    # (``kind`` keeps (True,) and (1.0,), equal as keys, apart)
    return values


def _loss_weights(src, cls, lp, path, diags) -> tuple[float, ...]:
    n = len(lp.top)
    if lp.loss_weight:
        if len(lp.loss_weight) != n:
            diags.error("E0307", f"layer '{lp.name}' gives {len(lp.loss_weight)} loss_weight values "
                        f"for {n} tops", src.span(path + ("loss_weight", 0)),
                        help=["give loss_weight once per top, or not at all"])
            return _shared("loss_weight", (0.0,) * n)
        return tuple(lp.loss_weight)
    return _shared("loss_weight", tuple(1.0 if (cls.is_loss and i == 0) else 0.0 for i in range(n)))


def _propagate_down(src, lp, path, diags) -> tuple[bool, ...]:
    n = len(lp.bottom)
    if lp.propagate_down and len(lp.propagate_down) != n:
        diags.error("E0307", f"layer '{lp.name}' gives {len(lp.propagate_down)} propagate_down values "
                    f"for {n} bottoms", src.span(path + ("propagate_down", 0)),
                    help=["give propagate_down once per bottom, or not at all"])
        return _shared("propagate_down", (True,) * n)
    return tuple(lp.propagate_down) if lp.propagate_down else _shared("propagate_down", (True,) * n)


@dataclass
class _Wiring:
    """Resolves bottoms and tops to blob versions, in file order."""

    src: NetSource
    graph: NetGraph
    diags: Diagnostics
    latest: dict = field(default_factory=dict)      # blob name -> latest Blob produced so far

    def wire(self, nodes: list[LayerNode]) -> None:
        first_writer = self._first_writers(nodes)
        pending = []
        for node in nodes:
            for i, name in enumerate(node.lp.bottom):
                blob = self.latest.get(name)
                if blob is None and name in first_writer and first_writer[name] is not node:
                    pending.append((node, i, name))      # forward reference: resolved below
                    node.bottoms.append(Blob(name, 0))
                    continue
                if blob is None:
                    self._unknown_bottom(node, i, name)
                    blob = Blob(name, -1)
                node.bottoms.append(blob)
                if blob.version >= 0:
                    self.graph.connect(blob, node.name, i)
            self._tops(node)
        for node, i, name in pending:
            self.graph.connect(Blob(name, 0), node.name, i)

    def _first_writers(self, nodes) -> dict:
        first = {}
        for node in nodes:
            for t in node.lp.top:
                if t not in node.lp.bottom:
                    first.setdefault(t, node)
        return first

    def _tops(self, node: LayerNode) -> None:
        for j, name in enumerate(node.lp.top):
            prev = self.latest.get(name)
            in_place = name in node.lp.bottom
            if prev is not None and not in_place:
                other = self.graph.producer[prev]
                self.diags.error("E0301", f"top '{name}' of layer '{node.name}' is already produced by "
                                 f"layer '{other}'", self.src.span(node.path + ("top", j)),
                                 help=["rename one of the tops; only in-place layers "
                                       "(top equal to a bottom) may rewrite a blob"],
                                 notes=[f"'{other}' is at {self.graph.layer(other).span}"])
            blob = Blob(name, prev.version + 1 if prev is not None else 0)
            self.graph.producer[blob] = node.name
            self.latest[name] = blob
            node.tops.append(blob)

    def _unknown_bottom(self, node: LayerNode, i: int, name: str) -> None:
        known = sorted(self.latest) or ["(none yet)"]
        self.diags.error("E0300", f"layer '{node.name}' reads unknown bottom blob '{name}'",
                         self.src.span(node.path + ("bottom", i)),
                         help=did_you_mean(name, self.latest) or [
                             "a bottom must be the top of some layer or a net input"],
                         notes=["blobs defined before this layer: " + ", ".join(known[:15])
                                + (" ..." if len(known) > 15 else "")])
