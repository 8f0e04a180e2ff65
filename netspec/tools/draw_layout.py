"""Place the nodes of a drawing: graphviz ``dot`` when on PATH, else a layered layout.

The pure-Python layout is the classic Sugiyama recipe on networkx: longest-path
layering, dummy nodes on edges that span several layers, barycentric ordering
sweeps within layers, then coordinates that pull each node towards the mean of
its neighbours without overlap.  Both engines return the same ``Placed``:
centre boxes and edge polylines (or cubic B-spline control points from dot).
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

import networkx as nx

NAME_SIZE, TEXT_SIZE, LINE = 12.0, 10.5, 14.0
PAD_X, PAD_Y = 10.0, 6.0
GAP_NODE, GAP_RANK = 24.0, 34.0
FONT_FILES = {False: ["DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"],
              True: ["DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"]}


@dataclass
class Box:
    x: float        # centre
    y: float
    w: float
    h: float


@dataclass
class PlacedEdge:
    src: str
    dst: str
    label: str
    points: list[tuple[float, float]]
    curve: bool = False              # True: cubic Bezier control points (dot)


@dataclass
class Placed:
    boxes: dict[str, Box]
    edges: list[PlacedEdge]
    width: float
    height: float
    engine: str


@lru_cache(maxsize=8)
def font(size: float, bold: bool = False):
    """A Pillow font for measuring and rasterising (DejaVu Sans, else Pillow's own)."""
    from PIL import ImageFont
    for name in FONT_FILES[bold]:
        try:
            return _truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=round(size))


def _truetype(name: str, size: float):
    """The font at exactly ``size``, so that boxes measured at 1x fit text drawn at any scale
    (rounding 10.5 to 10 made the legend overflow the PNG); Pillow < 10.1 takes whole sizes."""
    from PIL import ImageFont
    try:
        return ImageFont.truetype(name, size)
    except TypeError:
        return ImageFont.truetype(name, round(size))


def text_width(text: str, size: float, bold: bool = False) -> float:
    try:
        return font(size, bold).getlength(text)
    except ImportError:                                # no Pillow: DejaVu's average advance
        return len(text) * size * 0.62


def node_size(node) -> tuple[float, float]:
    """Width and height of a layer's box from its text."""
    title = f"{node.name} ({node.type})" if node.in_place else node.name
    widths = [text_width(title, NAME_SIZE, True)] + [text_width(l, TEXT_SIZE) for l in node.lines]
    return max(widths) + 2 * PAD_X, LINE * (1 + len(node.lines)) + 2 * PAD_Y


def layout_drawing(drawing, engine: str = "auto") -> Placed:
    """Lay out ``drawing``; ``engine`` is "dot", "python" or "auto" (dot when installed)."""
    sizes = {name: node_size(n) for name, n in drawing.nodes.items()}
    edges = [(e.src, e.dst, e.label) for e in drawing.edges]
    if engine == "dot" or (engine == "auto" and shutil.which("dot")):
        return dot_layout(list(drawing.nodes), sizes, edges, drawing.rankdir)
    return layered_layout(list(drawing.nodes), sizes, edges, drawing.rankdir)


# -- pure Python ----------------------------------------------------------------------------

def layered_layout(names, sizes, edges, rankdir: str = "TB") -> Placed:
    """Sugiyama-style layout; ``rankdir`` "LR" runs ranks left to right."""
    lr = rankdir == "LR"
    size = {n: (sizes[n][1], sizes[n][0]) if lr else sizes[n] for n in names}   # (across, along)
    g = nx.DiGraph()
    g.add_nodes_from(names)
    g.add_edges_from((u, v) for u, v, _ in edges)
    rank = _longest_path_ranks(g, names)
    chains, layers = _add_dummies(g, rank, names, edges, size)
    _order(g, layers)
    pos = _coordinates(g, layers, size)
    boxes = {}
    along = 0.0
    for layer in layers:
        depth = max(size[n][1] for n in layer)
        for n in layer:
            pos[n] = (pos[n], along + depth / 2)
        along += depth + GAP_RANK
    width = max(pos[n][0] + size[n][0] / 2 for n in pos) + GAP_NODE
    for n in names:
        x, y = pos[n]
        boxes[n] = Box(y, x, sizes[n][0], sizes[n][1]) if lr else Box(x, y, *sizes[n])
    placed = []
    for (u, v, label), chain in chains:
        pts = [(pos[d][1], pos[d][0]) if lr else pos[d] for d in chain]
        placed.append(PlacedEdge(u, v, label, _clip(boxes[u], boxes[v], pts, lr)))
    w, h = (along, width) if lr else (width, along)
    return Placed(boxes, placed, w, h, "python")


def _longest_path_ranks(g, names) -> dict:
    rank = {}
    for n in nx.lexicographical_topological_sort(g, key=names.index):
        rank[n] = max((rank[u] + 1 for u in g.predecessors(n)), default=0)
    return rank


def _add_dummies(g, rank, names, edges, size):
    """Split long edges into unit-rank hops; returns (edge, chain of nodes) and the layers."""
    layers = [[] for _ in range(max(rank.values(), default=0) + 1)]
    for n in names:
        layers[rank[n]].append(n)
    chains = []
    for i, (u, v, label) in enumerate(edges):
        chain = [u]
        for r in range(rank[u] + 1, rank[v]):
            d = ("dummy", i, r)
            size[d] = (8.0, 0.0)
            rank[d] = r
            layers[r].append(d)
            g.add_edge(chain[-1], d)
            chain.append(d)
        if len(chain) > 1:
            g.add_edge(chain[-1], v)
        chains.append(((u, v, label), chain + [v]))
    return chains, layers


def _order(g, layers, sweeps: int = 6) -> None:
    """Reorder each layer by the barycentre of its neighbours in the previous one."""
    for s in range(sweeps):
        down = s % 2 == 0
        seq = range(1, len(layers)) if down else range(len(layers) - 2, -1, -1)
        for r in seq:
            ref = {n: i for i, n in enumerate(layers[r - 1 if down else r + 1])}
            def bary(item):
                i, n = item
                nb = [ref[p] for p in (g.predecessors(n) if down else g.successors(n)) if p in ref]
                return (sum(nb) / len(nb) if nb else i, i)
            layers[r] = [n for _, n in sorted(enumerate(layers[r]), key=bary)]


def _coordinates(g, layers, size, sweeps: int = 8) -> dict:
    """Across-rank coordinates: each node wants its neighbours' mean, packed without overlap."""
    pos = {}
    for layer in layers:
        x = GAP_NODE
        for n in layer:
            pos[n] = x + size[n][0] / 2
            x += size[n][0] + GAP_NODE
    for s in range(sweeps):
        down = s % 2 == 0
        for layer in (layers if down else reversed(layers)):
            want = {}
            for n in layer:
                nb = [pos[p] for p in (g.predecessors(n) if down else g.successors(n))]
                want[n] = sum(nb) / len(nb) if nb else pos[n]
            _pack(layer, want, size, pos)
    low = min(pos[n] - size[n][0] / 2 for n in pos)
    return {n: x - low + GAP_NODE for n, x in pos.items()}


def _pack(layer, want, size, pos) -> None:
    """Place ``layer`` left to right at the wanted spots, pushing right to avoid overlap,
    then shift the whole layer so its mean displacement from the wishes is zero."""
    right = float("-inf")
    for n in layer:
        x = max(want[n], right + GAP_NODE + size[n][0] / 2)
        pos[n] = x
        right = x + size[n][0] / 2
    shift = sum(want[n] - pos[n] for n in layer) / len(layer)
    for n in layer:
        pos[n] += shift


def _clip(a: Box, b: Box, pts, lr: bool) -> list:
    """Edge polyline from ``a``'s outgoing side to ``b``'s incoming side."""
    if lr:
        return [(a.x + a.w / 2, a.y)] + pts[1:-1] + [(b.x - b.w / 2, b.y)]
    return [(a.x, a.y + a.h / 2)] + pts[1:-1] + [(b.x, b.y - b.h / 2)]


# -- graphviz -------------------------------------------------------------------------------

def dot_layout(names, sizes, edges, rankdir: str = "TB") -> Placed:
    """Ask graphviz ``dot -Tplain`` for positions; boxes keep our measured sizes."""
    ids = {n: f"n{i}" for i, n in enumerate(names)}
    lines = [f"digraph G {{ rankdir={rankdir}; nodesep=0.3; ranksep=0.4;",
             "node [shape=box, fixedsize=true, label=\"\"];"]
    lines += [f'{ids[n]} [width={sizes[n][0] / 72:.3f}, height={sizes[n][1] / 72:.3f}];' for n in names]
    lines += [f"{ids[u]} -> {ids[v]};" for u, v, _ in edges]
    text = subprocess.run(["dot", "-Tplain"], input="\n".join(lines) + "}", capture_output=True,
                          text=True, check=True).stdout
    back = {v: k for k, v in ids.items()}
    boxes, curves, height, width = {}, {}, 0.0, 0.0
    for row in text.splitlines():
        f = row.split()
        if f[0] == "graph":
            width, height = float(f[2]) * 72, float(f[3]) * 72
        elif f[0] == "node":
            n = back[f[1]]
            boxes[n] = Box(float(f[2]) * 72, height - float(f[3]) * 72, *sizes[n])
        elif f[0] == "edge":
            k = int(f[3])
            pts = [(float(f[4 + 2 * i]) * 72, height - float(f[5 + 2 * i]) * 72) for i in range(k)]
            curves.setdefault((back[f[1]], back[f[2]]), []).append(pts)
    # plain output lists edges by tail, not input order: match them by (tail, head)
    placed = [PlacedEdge(u, v, label, curves[(u, v)].pop(0), curve=True) for u, v, label in edges]
    return Placed(boxes, placed, width, height, "dot")
