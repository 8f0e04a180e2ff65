"""Gradient probe: mean |dL/dW| of every weight layer for every loss, CNDS's placement rule.

CNDS (Wang et al. 2015, sec. 3.2) decides where deep supervision goes by running a few
(10-50) iterations of back-propagation, plotting the mean gradient magnitude of each
intermediate layer on a log scale (their Fig. 2a) and adding a branch after the layer
where it vanishes, "in our implementation, becomes less than 1e-7" (``placement``).

``probe(solver, at=(0, 50))`` trains the solver's net with its own BP mode and, at each
iteration in ``at``, measures on one fixed probe batch the mean absolute gradient of
each loss with respect to the weight of each weight layer (see ``netspec.tools.trunk``)
that the loss's backward pass updates under that mode (``Schedule.params``: under
STANDARD only the primary loss, under RELAY/MULTIWAY each loss's scope as the mode
applies it).  L is the loss layer's output, unweighted (loss_weight and loss-weight
schedules left out), so the columns of different losses compare directly.

A measurement changes nothing the training sees: the torch RNG and every buffer
(BatchNorm statistics) are put back afterwards, and the probe batch comes from its own
data stream.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..diagnostics import Diagnostic, NetspecError
from ..proto import caffe_pb2
from .plot_log import COLOURS, PANEL
from .trunk import Trunk, is_weight_layer, trunk_of

THRESHOLD = 1e-7            # CNDS: a branch goes after the layer whose mean |gradient| is below this
ITERATIONS = 50             # CNDS: "a few (10-50) iterations"
PROBE_SEED = 12345          # the probe batch's own data stream, apart from the training batches


@dataclass
class Placement:
    """Where CNDS's rule puts branches: after each of ``layers`` (empty: nowhere, see ``reason``)."""

    layers: list[str]
    reason: str


@dataclass
class ProbeResult:
    """Mean |dL/dW| per (iteration, loss, weight layer), with the trunk it was measured on."""

    mode: str
    primary: str
    layers: list[str]                           # weight layers, execution order
    losses: list[str]                           # losses the schedule trains, in its order
    reach: dict[str, list[str]]                 # loss -> weight layers its backward updates
    grads: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    threshold: float = THRESHOLD
    trunk: Trunk | None = field(default=None, repr=False)

    @property
    def iterations(self) -> list[int]:
        return sorted(self.grads)

    def vanishing(self, it: int | None = None) -> dict[str, list[str]]:
        """Loss -> the weight layers whose mean |gradient| is below the threshold at ``it`` (last)."""
        it = self.iterations[-1] if it is None else it
        return {loss: [l for l, g in self.grads[it][loss].items() if g < self.threshold]
                for loss in self.losses}

    def placement(self) -> Placement:
        """CNDS's rule on the primary loss's last measurement: a branch after each trunk layer
        whose mean |gradient| is below the threshold while the next trunk layer's is not (one
        branch for CNDS's monotone profiles; one per vanishing stretch otherwise)."""
        path = [l for l in (self.trunk.path if self.trunk else self.layers) if l in self.reach[self.primary]]
        if not path:
            return Placement([], "the primary loss reaches no trunk weight layer")
        g = self.grads[self.iterations[-1]][self.primary]
        low = [g[l] < self.threshold for l in path]
        if not any(low):
            return Placement([], f"no trunk layer is below {self.threshold:g}: the rule adds no branch")
        after = [path[i] for i in range(len(path) - 1) if low[i] and not low[i + 1]]
        if not after:
            return Placement([], f"the gradient is below {self.threshold:g} up to the top trunk layer "
                             f"({path[-1]}), so the rule does not single out a place; a scaled "
                             "initialisation (msra/xavier) or exits placed by count fit this net better")
        return Placement(after, f"the gradient of '{self.primary}' vanishes at and below "
                         f"{' and '.join(repr(l) for l in after)} and recovers above")

    def to_json(self) -> dict:
        return {"mode": self.mode, "primary": self.primary, "threshold": self.threshold,
                "layers": self.layers, "losses": self.losses, "reach": self.reach,
                "grads": {str(it): v for it, v in self.grads.items()},
                "vanishing": {str(it): self.vanishing(it) for it in self.iterations},
                "placement": self.placement().__dict__}


def weight_layers(solver) -> list[str]:
    """The training net's weight layers in execution order."""
    return [n.name for n in solver.net.graph.layers() if is_weight_layer(solver.net, n.name)]


def reach_of(solver, layers: list[str]) -> dict[str, list[str]]:
    """Loss -> the weight layers whose weight (blob 0) its backward pass updates under the mode."""
    sched = solver.schedule
    return {loss: [l for l in layers if f"{l}/0" in set(sched.params.get(loss, ()))] for loss in sched.losses}


def probe_batch(solver, seed: int = PROBE_SEED) -> dict:
    """One batch of the training net's data layers, from a stream of its own."""
    if solver.feed is None:
        raise NetspecError([Diagnostic("E0600", "the train net has no data layer to probe with",
                                       help=["give the net a data layer, or pass a batch to probe()"])])
    from ..data import Feeder
    return solver._to_device(next(Feeder(solver.net, caffe_pb2.TRAIN, seed, num_workers=0)))


def measure(solver, batch: dict, reach: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """Mean |d loss / d W| per loss and weight layer, with the solver's current weights."""
    from ..solve.solver import fast_float_mode
    module, params = solver.module, solver.executor.params
    saved = {k: b.detach().clone() for k, b in module.named_buffers()}
    by = {l.layer: l for l in solver.net.losses}
    out: dict[str, dict[str, float]] = {}
    with torch.random.fork_rng(devices=[]), fast_float_mode(solver.flush_denormal):
        blobs = solver.executor.forward(module, batch)
        for i, loss in enumerate(reach):
            value = sum(blobs[t.name].float().sum() for t, _ in by[loss].tops)
            weights = [params[f"{l}/0"] for l in reach[loss]]
            grads = torch.autograd.grad(value, weights, retain_graph=i + 1 < len(reach),
                                        allow_unused=True) if weights else []
            out[loss] = {l: float(g.abs().mean()) if g is not None else 0.0
                         for l, g in zip(reach[loss], grads)}
    with torch.no_grad():
        for k, b in module.named_buffers():
            b.copy_(saved[k])
    return out


def probe(solver, at=(0, ITERATIONS), batch: dict | None = None, batches=None,
          threshold: float = THRESHOLD) -> ProbeResult:
    """Train ``solver`` (its own BP mode) and measure at each iteration of ``at``.

    ``batch`` is the probe batch (default: one from the net's data layers, seeded apart);
    ``batches`` (a callable giving a list of iter_size input dicts) feeds training when
    the net has no data layer.
    """
    reach = reach_of(solver, weight_layers(solver))
    layers = [l for l in weight_layers(solver) if any(l in r for r in reach.values())]
    batch = probe_batch(solver) if batch is None else batch
    trunk = trunk_of(solver.net, solver.schedule.primary)
    result = ProbeResult(solver.schedule.mode, solver.schedule.primary, layers, list(reach), reach,
                         threshold=threshold, trunk=trunk)
    for it in sorted(set(at)):
        while solver.iter < it:
            solver.step(1, batches=batches() if batches else None)
        result.grads[it] = measure(solver, batch, reach)
    return result


# -- the report ---------------------------------------------------------------------------

def table(result: ProbeResult) -> str:
    """Layers down, (loss, iteration) across; ``*`` marks a value under the threshold."""
    cols = [(loss, it) for loss in result.losses for it in result.iterations]
    head = ["layer"] + [f"{loss}@{it}" for loss, it in cols]
    rows = []
    for layer in result.layers:
        cells = [layer]
        for loss, it in cols:
            g = result.grads[it][loss].get(layer)
            cells.append("-" if g is None else f"{g:.2e}{'*' if g < result.threshold else ' '}")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(head)] + [fmt(r) for r in rows])


def summary(result: ProbeResult) -> list[str]:
    """The flagged layers per loss and iteration, and CNDS's placement."""
    lines = []
    for it in result.iterations:
        for loss, names in result.vanishing(it).items():
            lines.append(f"below {result.threshold:g} after {it} iterations, {loss}: "
                         f"{', '.join(names) if names else 'none'}")
    place = result.placement()
    where = "a branch after " + ", ".join(f"'{l}'" for l in place.layers) if place.layers else "no branch"
    lines.append(f"CNDS rule (iteration {result.iterations[-1]}): {where}: {place.reason}")
    return lines


# -- the plot (CNDS Fig. 2a's view; drawn with plot_log's primitives and writers) ----------

SIZE = (PANEL[0] * 2, PANEL[1])        # the page plot_log's writers draw on


def _decades(result: ProbeResult) -> tuple[int, int]:
    values = [g for c in result.grads.values() for per in c.values() for g in per.values() if g > 0]
    logs = [math.log10(v) for v in values] + [math.log10(result.threshold)]
    return math.floor(min(logs)), math.ceil(max(logs))


def figure(result: ProbeResult, title: str = "") -> list:
    """Primitives: decades on a log y axis, zeros on a line below it, the threshold dashed."""
    from .plot_log import Box, Label, Line
    x0, y0, x1, y1 = 80, 36, SIZE[0] - 210, SIZE[1] - 70
    lo, hi = _decades(result)
    n = len(result.layers)
    sx = lambda i: x0 + (x1 - x0) * (i + 0.5) / max(1, n)                     # noqa: E731
    sy = lambda v: y1 + 16 if v <= 0 else y1 - (math.log10(v) - lo) / max(1, hi - lo) * (y1 - y0)  # noqa: E731
    items: list = [Box((x0, y0, x1, y1)), Label((x0, 8), title or f"mean |dL/dW| per weight layer "
                                                 f"({result.mode} BP)")]
    for d in range(lo, hi + 1):
        items += [Line([(x0 - 4, sy(10.0 ** d)), (x1, sy(10.0 ** d))], "#dddddd"),
                  Label((x0 - 44, sy(10.0 ** d) - 6), f"1e{d}")]
    items.append(Label((x0 - 20, y1 + 10), "0"))
    step = max(1, math.ceil(n / 24))            # at most ~24 layer names under the axis
    for i in range(0, n, step):
        items.append(Label((sx(i) - 3 * min(len(result.layers[i]), 10), y1 + 30), result.layers[i][:10]))
    ty, x = sy(result.threshold), x0
    while x < x1:                               # dashed: the primitives have no dash style
        items.append(Line([(x, ty), (min(x + 8, x1), ty)], "#000000", 2))
        x += 14
    items.append(Label((x1 - 150, ty - 16), f"CNDS threshold {result.threshold:g}"))
    return items + _curves(result, sx, sy, x1)


def _curves(result: ProbeResult, sx, sy, x1) -> list:
    """One colour per loss; the first measurement thin, later ones thicker."""
    from .plot_log import Label, Line
    items, row = [], 0
    index = {l: i for i, l in enumerate(result.layers)}
    for k, loss in enumerate(result.losses):
        colour = COLOURS[k % len(COLOURS)]
        for j, it in enumerate(result.iterations):
            width = 1 + 2 * j
            pts = [(sx(index[l]), sy(g)) for l, g in result.grads[it][loss].items()]
            items.append(Line(pts if len(pts) > 1 else pts * 2, colour, width))
            items += [Line([(x - 2 - j, y), (x + 2 + j, y)], colour, 3 + 2 * j) for x, y in pts]
            ly = 44 + 16 * row
            items += [Line([(x1 + 14, ly + 6), (x1 + 34, ly + 6)], colour, width),
                      Label((x1 + 40, ly), f"{loss[:16]}, iter {it}")]
            row += 1
    return items


def plot(result: ProbeResult, out, title: str = ""):
    """Write the figure to ``out`` (.svg, or any raster format Pillow writes), atomically."""
    from pathlib import Path

    from ..fileio import write_atomic
    from . import plot_log
    out = Path(out)
    fmt = None if out.suffix.lower() == ".svg" else plot_log.raster_format(out)
    if out.suffix.lower() != ".svg" and fmt is None:
        raise NetspecError([Diagnostic("E0800", f"cannot write '{out.name}': unknown image format",
                                       help=["use .svg or .png (or another format Pillow writes)"])])
    items = figure(result, title)
    data = plot_log.to_svg(items).encode() if fmt is None else plot_log.to_raster(items, fmt)
    return write_atomic(out, data)
