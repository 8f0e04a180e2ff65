"""Rasterise a scene with Pillow into PNG or PDF, so neither needs graphviz or a browser."""
from __future__ import annotations

from pathlib import Path as FilePath

from .draw_layout import font
from .draw_scene import Group, Path, Rect, Scene, Text, build_scene

_ANCHOR = {"start": "ls", "middle": "ms", "end": "rs"}


def save(drawing, placed, out: FilePath, fmt: str = "PNG", scale: float = 1.5) -> None:
    """Render at ``scale`` pixels per SVG unit and save as ``fmt`` ("PNG" or "PDF")."""
    image = render(build_scene(drawing, placed), scale)
    image.save(out, fmt, **({"resolution": 72 * scale} if fmt == "PDF" else {}))


def render(scene: Scene, scale: float = 1.5):
    from PIL import Image, ImageDraw
    image = Image.new("RGB", (round(scene.width * scale), round(scene.height * scale)), "white")
    pen = ImageDraw.Draw(image)
    for item in scene.items:
        _draw(pen, item, (0.0, 0.0), scale)
    return image


def _draw(pen, item, off, s) -> None:
    if isinstance(item, Group):
        dx, dy = item.attrs.get("transform", (0.0, 0.0))
        for child in item.children:
            _draw(pen, child, (off[0] + dx, off[1] + dy), s)
    elif isinstance(item, Rect):
        _rect(pen, item, off, s)
    elif isinstance(item, Text):
        pen.text(((item.x + off[0]) * s, (item.y + off[1]) * s), item.text, fill=item.fill,
                 font=font(item.size * s, item.bold), anchor=_ANCHOR[item.anchor])
    elif isinstance(item, Path):
        _path(pen, item, off, s)


def _rect(pen, r: Rect, off, s) -> None:
    box = [(r.x + off[0]) * s, (r.y + off[1]) * s, (r.x + off[0] + r.w) * s, (r.y + off[1] + r.h) * s]
    fill = None if r.fill == "none" else r.fill
    if fill:
        pen.rectangle(box, fill=fill)
    if r.stroke == "none":
        return
    width = max(1, round(r.width * s))
    if not r.dash:
        pen.rounded_rectangle(box, radius=r.rx * s, outline=r.stroke, width=width)
        return
    x0, y0, x1, y1 = box
    for a, b in [((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))]:
        _dashed(pen, a, b, r.stroke, width, 5 * s, 3 * s)


def _dashed(pen, a, b, color, width, on, off) -> None:
    length = ((b[0] - a[0]) ** 2 + (b[1] - a[1]) ** 2) ** 0.5
    t = 0.0
    while t < length:
        u, v = t / length, min(t + on, length) / length
        pen.line([(a[0] + (b[0] - a[0]) * u, a[1] + (b[1] - a[1]) * u),
                  (a[0] + (b[0] - a[0]) * v, a[1] + (b[1] - a[1]) * v)], fill=color, width=width)
        t += on + off


def _bezier(points, steps: int = 12) -> list:
    out = [points[0]]
    for i in range(1, len(points) - 2, 3):
        p0, c1, c2, p1 = points[i - 1], points[i], points[i + 1], points[i + 2]
        for k in range(1, steps + 1):
            t = k / steps
            out.append(tuple((1 - t) ** 3 * a + 3 * (1 - t) ** 2 * t * b + 3 * (1 - t) * t * t * c + t ** 3 * d
                             for a, b, c, d in zip(p0, c1, c2, p1)))
    return out


def _path(pen, p: Path, off, s) -> None:
    pts = _bezier(p.points) if p.curve else p.points
    pts = [((x + off[0]) * s, (y + off[1]) * s) for x, y in pts]
    pen.line(pts, fill=p.stroke, width=max(1, round(p.width * s)), joint="curve")
    if p.arrow and len(pts) > 1:
        (ax, ay), (bx, by) = pts[-2], pts[-1]
        d = max(((bx - ax) ** 2 + (by - ay) ** 2) ** 0.5, 1e-6)
        ux, uy, size = (bx - ax) / d, (by - ay) / d, 7 * s
        pen.polygon([(bx, by), (bx - ux * size - uy * size * 0.45, by - uy * size + ux * size * 0.45),
                     (bx - ux * size + uy * size * 0.45, by - uy * size - ux * size * 0.45)], fill=p.stroke)
