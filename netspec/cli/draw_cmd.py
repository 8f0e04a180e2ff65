"""Draw a net: layers as nodes, blobs as edges, coloured by the losses whose gradient reaches them.

The colours follow the backward schedule of the chosen BP mode (--solver or
--bp-mode; STANDARD without either), as in Fig. 2 of the Relay BP paper; a
layer reached by several losses shows one band per loss.  Dashed layers are
auxiliary (they feed only non-primary losses).  The legend lists the schedule's
steps in order (MULTIWAY: the update order).  The format is the extension of -o:
.svg, .png, .pdf, .dot or .html (one self-contained page: pan, zoom, click a
layer, switch between the losses' scopes).  Layout: graphviz's dot when it is on
PATH, else a pure-Python layered layout; no format needs graphviz.

examples:
  netspec draw models/relay/vgg19_fig2.prototxt --bp-mode RELAY -o vgg19.html
  netspec draw train_val.prototxt --solver solver.prototxt -o net.svg
  netspec draw deploy.prototxt --phase TEST --rankdir LR -o net.png
"""
from __future__ import annotations

from ..schedule import MODES
from ..tools.draw import load_drawing, write
from .main import add_state_options, report


def add_arguments(p) -> None:
    p.add_argument("file", help="the net (.prototxt) to draw")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--solver", metavar="S", help="solver file whose bp_mode picks the schedule")
    mode.add_argument("--bp-mode", type=str.upper, choices=MODES, help="BP mode without a solver file")
    p.add_argument("--rankdir", type=str.upper, choices=["TB", "LR"], default="TB",
                   help="direction of the layers (default TB: top to bottom)")
    p.add_argument("--layout", choices=["auto", "dot", "python"], default="auto",
                   help="layout engine (auto: graphviz dot when installed, else pure Python)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output file: .svg, .png, .pdf, .dot or .html")
    add_state_options(p)


def run(args) -> int:
    drawing = load_drawing(args.file, args.solver, args.bp_mode, args.phase, args.rankdir,
                           dict(args.input_shape))
    out = write(drawing, args.output, args.layout)
    print(f"wrote {out} ({len(drawing.nodes)} layers, {drawing.mode})")
    if drawing.warnings:                 # e.g. a gradient_scope the solver's mode ignores
        report(drawing.warnings, getattr(args, "format", "text"))
    return 0
