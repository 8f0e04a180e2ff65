#!/usr/bin/env python
"""Schedule cost: one training iteration of each BP mode on ResNet-56 with 4 auxiliary exits.

    python benchmarks/bench_schedules.py [--batch 32] [--repeats 5] [--iterations 1] [--profile]

Each mode is a real ``Solver`` (SGD, momentum 0.9, weight decay 1e-4, MULTIWAY_POWER nu=2
loss weights for every mode but STANDARD) on the MW-BP paper's MwResNet-56 (exits after the
residual blocks ending at weight layers 15/25/35/45, ``benchmarks/resnet56.py``); RELAY uses
Relay BP's c = 1 scopes.  The five solvers run side by side, interleaved, on one fixed batch
(``Solver.step(1, batches=...)``), and each iteration's time is reported as a ratio to
STANDARD's from the same repeat.

The cost model prices each schedule from the net itself: multiply-adds of every Forward
step's layers plus twice those of each Backward step's layers (input and weight gradients),
as a ratio to STANDARD.  The MW-BP paper's rough figure is K/2 + 1 (K auxiliary losses);
Table 9 has naive (a forward per loss) about 3x the shared forward.  ``--profile`` also
splits each mode's time into forward / backward / update steps (wall clock, one thread)
and prints torch.profiler's top operators.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import interleaved, profile_top, ratio_stats  # noqa: E402
from benchmarks.resnet56 import PAPER_EXITS, exit_layers, resnet_cifar  # noqa: E402
from netspec.compile.codegen import required_layers  # noqa: E402
from netspec.schedule import Backward, Forward  # noqa: E402
from netspec.solve.executor import loss_tops  # noqa: E402
from netspec.solve.solver import Solver  # noqa: E402

SOLVER = """net: "{net}"
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0001
lr_policy: "fixed"
max_iter: 1000
display: 0
random_seed: 1
solver_mode: {solver_mode}
bp_mode: {mode}
primary_loss: "loss"
{extra}"""
POWER = "loss_weight_schedule { type: MULTIWAY_POWER nu: 2 }\n"
MODES = {"STANDARD": ("STANDARD", "mwbp", ""),
         "JOINT": ("JOINT", "mwbp", POWER),
         "RELAY": ("RELAY", "relay", POWER),
         "MULTIWAY": ("MULTIWAY", "mwbp", POWER),
         "MULTIWAY naive": ("MULTIWAY", "mwbp", POWER + "multiway_param { shared_forward: false }\n")}


def build_solvers(batch: int, n: int = 9, k: int = 4, modes=tuple(MODES), solver_extra: str = "",
                  device: torch.device = torch.device("cpu")) -> dict:
    """One Solver per mode on a MwResNet-(6n+2) with ``k`` exits (the paper's 15/25/35/45 for n=9)."""
    exits = PAPER_EXITS if (n, k) == (9, 4) else exit_layers(n, k)
    solvers = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, relay in (("mwbp", False), ("relay", True)):
            Path(tmp, f"{kind}.prototxt").write_text(resnet_cifar(n, batch, exits=exits, relay=relay))
        for name in modes:
            mode, kind, extra = MODES[name]
            path = Path(tmp, f"solver_{name.replace(' ', '_')}.prototxt")
            path.write_text(SOLVER.format(net=Path(tmp, f"{kind}.prototxt"), mode=mode, extra=extra + solver_extra,
                                          solver_mode="GPU" if device.type == "cuda" else "CPU"))
            solvers[name] = Solver(path, log=lambda line: None)
    return solvers


def batch_for(batch: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"data": torch.randn(batch, 3, 32, 32, generator=g),
            "label": torch.randint(0, 10, (batch,), generator=g).float()}


# -- the cost model --------------------------------------------------------------------------
def layer_madds(solver: Solver) -> dict[str, float]:
    """Forward multiply-adds of every layer with a weight blob: top size x weight fan-in."""
    net, params = solver.net, solver.executor.params
    out = {}
    for node in net.graph.layers():
        w = params.get(f"{node.name}/0")
        top = net.shapes.get(node.tops[0]) if node.tops else None
        if w is not None and top is not None and w.dim() > 1:
            out[node.name] = float(torch.Size(top).numel()) * w[0].numel()
    return out


def schedule_madds(solver: Solver) -> float:
    """Multiply-adds of one iteration: Forward steps' layers once, Backward steps' twice."""
    net, madds = solver.net, layer_madds(solver)
    total = 0.0
    for step in solver.schedule.steps:
        if isinstance(step, Forward):
            layers = required_layers(net, loss_tops(net, step.losses))
            total += sum(madds.get(n.name, 0.0) for n in layers)
        elif isinstance(step, Backward):
            owners = {key.split("/")[0] for key in step.params}
            total += 2 * sum(madds.get(name, 0.0) for name in owners)
    return total


def layer_times(solver: Solver, repeats: int = 3) -> tuple[dict, dict]:
    """(forward ms, backward ms) of every layer of the solver's training module, timed one
    layer at a time (``netspec time``'s isolated passes, in the solver's memory format)."""
    from netspec.tools.timing import Clock, layer_pass, synthetic_inputs
    compiled, device = solver.executor.main, solver.executor.device
    inputs = synthetic_inputs(compiled, device)
    if solver.executor.channels_last:
        inputs = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                  for k, v in inputs.items()}
    clock, fwd, bwd = Clock(device), {}, {}
    layer_pass(compiled, inputs, clock, {}, {})                 # warm-up
    for _ in range(repeats):
        layer_pass(compiled, inputs, clock, fwd, bwd)
    clock.flush()
    return {k: v / repeats for k, v in fwd.items()}, {k: v / repeats for k, v in bwd.items()}


def schedule_time_model(solver: Solver, times: tuple[dict, dict]) -> float:
    """Milliseconds of one iteration priced from per-layer times: a Forward step pays each
    layer it runs once, a Backward step each layer between its losses and its parameters
    (the losses' ancestors that descend from a parameter owner).  Unlike the MAdds model it
    sees that layers of equal MAdds do not cost the same (early, wide-resolution stages)."""
    fwd, bwd = times
    net, graph, total = solver.net, solver.net.graph, 0.0
    for step in solver.schedule.steps:
        if isinstance(step, Forward):
            total += sum(fwd.get(n.name, 0.0) for n in required_layers(net, loss_tops(net, step.losses)))
        elif isinstance(step, Backward):
            owners = {key.split("/")[0] for key in step.params}
            path = set(step.losses).union(*(graph.ancestors(l) for l in step.losses))
            reached = owners.union(*(graph.descendants(o) for o in owners))
            total += sum(bwd.get(name, 0.0) for name in path & reached)
    return total


# -- where the time goes ---------------------------------------------------------------------
@contextmanager
def step_clock(executor):
    """Time the executor's forward, backward and update steps (wrapping its bound methods)."""
    spent = {"forward": 0.0, "backward": 0.0, "update": 0.0}
    originals = {"forward": executor.forward, "backward": executor._backward, "update": executor._update}

    def timed(kind):
        def run(*args, **kw):
            t0 = time.perf_counter()
            try:
                return originals[kind](*args, **kw)
            finally:
                spent[kind] += time.perf_counter() - t0
        return run
    executor.forward, executor._backward, executor._update = (timed(k) for k in ("forward", "backward", "update"))
    try:
        yield spent
    finally:
        for attr in ("forward", "_backward", "_update"):
            delattr(executor, attr)       # back to the class's methods


def breakdown(solver: Solver, batch: dict, iterations: int = 2) -> dict[str, float]:
    """Seconds per iteration spent in forward / backward / update steps."""
    with step_clock(solver.executor) as spent:
        for _ in range(iterations):
            solver.step(1, batches=[batch])
    return {k: v / iterations for k, v in spent.items()}


def measure(batch: int, repeats: int, iterations: int, profile: bool = False, n: int = 9,
            device: torch.device = torch.device("cpu")) -> dict:
    """Time every mode side by side; returns rows (ratios to STANDARD) and the cost model."""
    solvers = build_solvers(batch, n, device=device)
    x = batch_for(batch)
    runs = {name: (lambda s=s: s.step(1, batches=[x])) for name, s in solvers.items()}
    times = interleaved(runs, repeats, iterations, device=device)
    model = {name: schedule_madds(s) for name, s in solvers.items()}
    per_layer = layer_times(solvers["MULTIWAY"]) if device.type == "cpu" else None    # has every layer
    timed = {name: schedule_time_model(s, per_layer) for name, s in solvers.items()} if per_layer else {}
    rows = []
    for name, s in solvers.items():
        med, lo, hi = ratio_stats(times[name], times["STANDARD"])
        rows.append({"mode": name, "ms": 1e3 * statistics.median(times[name]), "ratio": med,
                     "ratio_min": lo, "ratio_max": hi, "model": model[name] / model["STANDARD"],
                     "madds_g": model[name] / 1e9, "steps": len(s.schedule.steps),
                     "time_model": timed[name] / timed["STANDARD"] if timed else float("nan")})
    result = {"rows": rows, "batch": batch, "repeats": repeats, "iterations": iterations,
              "k": len(solvers["STANDARD"].net.losses) - 1, "times": times}
    if profile and device.type == "cpu":        # wall-clock step split: CPU only
        result["breakdown"] = {name: breakdown(s, x) for name, s in solvers.items()}
        result["profile"] = {name: profile_top(runs[name], rows=10) for name in ("RELAY", "MULTIWAY")}
    return result


def markdown(result: dict) -> str:
    k = result["k"]
    lines = ["| mode | ms/iter | ratio to STANDARD (median) | range | cost model (MAdds ratio) | "
             "GMAdds/iter | time model (per-layer ms ratio) |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['mode']} | {r['ms']:.0f} | {r['ratio']:.2f} | {r['ratio_min']:.2f}-"
                     f"{r['ratio_max']:.2f} | {r['model']:.2f} | {r['madds_g']:.2f} | {r['time_model']:.2f} |")
    lines.append(f"\nK = {k} auxiliary losses: the MW-BP paper's estimate K/2+1 = {k / 2 + 1:.1f}.")
    if "breakdown" in result:
        lines += ["", "| mode | forward ms | backward ms | update ms |", "|---|---|---|---|"]
        for name, b in result["breakdown"].items():
            lines.append(f"| {name} | {1e3 * b['forward']:.0f} | {1e3 * b['backward']:.0f} | "
                         f"{1e3 * b['update']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = measure(args.batch, args.repeats, args.iterations, args.profile)
    print(markdown(result))
    for name, table in result.get("profile", {}).items():
        print(f"## {name}\n{table}")
    return result


if __name__ == "__main__":
    main()
