"""Turn a laid-out drawing into a few primitives (rects, texts, paths, groups).

SVG and Pillow both render this one scene, so every format shows the same
picture: nodes tinted by the losses whose gradient reaches them (one band per
loss), loss layers outlined in their colour, auxiliary layers dashed, and a
legend with the losses and the schedule's steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .draw_layout import LINE, NAME_SIZE, PAD_Y, TEXT_SIZE, Placed, text_width

MARGIN, TITLE_H, LEGEND_GAP = 20.0, 30.0, 40.0
INK, FAINT, EDGE = "#222222", "#777777", "#555555"


@dataclass
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str = "none"
    stroke: str = "none"
    width: float = 1.0
    dash: bool = False
    rx: float = 0.0


@dataclass
class Text:
    x: float
    y: float                       # baseline
    text: str
    size: float = TEXT_SIZE
    bold: bool = False
    anchor: str = "start"          # start | middle | end
    fill: str = INK


@dataclass
class Path:
    points: list
    stroke: str = EDGE
    width: float = 1.0
    arrow: bool = True
    curve: bool = False            # cubic Bezier control points: p0 (c1 c2 p)*


@dataclass
class Group:
    attrs: dict
    children: list = field(default_factory=list)


@dataclass
class Scene:
    width: float
    height: float
    items: list


def tint(color: str, keep: float = 0.25) -> str:
    """``color`` mixed with white; ``keep`` is how much of the colour stays."""
    rgb = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(255 - (255 - c) * keep):02x}" for c in rgb)


def build_scene(drawing, placed: Placed) -> Scene:
    """The full picture: title, edges, nodes, legend."""
    ox, oy = MARGIN, MARGIN + TITLE_H
    items = [Text(MARGIN, MARGIN + 14, drawing.title, 15, bold=True)]
    graph = Group({"class": "graph", "transform": (ox, oy)})
    graph.children += [_edge(e, placed) for e in placed.edges]
    graph.children += [_node(drawing, n, placed.boxes[n.name]) for n in drawing.nodes.values()]
    items.append(graph)
    legend = _legend(drawing)
    lw, lh = legend_size(legend)
    if drawing.rankdir == "LR":
        lx, ly = ox, oy + placed.height + LEGEND_GAP
        width, height = max(placed.width, lw) + 2 * MARGIN, ly + lh + MARGIN
    else:
        lx, ly = ox + placed.width + LEGEND_GAP, oy
        width, height = lx + lw + MARGIN, max(oy + placed.height, ly + lh) + MARGIN
    items.append(Group({"class": "legend", "transform": (lx, ly)}, legend))
    return Scene(width, height, items)


def _node(drawing, node, box) -> Group:
    x0, y0 = box.x - box.w / 2, box.y - box.h / 2
    attrs = {"class": "layer" + (" aux" if node.aux else "") + (" inplace" if node.in_place else ""),
             "data-layer": node.name, "data-type": node.type, "data-losses": ",".join(node.losses),
             "data-aux": "1" if node.aux else "0"}
    kids = []
    if node.losses:
        band = box.w / len(node.losses)       # several losses: one band of colour each
        kids += [Rect(x0 + i * band, y0, band, box.h, tint(drawing.color(l)))
                 for i, l in enumerate(node.losses)]
    else:
        kids.append(Rect(x0, y0, box.w, box.h, "#ffffff"))
    stroke = drawing.color(node.name) if node.is_loss and node.name in {l.name for l in drawing.losses} \
        else ("#888888" if not node.losses else "#333333")
    kids.append(Rect(x0, y0, box.w, box.h, "none", stroke, 2.5 if node.is_loss else 1.0,
                     dash=node.aux, rx=3))
    ink = INK if node.losses else FAINT
    title = f"{node.name} ({node.type})" if node.in_place else node.name
    y = y0 + PAD_Y + LINE - 3
    kids.append(Text(box.x, y, title, NAME_SIZE, bold=True, anchor="middle", fill=ink))
    for line in node.lines:
        y += LINE
        kids.append(Text(box.x, y, line, TEXT_SIZE, anchor="middle", fill=ink))
    if node.aux:
        kids.append(Text(x0 + box.w + 2, y0 + 8, "aux", 8, fill=FAINT))   # in the node gap
    return Group(attrs, kids)


def _edge(edge, placed: Placed) -> Group:
    kids = [Path(edge.points, curve=edge.curve)]
    blob = edge.label.split("@")[0]
    if blob != edge.src:                      # blob named unlike its producer (in-place chains)
        mx, my = _midpoint(edge.points)
        kids.append(Text(mx + 4, my + 3, blob, 8.5, fill=FAINT))
    return Group({"class": "edge", "data-src": edge.src, "data-dst": edge.dst, "data-blob": edge.label},
                 kids)


def _midpoint(points) -> tuple[float, float]:
    if len(points) % 2 == 0:
        (ax, ay), (bx, by) = points[len(points) // 2 - 1], points[len(points) // 2]
        return (ax + bx) / 2, (ay + by) / 2
    return points[len(points) // 2]


def _legend(drawing) -> list:
    rows, y = [], 0.0
    rows.append(Text(0, y + 12, "Gradient reaching each layer", 12, bold=True))
    y += 20
    for loss in drawing.losses:
        rows.append(Rect(0, y, 22, 14, tint(loss.color), loss.color, 2))
        note = "" if loss.trained else "  (not trained in this mode)"
        rows.append(Text(30, y + 11, f"{loss.name}: {loss.text}{note}", TEXT_SIZE,
                         fill=INK if loss.trained else FAINT))
        y += 20
    keys = [("#ffffff", "#888888", False, "no gradient"),
            ("#ffffff", "#333333", True, "auxiliary branch (feeds only non-primary losses)")]
    for fill, stroke, dash, text in keys:
        rows.append(Rect(0, y, 22, 14, fill, stroke, 1, dash=dash, rx=3))
        rows.append(Text(30, y + 11, text, TEXT_SIZE))
        y += 20
    rows.append(Text(0, y + 11, "several colours: several losses' gradients reach it", TEXT_SIZE))
    y += 34
    rows.append(Text(0, y + 12, f"Schedule ({drawing.mode})", 12, bold=True))
    y += 20
    for step in drawing.steps:
        rows.append(Text(0, y + 11, step, TEXT_SIZE, fill=INK))
        y += 16
    return rows


def legend_size(rows) -> tuple[float, float]:
    w = max((r.x + text_width(r.text, r.size, r.bold) if isinstance(r, Text) else r.x + r.w)
            for r in rows)
    h = max((r.y + 4 if isinstance(r, Text) else r.y + r.h) for r in rows)
    return w, h
