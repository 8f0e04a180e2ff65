"""Write a scene as SVG text; layer groups carry ``data-layer`` / ``data-losses`` attributes."""
from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from .draw_scene import Group, Path, Rect, Text, build_scene

FONT = "DejaVu Sans, Verdana, Arial, sans-serif"
_ANCHOR = {"start": "start", "middle": "middle", "end": "end"}


def to_svg(drawing, placed, standalone: bool = True) -> str:
    """The drawing as an SVG document (``standalone=False``: an element for inlining in HTML)."""
    scene = build_scene(drawing, placed)
    head = '<?xml version="1.0" encoding="UTF-8"?>\n' if standalone else ""
    out = [f'{head}<svg xmlns="http://www.w3.org/2000/svg" id="netspec-svg" '
           f'width="{scene.width:.0f}" height="{scene.height:.0f}" '
           f'viewBox="0 0 {scene.width:.0f} {scene.height:.0f}" font-family="{FONT}">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555555"/>'
           '</marker></defs>',
           '<rect width="100%" height="100%" fill="#ffffff"/>',
           '<g id="viewport">']
    out += [_item(i) for i in scene.items]
    out.append("</g></svg>")
    return "\n".join(out) + "\n"


def _attrs(attrs: dict) -> str:
    parts = []
    for k, v in attrs.items():
        if k == "transform":
            v = f"translate({v[0]:.1f},{v[1]:.1f})"
        parts.append(f"{k}={quoteattr(str(v))}")
    return " ".join(parts)


def _rect(r: Rect) -> str:
    dash = ' stroke-dasharray="5,3"' if r.dash else ""
    rx = f' rx="{r.rx:g}"' if r.rx else ""
    return (f'<rect x="{r.x:.1f}" y="{r.y:.1f}" width="{r.w:.1f}" height="{r.h:.1f}"{rx} '
            f'fill="{r.fill}" stroke="{r.stroke}" stroke-width="{r.width:g}"{dash}/>')


def _text(t: Text) -> str:
    weight = ' font-weight="bold"' if t.bold else ""
    return (f'<text x="{t.x:.1f}" y="{t.y:.1f}" font-size="{t.size:g}" text-anchor="{_ANCHOR[t.anchor]}" '
            f'fill="{t.fill}"{weight}>{escape(t.text)}</text>')


def _path(p: Path) -> str:
    pts = [f"{x:.1f},{y:.1f}" for x, y in p.points]
    d = f"M{pts[0]} " + (f"C{' '.join(pts[1:])}" if p.curve else f"L{' '.join(pts[1:])}")
    arrow = ' marker-end="url(#arrow)"' if p.arrow else ""
    return f'<path d="{d}" fill="none" stroke="{p.stroke}" stroke-width="{p.width:g}"{arrow}/>'


def _group(g: Group) -> str:
    return f"<g {_attrs(g.attrs)}>" + "".join(_item(c) for c in g.children) + "</g>"


_WRITERS = {Rect: _rect, Text: _text, Path: _path, Group: _group}


def _item(item) -> str:
    return _WRITERS[type(item)](item)
