"""A thin domain wrapper over networkx: layers are nodes, blob versions are edges.

Callers speak Caffe (layers, blobs, bottoms, tops); networkx stays in here and
its answers are turned into the user's words (``a -> b -> a``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import networkx as nx

from .diagnostics import Span


@dataclass(frozen=True)
class Blob:
    """One SSA version of a Caffe blob: in-place layers create a new version."""

    name: str
    version: int

    def __str__(self) -> str:
        return self.name if self.version == 0 else f"{self.name}@{self.version}"


@dataclass
class LayerNode:
    """One active layer of the net, as lowered for a phase/stage/level."""

    name: str
    type: str
    index: int                      # position among the file's layers
    lp: object                      # caffe_pb2.LayerParameter
    impl: object                    # netspec.layers.Layer instance (None if its type is unknown)
    span: Optional[Span]
    path: tuple                     # field path of the layer in the source map
    bottoms: list[Blob] = field(default_factory=list)
    tops: list[Blob] = field(default_factory=list)
    loss_weights: list[float] = field(default_factory=list)
    propagate_down: list[bool] = field(default_factory=list)

    @property
    def is_loss(self) -> bool:
        return any(w != 0 for w in self.loss_weights)

    @property
    def in_place(self) -> bool:
        return any(t.name == b.name for t in self.tops for b in self.bottoms)


class NetGraph:
    """The layer DAG of one net state.  Edges carry the blobs they transport."""

    def __init__(self) -> None:
        self._g = nx.MultiDiGraph()
        self.producer: dict[Blob, str] = {}
        self.order: list[str] = []     # file order of the active layers
        self._execution: list[LayerNode] | None = None   # layers() cache, reset by any edit

    # -- building ---------------------------------------------------------------------
    def add_layer(self, node: LayerNode) -> None:
        self._g.add_node(node.name, layer=node)
        self.order.append(node.name)
        self._execution = None

    def connect(self, blob: Blob, consumer: str, bottom_index: int) -> None:
        self._g.add_edge(self.producer[blob], consumer, blob=blob, bottom=bottom_index)
        self._execution = None

    # -- queries ----------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self._g

    def __len__(self) -> int:
        return len(self.order)

    def layer(self, name: str) -> LayerNode:
        return self._g.nodes[name]["layer"]

    def layers(self) -> list[LayerNode]:
        """Active layers in execution order (file order, which Caffe requires to be valid)."""
        if self._execution is None:     # every pass asks; a topological sort per call added up
            self._execution = self._execution_order()
        return list(self._execution)

    def _execution_order(self) -> list[LayerNode]:
        try:
            topo = {n: i for i, n in enumerate(nx.lexicographical_topological_sort(
                self._g, key=lambda n: self.layer(n).index))}
        except nx.NetworkXUnfeasible:
            topo = {n: i for i, n in enumerate(self.order)}
        return [self.layer(n) for n in sorted(self.order, key=topo.__getitem__)]

    def in_edges(self, name: str) -> list[tuple[str, Blob, int]]:
        """(producer, blob, bottom index) for each bottom of ``name``."""
        return [(u, d["blob"], d["bottom"]) for u, _, d in self._g.in_edges(name, data=True)]

    def consumers(self, blob: Blob) -> list[str]:
        prod = self.producer.get(blob)
        if prod is None:
            return []
        return sorted({v for _, v, d in self._g.out_edges(prod, data=True) if d["blob"] == blob},
                      key=lambda n: self.layer(n).index)

    def find_cycle(self) -> Optional[list[str]]:
        """A cycle as a list of layer names ending where it starts, or None."""
        try:
            edges = nx.find_cycle(self._g)
        except nx.NetworkXNoCycle:
            return None
        names = [e[0] for e in edges]
        return names + [names[0]]

    def ancestors(self, name: str) -> set[str]:
        return nx.ancestors(self._g, name)

    def descendants(self, name: str) -> set[str]:
        return nx.descendants(self._g, name)

    def sources(self) -> list[str]:
        return [n for n in self.order if self._g.in_degree(n) == 0]

    def depth(self, counts=None, layers=None) -> dict[str, int]:
        """Layer -> the largest number of layers on a path from the inputs to it, itself
        included; with ``counts``, only the layers ``counts(node)`` accepts are counted
        (weight layers, say); over ``layers`` only, in net order, when given."""
        depth: dict[str, int] = {}
        for node in layers if layers is not None else self.layers():
            preds = [depth[u] for u, _, _ in self.in_edges(node.name) if u in depth]
            depth[node.name] = max(preds, default=0) + (1 if counts is None or counts(node) else 0)
        return depth

    def subgraph_order(self, names: Iterable[str]) -> list[LayerNode]:
        keep = set(names)
        return [n for n in self.layers() if n.name in keep]


def describe_cycle(names: list[str]) -> str:
    """Render a cycle the way a user reads it: ``a -> b -> a``."""
    return " -> ".join(names)
