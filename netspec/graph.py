"""A thin domain wrapper over networkx: layers are nodes, blob versions are edges.

Callers speak Caffe (layers, blobs, bottoms, tops); networkx stays in here and its
answers are turned into the user's words (``a -> b -> a``).  The networkx graph holds
topology only: the layers live in a dict beside it and the blobs in the layers'
bottoms, so a 200,000-layer file pays networkx's adjacency dicts and no attribute
dicts (issue 15).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import networkx as nx

from .diagnostics import Span


@dataclass(frozen=True, slots=True)
class Blob:
    """One SSA version of a Caffe blob: in-place layers create a new version."""

    name: str
    version: int

    def __str__(self) -> str:
        return self.name if self.version == 0 else f"{self.name}@{self.version}"


@dataclass(slots=True)          # one per layer: no per-instance __dict__
class LayerNode:
    """One active layer of the net, as lowered for a phase/stage/level."""

    name: str
    type: str
    index: int                      # position among the file's layers
    lp: object                      # caffe_pb2.LayerParameter
    impl: object                    # netspec.layers.Layer instance (None if its type is unknown)
    source: object                  # its NetSource (``span`` is looked up there when asked)
    path: tuple                     # field path of the layer in the source map
    bottoms: list[Blob] = field(default_factory=list)
    tops: list[Blob] = field(default_factory=list)
    loss_weights: Sequence[float] = ()      # read-only; a tuple shared by the layers alike
    propagate_down: Sequence[bool] = ()

    @property
    def span(self) -> Optional[Span]:
        """Where the layer is written (made on demand: one Span per layer adds up)."""
        return self.source.span(self.path) if self.source is not None else None

    @property
    def is_loss(self) -> bool:
        return any(w != 0 for w in self.loss_weights)

    @property
    def in_place(self) -> bool:
        return any(t.name == b.name for t in self.tops for b in self.bottoms)


_NO_ATTRS: dict = {}     # never written: networkx only reads it for these graphs


class _Topology(nx.DiGraph):
    """networkx's DiGraph whose nodes and edges all share one empty attribute dict
    (networkx's factory hooks for subclasses): one dict fewer per layer and per edge."""

    node_attr_dict_factory = staticmethod(lambda: _NO_ATTRS)
    edge_attr_dict_factory = staticmethod(lambda: _NO_ATTRS)


class NetGraph:
    """The layer DAG of one net state.  An edge producer -> consumer stands for the blobs
    the consumer reads from the producer (its bottoms say which)."""

    def __init__(self) -> None:
        self._g = _Topology()
        self._layers: dict[str, LayerNode] = {}
        self.producer: dict[Blob, str] = {}
        self.order: list[str] = []     # file order of the active layers
        self._execution: list[LayerNode] | None = None   # layers() cache, reset by any edit

    # -- building ---------------------------------------------------------------------
    def add_layer(self, node: LayerNode) -> None:
        if node.name not in self._layers:
            self.order.append(node.name)
        self._g.add_node(node.name)
        self._layers[node.name] = node
        self._execution = None

    def connect(self, blob: Blob, consumer: str, bottom_index: int) -> None:
        """Record the edge ``blob`` -> ``consumer``; ``blob`` is (or becomes) the consumer's
        bottom ``bottom_index``: the in-edges are read back from the layers' bottoms."""
        self._g.add_edge(self.producer[blob], consumer)
        self._execution = None

    # -- queries ----------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self._layers

    def __len__(self) -> int:
        return len(self.order)

    def layer(self, name: str) -> LayerNode:
        return self._layers[name]

    def layers(self) -> list[LayerNode]:
        """Active layers in execution order (file order, which Caffe requires to be valid)."""
        if self._execution is None:
            self._execution = self._execution_order()
        return list(self._execution)

    def _execution_order(self) -> list[LayerNode]:
        """Topological order, ties broken by file position (a cyclic graph: file order)."""
        try:
            return [self._layers[n] for n in nx.lexicographical_topological_sort(
                self._g, key=lambda n: self._layers[n].index)]
        except nx.NetworkXUnfeasible:
            return [self._layers[n] for n in self.order]

    def in_edges(self, name: str) -> list[tuple[str, Blob, int]]:
        """(producer, blob, bottom index) for each connected bottom of ``name``, grouped by
        producer (producers in the order of their first bottom)."""
        edges = self._bottom_edges(name)
        first: dict[str, int] = {}
        for u, _, _ in edges:
            first.setdefault(u, len(first))
        return sorted(edges, key=lambda e: first[e[0]]) if len(first) > 1 else list(edges)

    def _bottom_edges(self, name: str) -> list[tuple[str, Blob, int]]:
        producer = self.producer
        return [(producer[b], b, i) for i, b in enumerate(self._layers[name].bottoms)
                if b.version >= 0 and b in producer]

    def consumers(self, blob: Blob) -> list[str]:
        prod = self.producer.get(blob)
        if prod is None:
            return []
        return sorted((v for v in self._g.successors(prod) if blob in self._layers[v].bottoms),
                      key=lambda n: self.layer(n).index)

    def find_cycle(self) -> Optional[list[str]]:
        """A cycle as a list of layer names ending where it starts, or None."""
        if nx.is_directed_acyclic_graph(self._g):     # find_cycle's search holds ~2 KB a layer
            return None
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
            preds = [depth[u] for u, _, _ in self._bottom_edges(node.name) if u in depth]
            depth[node.name] = max(preds, default=0) + (1 if counts is None or counts(node) else 0)
        return depth

    def subgraph_order(self, names: Iterable[str]) -> list[LayerNode]:
        keep = set(names)
        return [n for n in self.layers() if n.name in keep]


def describe_cycle(names: list[str]) -> str:
    """Render a cycle the way a user reads it: ``a -> b -> a``."""
    return " -> ".join(names)
