"""Plot a ``netspec train --log`` JSON-lines log: training loss and test outputs vs iteration.

The figure (two panels side by side) is first laid out as a list of primitives in
pixel coordinates, then written either as SVG text (no library needed) or as a raster
image with Pillow (already a netspec dependency), so no plotting library is required.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from ..diagnostics import Diagnostic, NetspecError
from ..fileio import write_atomic

PANEL, MARGIN = (560, 380), (64, 36, 20, 48)      # panel size; left, top, right, bottom margins
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


@dataclass
class Line:
    points: list[tuple[float, float]]
    colour: str = "#000000"
    width: int = 1


@dataclass
class Label:
    at: tuple[float, float]
    text: str
    colour: str = "#000000"


@dataclass
class Box:
    box: tuple[float, float, float, float]


# -- the data -----------------------------------------------------------------------------

def series(train: list[dict], test: list[dict], train_keys=None, test_keys=None) -> tuple[dict, dict]:
    """name -> [(iter, value)] for the train panel and for the test panel."""
    def column(records, key, lookup):
        return [(r["iter"], lookup(r)[key]) for r in records if key in lookup(r)]
    flat = (lambda r: {**r.get("losses", {}), **r})
    tr = {k: column(train, k, flat) for k in (train_keys or ["smoothed_loss", "loss"])}
    test_keys = test_keys or default_test_keys(test)
    nets = sorted({r["net"] for r in test})
    te = {}
    for net in nets:
        recs = [r for r in test if r["net"] == net]
        for k in test_keys:
            te[k if len(nets) == 1 else f"net{net}/{k}"] = column(recs, k, lambda r: r["outputs"])
    return tr, te


def default_test_keys(test: list[dict]) -> list[str]:
    """Every accuracy output (each exit's), or every output when none is an accuracy."""
    names = test_outputs(test)
    return [k for k in names if "acc" in k.lower()] or names


def test_outputs(test: list[dict]) -> list[str]:
    """Every output name the test records hold, in first-seen order."""
    return list(dict.fromkeys(k for r in test for k in r["outputs"]))


test_outputs.__test__ = False           # a library function, not a pytest test


def train_columns(train: list[dict]) -> list[str]:
    return list(dict.fromkeys(["loss", "smoothed_loss", "lr"] + [k for r in train for k in r.get("losses", {})]))


# -- the layout ---------------------------------------------------------------------------

def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    raw = (hi - lo) / max(1, target - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= 0.7 * raw)     # 3 to 7 ticks
    first = math.ceil(lo / step - 1e-9)
    return [round(k * step, 12) for k in range(first, math.floor(hi / step + 1e-9) + 1)]


def _range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def panel(origin: tuple[int, int], title: str, lines: dict) -> list:
    """Axes with 5 ticks per axis, one polyline per series, and a legend."""
    x0, y0 = origin[0] + MARGIN[0], origin[1] + MARGIN[1]
    x1, y1 = origin[0] + PANEL[0] - MARGIN[2], origin[1] + PANEL[1] - MARGIN[3]
    items: list = [Label((x0, origin[1] + 10), title), Box((x0, y0, x1, y1))]
    points = [p for pts in lines.values() for p in pts]
    if not points:
        return items + [Label((x0 + 10, y0 + 10), "no data", "#808080")]
    (xa, xb), (ya, yb) = _range([p[0] for p in points]), _range([p[1] for p in points])
    sx = lambda x: x0 + (x - xa) / (xb - xa) * (x1 - x0)             # noqa: E731
    sy = lambda y: y1 - (y - ya) / (yb - ya) * (y1 - y0)             # noqa: E731
    for tx in nice_ticks(xa, xb):
        label = f"{tx:g}"                   # centred under its tick: about 6 px per character
        items += [Line([(sx(tx), y1), (sx(tx), y1 + 4)]), Label((sx(tx) - 3 * len(label), y1 + 8), label)]
    for ty in nice_ticks(ya, yb):
        items += [Line([(x0 - 4, sy(ty)), (x0, sy(ty))]), Label((origin[0] + 4, sy(ty) - 6), f"{ty:.6g}"[:9])]
    items.append(Label(((x0 + x1) // 2 - 20, y1 + 26), "iteration"))
    for i, (name, pts) in enumerate(lines.items()):
        colour, y = COLOURS[i % len(COLOURS)], y0 + 12 + 14 * i
        xy = [(sx(x), sy(y_)) for x, y_ in pts]
        items += [Line(xy if len(xy) > 1 else xy * 2, colour, 2),
                  Line([(x1 - 150, y), (x1 - 130, y)], colour, 2), Label((x1 - 125, y - 6), name[:20])]
    return items


def figure(train, test, train_keys=None, test_keys=None) -> list:
    """Both panels' primitives; unknown --train/--test names are an error listing what exists."""
    tr, te = series(train, test, train_keys, test_keys)
    bad = [k for k in train_keys or [] if not tr.get(k)] + [k for k in test_keys or [] if not te.get(k)]
    if bad:
        raise NetspecError([Diagnostic("E0800", f"the log has no values for {', '.join(bad)}",
                                       help=[f"train columns: {', '.join(train_columns(train))}; "
                                             f"test outputs: {', '.join(test_outputs(test)) or 'none'}"])])
    return panel((0, 0), "training loss", tr) + panel((PANEL[0], 0), "test outputs", te)


# -- the writers --------------------------------------------------------------------------

def to_svg(items: list) -> str:
    """The figure as a standalone SVG document."""
    w, h = PANEL[0] * 2, PANEL[1]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           'font-family="DejaVu Sans, Verdana, sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="#ffffff"/>']
    for it in items:
        if isinstance(it, Line):
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in it.points)
            out.append(f'<polyline points="{pts}" fill="none" stroke="{it.colour}" stroke-width="{it.width}"/>')
        elif isinstance(it, Label):
            out.append(f'<text x="{it.at[0]:.1f}" y="{it.at[1] + 10:.1f}" fill="{it.colour}">{escape(it.text)}</text>')
        else:
            x0, y0, x1, y1 = it.box
            out.append(f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="none" stroke="#000000"/>')
    return "\n".join(out + ["</svg>"]) + "\n"


def to_raster(items: list, fmt: str) -> bytes:
    """The figure drawn with Pillow, encoded as ``fmt`` (PNG, JPEG, ...)."""
    from PIL import Image, ImageDraw, ImageFont
    img = Image.new("RGB", (PANEL[0] * 2, PANEL[1]), "white")
    draw, font = ImageDraw.Draw(img), ImageFont.load_default()
    for it in items:
        if isinstance(it, Line):
            draw.line(it.points, fill=it.colour, width=it.width)
        elif isinstance(it, Label):
            draw.text(it.at, it.text, fill=it.colour, font=font)
        else:
            draw.rectangle(it.box, outline="black")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def raster_format(out: Path) -> str | None:
    """Pillow's format name for ``out``'s extension, or None when it writes no such format."""
    from PIL import Image
    return Image.registered_extensions().get(out.suffix.lower())


def plot(train, test, out: str | Path, train_keys=None, test_keys=None) -> Path:
    """Draw the log into ``out`` (.svg, or any raster format Pillow writes), atomically."""
    out = Path(out)
    fmt = None if out.suffix.lower() == ".svg" else raster_format(out)
    if out.suffix.lower() != ".svg" and fmt is None:
        raise NetspecError([Diagnostic("E0800", f"cannot write '{out.name}': unknown image format",
                                       help=["use .svg or .png (or another format Pillow writes)"])])
    items = figure(train, test, train_keys, test_keys)
    data = to_svg(items).encode() if fmt is None else to_raster(items, fmt)
    return write_atomic(out, data)
