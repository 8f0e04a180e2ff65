"""Anytime prediction: a multi-exit net that lets each sample leave at its first confident exit.

``EarlyExit(net, threshold)`` evaluates the exits from the cheapest to the costliest.  At exit
k the samples whose largest softmax probability is at least ``threshold`` leave with that
exit's class; only the samples still in run the layers exit k + 1 needs beyond what has
run (the inference build's statements, stage by stage, on the remaining rows of every
batch-major blob).  The last exit takes every sample left.

``sweep`` scores a list of thresholds on a net's TEST data: accuracy, mean MACs per sample
(each sample pays for every layer that ran for it), the share leaving at each exit, and the
speed-up over the deepest exit's own inference build (what one ships without early exit),
timed in interleaved rounds at the data layer's batch and at all the batches as one.
``verdict`` reads the budgeted-prediction curve: whether accuracy is monotone in the
threshold, the highest threshold against the deepest exit alone, and the cheapest threshold
within half a point of it.  ``plot`` draws accuracy against MACs with each single exit as a
point.
"""
from __future__ import annotations

import ast
import statistics
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..compile.module import inference_twin, refold
from ..diagnostics import Diagnostic, NetspecError
from ..interop.export_net import net_exits
from .macs import net_macs
from .timing import forward_def


@dataclass
class Prediction:
    """Per sample: the predicted class, the index of the exit it left at, its confidence."""

    classes: torch.Tensor
    exits: torch.Tensor
    confidence: torch.Tensor
    names: list[str]                 # exit index -> loss layer name
    macs: list[int]                  # exit index -> MACs per sample of leaving there


class EarlyExit:
    """``EarlyExit(net, threshold)(data=x)`` -> :class:`Prediction` (``net``: a netspec.Net)."""

    def __init__(self, net, threshold: float):
        self.net, self.threshold = net, float(threshold)
        exits = [e for e in net_exits(net.net) if e.kind == "Softmax"]
        if len(exits) < 1:
            raise NetspecError([Diagnostic("E0800", f"net '{net.net.name}' has no SoftmaxWithLoss exit",
                                           help=["early exit needs classification exits"])])
        per_layer = net_macs(net.net)
        needed = [net.net.graph.ancestors(net.net.graph.producer[e.top]) | {net.net.graph.producer[e.top]}
                  for e in exits]
        order = sorted(range(len(exits)), key=lambda i: sum(per_layer[n] or 0 for n in needed[i]))
        self.exits = [exits[i] for i in order]
        self.compiled = inference_twin(net.compiled, [e.top for e in self.exits])
        body, self._globals = _forward_body(self.compiled)
        done: set[str] = set()
        self.stages, self.macs, reads = [], [], []
        for i in order:
            stage = needed[i] - done
            done |= stage
            code = ast.Module([s for layer, s in body if layer in stage], [])
            reads.append({n.id for n in ast.walk(code) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)})
            # one code object per stage: statement-by-statement exec costs more than small layers
            self.stages.append(compile(code, type(self.compiled.module).__netspec_filename__, "exec"))
            self.macs.append(sum(per_layer[n] or 0 for n in done))
        # an exit on its own (no shallower heads): the point each exit alone is plotted at
        self.alone_macs = [sum(per_layer[n] or 0 for n in needed[i]) for i in order]
        self.vars = _returned_vars(self.compiled)
        # after stage k, only what later stages read stays (on the remaining samples' rows)
        self.keep = [set().union(*reads[k + 1:]) - {"self"} for k in range(len(reads))]

    @property
    def names(self) -> list[str]:
        return [e.loss for e in self.exits]

    def __call__(self, **inputs) -> Prediction:
        names = self.compiled.generated.inputs
        missing = [k for k in names if k not in inputs]
        if missing:
            raise NetspecError([Diagnostic("E0701", f"no data for input blob(s) {', '.join(missing)}",
                                           help=[f"the exits read {', '.join(names)}"])])
        feed = {k: torch.as_tensor(inputs[k]).to(self.net.device) for k in names}
        with torch.no_grad():
            if self.net.inference is not None:
                self.net._watch.check()
            refold(self.compiled.module)
            return self._run(feed)

    def _run(self, feed: dict) -> Prediction:
        env = {"self": self.compiled.module, **feed}
        n = next(iter(feed.values())).shape[0]
        alive = torch.arange(n)
        classes, exits = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
        confidence = torch.zeros(n)
        for k, (stage, e) in enumerate(zip(self.stages, self.exits)):
            exec(stage, self._globals, env)
            prob = F.softmax(env[self.vars[k]].float(), e.axis)
            conf, cls = prob.max(e.axis)
            leave = conf >= self.threshold if k < len(self.exits) - 1 else torch.ones_like(conf, dtype=torch.bool)
            rows = alive[leave.cpu()]
            classes[rows], exits[rows], confidence[rows] = cls[leave].cpu(), k, conf[leave].cpu()
            stay = ~leave
            if not stay.any():
                break
            size, everyone = len(alive), bool(stay.all())
            alive = alive if everyone else alive[stay.cpu()]
            env = {"self": env["self"]} | {
                name: v[stay] if not everyone and isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == size
                else v for name, v in env.items() if name in self.keep[k]}
        return Prediction(classes, exits, confidence, self.names, list(self.macs))


def _forward_body(compiled) -> tuple[list[tuple[str, ast.stmt]], dict]:
    """(layer, statement) for the generated forward's statements (``del`` lines left out: the
    stages run in a different order) and the globals the statements need."""
    fwd = forward_def(compiled)
    lines = compiled.generated.line_of_layer
    body = [(lines[s.lineno], s) for s in fwd.body if s.lineno in lines]
    return body, type(compiled.module).forward.__globals__


def _returned_vars(compiled) -> list[str]:
    """The forward's variable for each output, in output order (from its ``return {...}``)."""
    ret = next(s for s in forward_def(compiled).body if isinstance(s, ast.Return))
    return [v.id for v in ret.value.values]


# -- scoring a threshold sweep ------------------------------------------------------------------
@dataclass
class Timing:
    """Speed-up of early exit over the deepest exit alone at one batch size: one ratio per
    interleaved round (the deepest exit's seconds over early exit's, timed back to back)."""

    batch: int
    ratios: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    def __str__(self) -> str:
        return f"{self.median:.2f}x ({min(self.ratios):.2f}-{max(self.ratios):.2f})"


@dataclass
class SweepRow:
    threshold: float | None          # None: one exit alone (``exit_name``)
    accuracy: float
    macs: float                      # mean MACs per sample
    shares: list[float] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=list)
    exit_name: str = ""
    samples: int = 0                 # how many samples scored it (0: unknown)


def sweep(net, thresholds: list[float], iterations: int, label: str | None = None,
          repeats: int = 15) -> tuple[list[SweepRow], list[SweepRow]]:
    """Score every threshold (and every single exit) on ``iterations`` batches of the net's data,
    and time each threshold against the deepest exit alone (:func:`time_rows`; ``repeats`` rounds,
    0 skips the timing).  ``label``: the blob holding the true classes (default: the deepest
    exit's loss's second bottom)."""
    runners = [EarlyExit(net, t) for t in thresholds]
    base = runners[0] if runners else EarlyExit(net, 1.0)
    batches = [{k: v for k, v in next(net.feeder).items()} for _ in range(iterations)]
    label = label or _label_blob(net, base, batches[0])
    feeds = [{k: v.to(net.device) for k, v in b.items() if k in base.compiled.generated.inputs} for b in batches]
    rows = [SweepRow(t, 0.0, 0.0, [0.0] * len(base.exits)) for t in thresholds]
    singles = [SweepRow(None, 0.0, float(m), exit_name=name) for name, m in zip(base.names, base.alone_macs)]
    total = 0
    for batch, feed in zip(batches, feeds):
        y = batch[label].long().view(-1).cpu()
        total += len(y)
        with torch.no_grad():
            outs = base.compiled.module(**feed)
        for i, s in enumerate(singles):
            s.accuracy += float((outs[_key(base, i)].argmax(1).cpu() == y).sum())
        for r, run in zip(rows, runners):
            p = run(**feed)
            r.accuracy += float((p.classes == y).sum())
            r.macs += float(sum(p.macs[k] for k in p.exits.tolist()))
            for k in range(len(r.shares)):
                r.shares[k] += float((p.exits == k).sum())
    for r in rows:
        r.accuracy, r.macs, r.shares = r.accuracy / total, r.macs / total, [s / total for s in r.shares]
        r.samples = total
    for s in singles:
        s.accuracy, s.samples = s.accuracy / total, total
    if repeats:
        time_rows(net, rows, runners, feeds, repeats)
    return rows, singles


def _label_blob(net, runner: EarlyExit, batch: dict) -> str:
    """The blob the deepest exit's loss compares against, checked to come from a data layer."""
    loss = net.net.graph.layer(runner.exits[-1].loss)
    name = loss.bottoms[1].name if len(loss.bottoms) > 1 else None
    if name not in batch:
        raise NetspecError([Diagnostic(
            "E0800", f"cannot score early exit: loss '{loss.name}' reads its labels from "
                     f"{repr(name) if name else 'no blob'}, which no data layer of the net provides",
            span=loss.span, help=["early exit compares each sample's class with the labels its data layer reads"])])
    return name


def time_rows(net, rows: list[SweepRow], runners: list[EarlyExit], feeds: list[dict], repeats: int) -> None:
    """Fill each row's ``timings``: early exit against the deepest exit's own inference build (the
    model one would ship without early exit), on the data layer's batches and, when there are
    several, on as many of them as :func:`_joinable` allows as one batch.  Every round times
    each threshold and the deepest exit back to back, alternating which goes first, so other
    jobs' load falls on both alike."""
    deepest = inference_twin(net.compiled, [runners[0].exits[-1].top]).module
    sizes = [(feeds, len(next(iter(feeds[0].values()))))]
    joined = _joinable(feeds)
    if joined > 1:
        whole = {k: torch.cat([f[k] for f in feeds[:joined]]) for k in feeds[0]}
        sizes.append(([whole], len(next(iter(whole.values())))))
    for group, batch in sizes:
        ratios = [[] for _ in rows]
        for rnd in range(repeats):
            for i, run in enumerate(runners):
                if rnd % 2 == 0:
                    alone = _seconds(deepest, group)
                    early = _seconds(run, group)
                else:
                    early = _seconds(run, group)
                    alone = _seconds(deepest, group)
                ratios[i].append(alone / early)
        for r, rs in zip(rows, ratios):
            r.timings.append(Timing(batch, rs))


JOIN_BYTES = 64 << 20                # the larger timing batch holds at most this much input


def _joinable(feeds: list[dict]) -> int:
    """How many leading batches join into the larger timing batch (their inputs within
    JOIN_BYTES, so an ImageNet net's 50 test batches do not become one batch of 2,500)."""
    total, count = 0, 0
    for feed in feeds:
        total += sum(v.numel() * v.element_size() for v in feed.values())
        if total > JOIN_BYTES:
            break
        count += 1
    return count


def _seconds(fn, feeds: list[dict]) -> float:
    device = next(iter(feeds[0].values())).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *_: None)
    sync(device)                     # CUDA runs asynchronously: time the kernels, not their launch
    started = time.perf_counter()
    with torch.no_grad():
        for feed in feeds:
            fn(**feed)
    sync(device)
    return time.perf_counter() - started


def _key(runner: EarlyExit, i: int) -> str:
    return runner.compiled.generated.outputs[i]


@dataclass
class Verdict:
    """What the sweep says about the budgeted-prediction curve (see :func:`verdict`)."""

    monotone: bool
    drops: list[tuple[SweepRow, SweepRow]]     # (better, later worse) pairs along rising MACs
    highest: SweepRow                          # the highest threshold's row
    deepest: SweepRow                          # the deepest exit alone
    close: SweepRow | None                     # cheapest row within ``tolerance`` of the deepest exit


def verdict(rows: list[SweepRow], singles: list[SweepRow], tolerance: float = 0.005) -> Verdict:
    """Is accuracy non-decreasing as the thresholds (and so the MACs) rise; the highest
    threshold's row; the cheapest threshold whose accuracy is within ``tolerance`` (0.005: half
    a point) of the deepest exit alone."""
    ordered = sorted(rows, key=lambda r: r.threshold)
    drops, best = [], None
    for r in ordered:
        if best is not None and r.accuracy < best.accuracy - 1e-12:
            drops.append((best, r))
        if best is None or r.accuracy > best.accuracy:
            best = r
    deepest = singles[-1]
    close = [r for r in rows if r.accuracy >= deepest.accuracy - tolerance - 1e-12]
    return Verdict(not drops, drops, ordered[-1], deepest, min(close, key=lambda r: r.macs) if close else None)


def format_sweep(rows: list[SweepRow], singles: list[SweepRow]) -> str:
    names = [s.exit_name for s in singles]
    batches = [t.batch for t in rows[0].timings] if rows and rows[0].timings else []
    speed = "".join(f" {'speed-up @' + str(b):>24}" for b in batches)
    head = f"{'threshold':>9} {'accuracy':>9} {'MACs/sample':>12}{speed}  share per exit ({', '.join(names)})"
    lines = [head, "-" * min(len(head), 120)]
    for r in rows:
        lines.append(f"{r.threshold:>9.4g} {100 * r.accuracy:>8.2f}% {r.macs:>12,.0f}"
                     + "".join(f" {str(t):>24}" for t in r.timings) + "  "
                     + " ".join(f"{100 * s:.0f}%" for s in r.shares))
    lines += ["", "each exit alone:"]
    lines += [f"  {s.exit_name}: {100 * s.accuracy:.2f}% at {s.macs:,.0f} MACs/sample" for s in singles]
    if batches:
        rounds = len(rows[0].timings[0].ratios)
        lines += ["", f"speed-up: {names[-1]} alone (its inference build) over early exit, wall time, median "
                      f"(min-max) of {rounds} interleaved rounds, at batch {' and '.join(map(str, batches))}"]
    lines += [""] + _verdict_lines(verdict(rows, singles))
    return "\n".join(lines) + "\n"


def _verdict_lines(v: Verdict) -> list[str]:
    pct = lambda r: f"{100 * r.accuracy:.2f}%"            # noqa: E731
    if v.monotone:
        out = ["curve: monotone (accuracy never falls as the threshold rises)"]
    else:
        peak = max((a for a, _ in v.drops), key=lambda r: r.accuracy)
        low = min((b for _, b in v.drops if b.threshold > peak.threshold), key=lambda r: r.accuracy)
        out = [f"curve: NOT monotone: {pct(peak)} at threshold {peak.threshold:g}, then down to {pct(low)} "
               f"at {low.threshold:g} ({len(v.drops)} higher threshold(s) below an earlier accuracy)"]
        if low.samples:           # on a small test set a drop may be one sample, which says little
            n = round((peak.accuracy - low.accuracy) * low.samples)
            out.append(f"  that drop is {n} of {low.samples} scored samples (one sample is "
                       f"{100 / low.samples:.2f} points)")
    same = "equals" if abs(v.highest.accuracy - v.deepest.accuracy) < 1e-12 else "differs from"
    out.append(f"highest threshold {v.highest.threshold:g}: {pct(v.highest)}, {same} {v.deepest.exit_name} "
               f"alone ({pct(v.deepest)})")
    if v.close is None:
        out.append(f"no threshold comes within 0.5 points of {v.deepest.exit_name}")
    else:
        c = v.close
        timed = ", ".join(f"{t} at batch {t.batch}" for t in c.timings)
        out.append(f"within 0.5 points of {v.deepest.exit_name} ({pct(c)} vs {pct(v.deepest)}): threshold "
                   f"{c.threshold:g}, {100 * c.macs / v.deepest.macs:.0f}% of its MACs"
                   + (f"; measured speed-up {timed}" if timed else ""))
    return out


def plot(rows: list[SweepRow], singles: list[SweepRow], out) -> object:
    """Left: accuracy against mean MACs per sample (the budgeted-prediction curve, each exit alone
    as a cross); right: accuracy against the threshold.  ``out``: .svg, or .png and other
    formats Pillow writes."""
    from pathlib import Path

    from . import plot_log as pl
    curve = sorted((r.macs, 100 * r.accuracy) for r in rows)
    lines = {"early exit": curve} | {s.exit_name: [(s.macs, 100 * s.accuracy)] for s in singles}
    items = _xlabel(pl.panel((0, 0), "accuracy (%) against MACs per sample", lines), "MACs per sample")
    items += _markers(items, lines)
    right = {"early exit": [(min(r.threshold, 1.0), 100 * r.accuracy) for r in rows]}
    items += _xlabel(pl.panel((pl.PANEL[0], 0), "accuracy (%) against the threshold", right), "threshold")
    out = Path(out)
    fmt = None if out.suffix.lower() == ".svg" else pl.raster_format(out)
    if out.suffix.lower() != ".svg" and fmt is None:
        raise NetspecError([Diagnostic("E0800", f"cannot write '{out.name}': unknown image format",
                                       help=["use .svg or .png"])])
    data = pl.to_svg(items).encode() if fmt is None else pl.to_raster(items, fmt)
    return pl.write_atomic(out, data)


def _xlabel(items, text: str) -> list:
    from . import plot_log as pl
    return [pl.Label(it.at, text) if isinstance(it, pl.Label) and it.text == "iteration" else it for it in items]


def _markers(items, lines) -> list:
    """Each series' points marked: squares on the curve, a cross in its colour for each exit."""
    from . import plot_log as pl
    drawn = [it for it in items if isinstance(it, pl.Line) and it.width == 2 and len(it.points) >= 2]
    out = []
    for i, line in enumerate(drawn[0::2][:len(lines)]):      # each series: polyline, then legend swatch
        for x, y in dict.fromkeys(line.points):
            if i == 0:
                out.append(pl.Box((x - 3, y - 3, x + 3, y + 3)))
            else:
                out += [pl.Line([(x - 5, y - 5), (x + 5, y + 5)], line.colour, 2),
                        pl.Line([(x - 5, y + 5), (x + 5, y - 5)], line.colour, 2)]
    return out
