"""CNDS's placement rule on the deep plain digits net: where does the gradient vanish?

Runs a few iterations of STANDARD BP (only the primary loss) and, at chosen
iterations, measures the mean absolute gradient of the primary loss with respect
to each convolution's weights (conv1..conv12) on one fixed probe batch.  CNDS
(Wang et al. 2015, Sec. 3.2) places an auxiliary branch after the layers whose
mean gradient falls below 1e-7.  Done twice: with the bundled init (msra) and
with CNDS's init (gaussian std 0.01), then plotted on a log scale (SVG).

    python -m experiments.gradients --iters 0 20 100 --out /tmp/g.json --svg /tmp/g.svg
"""
from __future__ import annotations

import argparse
import html
import json
import math
import sys
import tempfile
from pathlib import Path

from experiments.common import net_copy, solver_copy, write_atomic
from netspec.solve.solver import Solver
from netspec.tools import probe

THRESHOLD = probe.THRESHOLD  # CNDS: a branch goes after the layers whose mean |gradient| is below this
INITS = ("msra", "gaussian")


def measure(init: str, iters: list[int], seed: int, workdir: Path) -> dict:
    """Train STANDARD BP from ``init`` and measure the gradients at each of ``iters``.

    The measurement is ``netspec probe``'s (netspec.tools.probe): mean |d main_loss / d W|
    on one fixed probe batch; the curves keep the convolutions (conv1..conv12).
    """
    solver = Solver(solver_copy(workdir, "STANDARD", seed, max(iters), net_copy(workdir, init)),
                    log=lambda line: None, num_workers=0)
    convs = {n.name for n in solver.net.graph.layers() if n.type == "Convolution"}
    result = probe.probe(solver, at=iters)
    curves = {str(it): {n: g for n, g in result.grads[it][result.primary].items() if n in convs}
              for it in result.iterations}
    return {"init": init, "seed": seed, "curves": curves,
            "vanished": {it: [n for n, g in c.items() if g < THRESHOLD] for it, c in curves.items()},
            "placement": result.placement().__dict__}


def run(iters: list[int], seed: int, inits=INITS) -> list[dict]:
    """Both inits on the same seed and the same probe batch."""
    with tempfile.TemporaryDirectory(prefix="netspec-grads-") as tmp:
        return [measure(init, iters, seed, Path(tmp)) for init in inits]


# -- the plot (an SVG written directly: matplotlib is not a netspec dependency) --------
SIZE, MARGIN = (900, 560), (80, 40, 200, 70)  # width, height; left, top, right, bottom
ZERO_GAP = 22  # pixels between the lowest decade and the line of exact zeros
COLOURS = {"msra": ["#08306b", "#2171b5", "#6baed6", "#9ecae1"],
           "gaussian": ["#67000d", "#d62728", "#f4a582", "#fbb4a5"]}


def _decades(values: list[float]) -> tuple[int, int]:
    """The log10 range of the y axis: every positive value and the 1e-7 threshold."""
    logs = [math.log10(v) for v in values if v > 0] + [math.log10(THRESHOLD)]
    return math.floor(min(logs)), math.ceil(max(logs))


def _mapper(n_layers: int, lo: int, hi: int):
    """(layer index, value) -> pixel; values <= 0 are drawn at the bottom edge."""
    left, top, right, bottom = MARGIN
    w, h = SIZE[0] - left - right, SIZE[1] - top - bottom

    def to_px(i: int, v: float) -> tuple[float, float]:
        x = left + w * i / max(1, n_layers - 1)
        if v <= 0:  # log scale has no 0: exact zeros sit on their own line below the axis
            return x, top + h + ZERO_GAP
        return x, top + h * (1 - (math.log10(v) - lo) / max(1, hi - lo))
    return to_px


def _text(x: float, y: float, s: str, anchor: str = "start", size: int = 12) -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-family="sans-serif">{html.escape(s)}</text>')


def _axes(layers: list[str], lo: int, hi: int, to_px) -> list[str]:
    """Decade grid lines with labels, layer names on the x axis, the CNDS threshold dashed."""
    out = []
    for d in range(lo, hi + 1):
        (x0, y), (x1, _) = to_px(0, 10.0 ** d), to_px(len(layers) - 1, 10.0 ** d)
        out.append(f'<line x1="{x0:.1f}" y1="{y:.1f}" x2="{x1:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(_text(x0 - 10, y + 4, f"1e{d}", "end"))
    (x0, y), (x1, _) = to_px(0, 0.0), to_px(len(layers) - 1, 0.0)
    out.append(f'<line x1="{x0:.1f}" y1="{y:.1f}" x2="{x1:.1f}" y2="{y:.1f}" stroke="#ddd" '
               f'stroke-dasharray="2,3"/>')
    out.append(_text(x0 - 10, y + 4, "0", "end"))
    for i, name in enumerate(layers):
        x, y = to_px(i, 0.0)
        out.append(_text(x, y + 20, name, "middle"))
    (x0, y), (x1, _) = to_px(0, THRESHOLD), to_px(len(layers) - 1, THRESHOLD)
    out.append(f'<line x1="{x0:.1f}" y1="{y:.1f}" x2="{x1:.1f}" y2="{y:.1f}" stroke="black" '
               f'stroke-width="1.5" stroke-dasharray="6,4"/>')
    out.append(_text(x1, y - 6, "CNDS threshold 1e-7", "end"))
    cy = MARGIN[1] + (SIZE[1] - MARGIN[1] - MARGIN[3]) / 2
    out.append(f'<g transform="rotate(-90 20 {cy:.1f})">{_text(20, cy, "mean |grad W|", "middle")}</g>')
    return out


def _curves(results: list[dict], layers: list[str], to_px) -> list[str]:
    """One polyline with markers per (init, iteration) and its legend entry."""
    out, row = [], 0
    for r in results:
        for k, (it, curve) in enumerate(r["curves"].items()):
            colour = COLOURS[r["init"]][k % len(COLOURS[r["init"]])]
            pts = [to_px(i, curve[n]) for i, n in enumerate(layers)]
            out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2.5" points="'
                       + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
            out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>' for x, y in pts]
            lx, ly = SIZE[0] - MARGIN[2] + 20, MARGIN[1] + 20 * row
            out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 24}" y2="{ly}" stroke="{colour}" '
                       f'stroke-width="3"/>')
            out.append(_text(lx + 30, ly + 4, f"{r['init']}, iter {it}"))
            row += 1
    return out


def plot(results: list[dict], svg: Path) -> None:
    """Mean |grad| per conv layer, log scale, one line per (init, iteration), as an SVG file."""
    layers = list(next(iter(results[0]["curves"].values())))
    lo, hi = _decades([v for r in results for c in r["curves"].values() for v in c.values()])
    to_px = _mapper(len(layers), lo, hi)
    body = [f'<rect width="{SIZE[0]}" height="{SIZE[1]}" fill="white"/>',
            _text(MARGIN[0], 22, "mean |d main_loss / d W| per convolution after n iterations of "
                  "STANDARD BP (deep plain digits net)", size=14)]
    body += _axes(layers, lo, hi, to_px) + _curves(results, layers, to_px)
    write_atomic(svg, f'<svg xmlns="http://www.w3.org/2000/svg" width="{SIZE[0]}" height="{SIZE[1]}" '
                 f'viewBox="0 0 {SIZE[0]} {SIZE[1]}">\n' + "\n".join(body) + "\n</svg>\n")


def report(results: list[dict]) -> str:
    """Markdown table: mean |grad| per layer, for each (init, iteration)."""
    layers = list(next(iter(results[0]["curves"].values())))
    lines = ["| init | iter | " + " | ".join(layers) + " |", "|---" * (len(layers) + 2) + "|"]
    for r in results:
        for it, c in r["curves"].items():
            lines.append(f"| {r['init']} | {it} | " + " | ".join(f"{c[n]:.1e}" for n in layers) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: measure both inits, write JSON and PNG, print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, nargs="+", default=[0, 20, 100],
                   help="iterations of STANDARD BP after which to measure (0 = at init)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    p.add_argument("--svg", type=Path, default=None, help="plot file (SVG)")
    args = p.parse_args(argv)
    results = run(args.iters, args.seed)
    if args.out:
        write_atomic(args.out, json.dumps({"threshold": THRESHOLD, "results": results}, indent=1))
    if args.svg:
        plot(results, args.svg)
    print(report(results))
    for r in results:
        print(f"{r['init']}: below {THRESHOLD:g}: {r['vanished']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
