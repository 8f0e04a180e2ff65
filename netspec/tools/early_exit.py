"""Anytime prediction: a multi-exit net that lets each sample leave at its first confident exit.

``EarlyExit(net, threshold)`` evaluates the exits from the cheapest to the costliest.  At exit
k the samples whose largest softmax probability is at least ``threshold`` leave with that
exit's class; only the samples still in run the layers exit k + 1 needs beyond what has
run (the inference build's statements, stage by stage, on the remaining rows of every
batch-major blob).  The last exit takes every sample left.

``sweep`` scores a list of thresholds on a net's TEST data: accuracy, mean MACs per sample
(each sample pays for every layer that ran for it), the share leaving at each exit, and the
measured wall time against the full net's inference forward (all exits) on the same batches.
``plot`` draws accuracy against MACs (the budgeted-prediction curve) with each single exit as
a point.
"""
from __future__ import annotations

import ast
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
class SweepRow:
    threshold: float | None          # None: one exit alone (``exit_name``)
    accuracy: float
    macs: float                      # mean MACs per sample
    shares: list[float] = field(default_factory=list)
    seconds: float = 0.0
    full_seconds: float = 0.0
    exit_name: str = ""


def sweep(net, thresholds: list[float], iterations: int, label: str = "label") -> tuple[list[SweepRow], list[SweepRow]]:
    """Score every threshold (and every single exit) on ``iterations`` batches of the net's data."""
    runners = [EarlyExit(net, t) for t in thresholds]
    base = runners[0] if runners else EarlyExit(net, 1.0)
    batches = [{k: v for k, v in next(net._data()).items()} for _ in range(iterations)]
    rows = [SweepRow(t, 0.0, 0.0, [0.0] * len(base.exits)) for t in thresholds]
    singles = [SweepRow(None, 0.0, float(m), exit_name=name) for name, m in zip(base.names, base.macs)]
    total = 0
    full = base.compiled.module
    for batch in batches:
        feed = {k: v.to(net.device) for k, v in batch.items() if k in base.compiled.generated.inputs}
        y = batch[label].long().view(-1).cpu()
        total += len(y)
        with torch.no_grad():
            outs = full(**feed)
        for i, s in enumerate(singles):
            s.accuracy += float((outs[_key(base, i)].argmax(1).cpu() == y).sum())
        for r, run in zip(rows, runners):
            p = run(**feed)
            with torch.no_grad():
                full_s, run_s = _paired(lambda: full(**feed), lambda: run(**feed))
            r.seconds += run_s
            r.full_seconds += full_s
            r.accuracy += float((p.classes == y).sum())
            r.macs += float(sum(p.macs[k] for k in p.exits.tolist()))
            for k in range(len(r.shares)):
                r.shares[k] += float((p.exits == k).sum())
    for r in rows:
        r.accuracy, r.macs, r.shares = r.accuracy / total, r.macs / total, [s / total for s in r.shares]
    for s in singles:
        s.accuracy /= total
    return rows, singles


def _paired(a, b, repeats: int = 12) -> tuple[float, float]:
    """Seconds per call of ``a`` and of ``b``, alternated ``repeats`` times; the lower quartile
    of each (the least disturbed by other jobs on a shared machine)."""
    ta, tb = [], []
    for _ in range(repeats):
        for fn, into in ((a, ta), (b, tb)):
            started = time.perf_counter()
            fn()
            into.append(time.perf_counter() - started)
    return sorted(ta)[repeats // 4], sorted(tb)[repeats // 4]


def _key(runner: EarlyExit, i: int) -> str:
    return runner.compiled.generated.outputs[i]


def format_sweep(rows: list[SweepRow], singles: list[SweepRow]) -> str:
    names = [s.exit_name for s in singles]
    head = f"{'threshold':>9} {'accuracy':>9} {'MACs/sample':>12} {'speed-up':>9}  share per exit ({', '.join(names)})"
    lines = [head, "-" * min(len(head), 100)]
    for r in rows:
        speed = r.full_seconds / r.seconds if r.seconds else float("nan")
        lines.append(f"{r.threshold:>9.3g} {100 * r.accuracy:>8.2f}% {r.macs:>12,.0f} {speed:>8.2f}x  "
                     + " ".join(f"{100 * s:.0f}%" for s in r.shares))
    lines += ["", "each exit alone:"]
    lines += [f"  {s.exit_name}: {100 * s.accuracy:.2f}% at {s.macs:,.0f} MACs/sample" for s in singles]
    main = singles[-1]
    close = [r for r in rows if r.accuracy >= main.accuracy - 0.005]
    if close:
        best = min(close, key=lambda r: r.macs)
        lines.append(f"within 0.5 points of {main.exit_name} ({100 * best.accuracy:.2f}% vs "
                     f"{100 * main.accuracy:.2f}%): threshold {best.threshold:g}, "
                     f"{100 * best.macs / main.macs:.0f}% of its MACs, measured speed-up "
                     f"{best.full_seconds / best.seconds:.2f}x against the full net")
    return "\n".join(lines) + "\n"


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
