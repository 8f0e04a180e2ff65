"""The trunk of a net: its primary path, weight-layer depths and the points where exits can hang.

Deep-supervision tools (``netspec probe``, ``netspec add-exits``) speak of "the k-th weight
layer" and "an exit after layer k".  Both need the same reading of a net:

* the *prediction* is the primary loss's first bottom (the scores a ``*Loss`` compares
  with the label), and the *classifier* the last weight layer producing it;
* a *weight layer* has a learnable weight of two or more dimensions (Convolution,
  InnerProduct, Deconvolution, Embed, ...), as the papers count layers; BatchNorm, Scale,
  Bias and PReLU carry per-channel vectors and are not counted;
* a layer's *weight depth* is the largest number of weight layers on a path from the
  inputs to it, itself included;
* the *primary path* is a longest such path to the classifier; its weight layers below
  the classifier are the trunk, L of them (MW-BP's L, "the final classifier not counted");
* an *attachment point* is a blob every path from the inputs to the prediction passes
  through (a dominator: a plain layer's output, an Inception concat, a residual sum after
  its ReLU), taken in its last in-place version, so an exit hung there sees the whole
  trunk below it.  Points inside an Inception module or a residual branch are not.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from ..check import CheckedNet, learnable
from ..graph import Blob
from ..schedule import primary_loss


PER_CHANNEL = {"BatchNorm", "Scale", "Bias", "PReLU"}


@dataclass(frozen=True)
class Point:
    """An attachment point: blob ``blob`` as written by layer ``writer`` at weight depth ``depth``."""

    blob: str
    writer: str                 # the last layer (in-place ones included) writing the blob
    depth: int                  # weight layers on the longest path from the inputs, inclusive


@dataclass
class Trunk:
    """The primary path of a net and its attachment points (see the module docstring)."""

    net: CheckedNet
    primary: str                        # the primary loss layer
    prediction: Blob                    # its first bottom
    classifier: str                     # the last weight layer producing the prediction
    path: list[str]                     # weight layers of the primary path below the classifier
    depth: dict[str, int]               # layer -> weight depth (layers feeding the prediction)
    points: list[Point] = field(default_factory=list)

    @property
    def L(self) -> int:
        """The trunk's weight layers along the primary path (the classifier not counted)."""
        return len(self.path)

    def point_at_or_after(self, k: int) -> Point | None:
        """The first attachment point (in net order) at weight depth >= k, if any."""
        return next((p for p in self.points if p.depth >= k), None)

    def point_of(self, name: str) -> Point | None:
        """The attachment point of a blob or of the layer writing it, if it is one."""
        for p in self.points:
            if name == p.blob or name == p.writer or name in self._writers(p.blob):
                return p
        return None

    def _writers(self, blob: str) -> list[str]:
        return [n.name for n in self.net.graph.layers() if any(t.name == blob for t in n.tops)]


def trunk_of(net: CheckedNet, primary: str = "") -> Trunk:
    """Analyse ``net`` (a TRAIN-phase CheckedNet) around its primary loss."""
    loss = primary_loss(net, primary)
    g = net.graph
    node = g.layer(loss.layer)
    prediction = node.bottoms[0]
    head = g.producer[prediction]
    feeding = g.ancestors(head) | {head}
    order = [n for n in g.layers() if n.name in feeding]
    depth = g.depth(lambda n: is_weight_layer(net, n.name), order)
    path = _longest_path(net, head, depth)
    classifier = next((n for n in reversed(path) if is_weight_layer(net, n)), head)
    weights = [n for n in path if is_weight_layer(net, n) and n != classifier]
    trunk = Trunk(net, loss.layer, prediction, classifier, weights, depth)
    trunk.points = _points(net, order, head, depth, classifier)
    return trunk


def is_weight_layer(net: CheckedNet, name: str) -> bool:
    """Whether layer ``name`` learns a weight of 2+ dimensions (a kernel or a matrix)."""
    node = net.graph.layer(name)
    if not learnable(node) or not node.impl.learnable(0):
        return False
    shapes = net.blob_shapes.get(name) or []
    if shapes and shapes[0]:
        return len(shapes[0]) >= 2
    return node.type not in PER_CHANNEL        # shapes unknown (no input shape): go by type


def _longest_path(net: CheckedNet, head: str, depth: dict[str, int]) -> list[str]:
    """Layers of a longest weight-layer path ending at ``head``, inputs first."""
    g, path, cur = net.graph, [head], head
    while True:
        preds = [u for u, _, _ in g.in_edges(cur) if u in depth]
        if not preds:
            return path[::-1]
        cur = max(preds, key=lambda u: (depth[u], g.layer(u).index))
        path.append(cur)


def _points(net: CheckedNet, order, head: str, depth: dict[str, int], classifier: str) -> list[Point]:
    """Every blob all paths to the prediction pass through, at weight depth 1..L, in net order."""
    g = net.graph
    dag = nx.DiGraph()
    dag.add_node("<root>")
    names = {n.name for n in order}
    for n in order:
        ins = [u for u, _, _ in g.in_edges(n.name) if u in names] or ["<root>"]
        dag.add_edges_from((u, n.name) for u in ins)
    idom = nx.immediate_dominators(dag, "<root>")
    doms, cur = [], head
    while cur != "<root>":
        doms.append(cur)
        cur = idom[cur]
    limit = depth[classifier] - 1
    points: dict[str, Point] = {}
    for name in sorted(doms, key=lambda n: g.layer(n).index):
        tops = g.layer(name).tops
        # a layer with several outputs has no single blob that carries the whole trunk
        if name != head and 1 <= depth[name] <= limit and len(tops) == 1 and tops[0].name not in points:
            points[tops[0].name] = Point(tops[0].name, _last_writer(net, tops[0]), depth[name])
    return list(points.values())


def _last_writer(net: CheckedNet, blob: Blob) -> str:
    """The layer writing ``blob``'s last in-place version (the version a layer appended after it reads)."""
    versions = [b for b in net.graph.producer if b.name == blob.name and b.version >= blob.version]
    return net.graph.producer[max(versions, key=lambda b: b.version)]
