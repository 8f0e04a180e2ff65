"""Per-iteration cost of every BP mode on the digits net, measured interleaved.

The accuracy runs of ``experiments.run_modes`` each take tens of seconds, so on a
shared machine a neighbour's job can slow one mode's whole run.  Here every mode's
solver is built first, then the modes take turns: each round runs ``burst``
iterations of every mode in sequence, and a mode's cost relative to STANDARD is
taken per round (both measured within seconds of each other), then summarised by
the median over rounds.

    python -m experiments.cost --rounds 10 --burst 20
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from experiments.common import MODES, net_copy, solver_copy, solver_net
from netspec.solve.solver import Solver


def _median_ms(solver: Solver, n: int) -> float:
    """Median wall time (ms) of the next ``n`` training iterations."""
    return 1000 * statistics.median(r["seconds"] for r in solver.step(n))


def measure(modes: list[str], rounds: int, burst: int, seed: int = 1, init: str = "msra",
            warmup: int = 5) -> dict:
    """{mode: {"ms": [per round], "ratio": [per round, over STANDARD]}} (STANDARD must be in modes)."""
    with tempfile.TemporaryDirectory(prefix="netspec-cost-") as tmp:
        work = Path(tmp)
        budget = warmup + rounds * burst
        nets = {m: net_copy(work, init, net=solver_net(m)) for m in modes}   # each mode's own scopes
        solvers = {m: Solver(solver_copy(work, m, seed, budget, nets[m], same_weighting=True),
                             log=lambda line: None, num_workers=0) for m in modes}
        for s in solvers.values():
            s.step(warmup)
        ms = {m: [] for m in modes}
        for _ in range(rounds):
            for m, s in solvers.items():
                ms[m].append(_median_ms(s, burst))
    return {m: {"ms": ms[m], "ratio": [a / b for a, b in zip(ms[m], ms["STANDARD"])]} for m in modes}


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def table(cost: dict) -> str:
    """Markdown: median ms/iter and the median (quartiles) of the per-round ratio to STANDARD."""
    lines = ["| mode | ms/iter (median of rounds) | × STANDARD, median (quartiles) |", "|---|---|---|"]
    for m, c in cost.items():
        q1, q2, q3 = _quartiles(c["ratio"])
        lines.append(f"| {m} | {statistics.median(c['ms']):.1f} | {q2:.2f} ({q1:.2f}-{q3:.2f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: measure and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--burst", type=int, default=20, help="iterations per mode per round")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(table(measure(list(MODES), args.rounds, args.burst)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
