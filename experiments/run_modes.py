"""Train the deep plain digits net under every BP mode and tabulate each exit's test error.

The miniature of the MW-BP paper's Table 6: STANDARD, JOINT, RELAY, MULTIWAY (the
paper's MW-BP), Naive MULTIWAY (no shared forward) and the MW-BP/Relay hybrid (MULTIWAY
restricted by the Relay scopes) on identical seeds, data and iteration budgets.
Each (init, mode, seed) run trains ``--iters`` iterations from the bundled solver
file (only the seed, the budget, the net's path and init are changed, and JOINT and
RELAY get the MULTIWAY solvers' loss weighting, as in the paper), then tests on the
297 test digits.  STANDARD BP never trains the auxiliary exits, so, as
in the paper (Table 6, footnote 3), its intermediate exits are read out by training
only their classifiers on the frozen STANDARD trunk for ``--probe-iters``
iterations.  Results go to a JSON file; the markdown table is printed.

    python -m experiments.run_modes --seeds 1 2 3 --iters 400 --out /tmp/modes.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from experiments.common import (EXITS, MODES, SOLVER_FILES, SOLVER_ITERS, net_copy, solver_copy,
                                solver_net, write_atomic)
from netspec.solve.solver import Solver, load_weights

WARMUP = 5  # first iterations excluded from ms/iter (allocator and compile warm-up)
INITS = ("gaussian", "msra")


def _errors(solver: Solver) -> dict[str, float]:
    """Test error (%) of every exit on the whole test set (the solver's test_iter batches)."""
    outputs = solver.test(0)["outputs"]
    return {e: 100 * (1 - outputs[f"{e}_accuracy"]) for e in EXITS}


def _ms_per_iter(solver: Solver) -> float:
    """Median wall time of one training iteration (median: the CPU is shared, outliers are others' jobs)."""
    seconds = [r["seconds"] for r in solver.history[WARMUP:]] or [r["seconds"] for r in solver.history]
    return 1000 * statistics.median(seconds)


def probe_exits(trained: Solver, seed: int, iters: int, workdir: Path, init: str) -> dict[str, float]:
    """Train only the exit classifiers on ``trained``'s frozen trunk; their test error (%).

    A JOINT solver over a copy of the net whose convolutions have lr_mult 0 starts
    from ``trained``'s weights; every convolution must come across, only the exit
    classifiers (pruned from a STANDARD training module) keep their initial values.
    """
    net = net_copy(workdir, init, freeze_trunk=True)
    probe = Solver(solver_copy(workdir, "JOINT", seed, iters, net, tag="_probe"),
                   log=lambda line: None, num_workers=0)
    unfilled = load_weights(probe.module, trained.module.state_dict(), "the STANDARD run")
    trunk = [k for k in unfilled if not k.startswith("exit")]
    if trunk:
        raise RuntimeError(f"the probe net did not receive the trained trunk: {trunk}")
    probe.step(iters)
    errors = _errors(probe)
    return {e: errors[e] for e in EXITS if e != "main"}


def train_one(mode: str, seed: int, iters: int, workdir: Path, init: str = "msra",
              probe_iters: int = 0) -> dict:
    """Train one (init, mode, seed) run; test error (%) per exit and ms per iteration."""
    net = net_copy(workdir, init, net=solver_net(mode))      # each mode's own copy (scopes or none)
    solver = Solver(solver_copy(workdir, mode, seed, iters, net, same_weighting=True),
                    log=lambda line: None, num_workers=0)
    start = time.perf_counter()
    solver.step(iters)
    wall = time.perf_counter() - start
    rec = {"init": init, "mode": mode, "seed": seed, "iters": iters, "wall_s": wall,
           "ms_per_iter": _ms_per_iter(solver), "error": _errors(solver),
           "final_loss": solver.history[-1]["losses"] if solver.history else {}, "probed": []}
    if mode == "STANDARD" and probe_iters:
        rec["error"].update(probe_exits(solver, seed, probe_iters, workdir, init))
        rec["probed"], rec["probe_iters"] = [e for e in EXITS if e != "main"], probe_iters
    return rec


def _log_line(rec: dict) -> str:
    errors = " ".join(f"{e} {v:5.2f}%" for e, v in rec["error"].items())
    return (f"{rec['init']:8s} {rec['mode']:15s} seed {rec['seed']}: {errors}  "
            f"{rec['ms_per_iter']:.1f} ms/iter  ({rec['wall_s']:.0f} s)")


def run(modes: list[str], seeds: list[int], iters: int, out: Path | None, log=print,
        inits=("msra",), probe_iters: int = 0, keep: list[dict] = ()) -> list[dict]:
    """Every init x seed x mode (modes side by side per seed, so cost ratios share conditions).

    ``keep``: earlier runs to report with these (a run this call repeats is replaced).
    The results file is rewritten after each run, so a crash keeps the finished ones.
    """
    planned = {(i, m, s) for i in inits for m in modes for s in seeds}
    results = [r for r in keep if (r["init"], r["mode"], r["seed"]) not in planned]
    meta = {"iters": iters, "seeds": seeds, "inits": list(inits), "probe_iters": probe_iters,
            "threads": torch.get_num_threads(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="netspec-modes-") as tmp:
        for init in inits:
            for seed in seeds:
                for mode in modes:
                    results.append(train_one(mode, seed, iters, Path(tmp), init, probe_iters))
                    log(_log_line(results[-1]))
                    if out:  # seeds and inits of every run in the file, the kept ones included
                        meta["seeds"] = sorted({r["seed"] for r in results})
                        meta["inits"] = list(dict.fromkeys(r["init"] for r in results))
                        write_atomic(out, json.dumps({**meta, "runs": results}, indent=1))
    return results


def _mean_std(values: list[float], digits: int = 2) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def _ratios(results: list[dict], mode: str, init: str) -> list[float]:
    """ms/iter of ``mode`` over STANDARD's, per seed (each pair ran side by side)."""
    base = {r["seed"]: r["ms_per_iter"] for r in results if r["init"] == init and r["mode"] == "STANDARD"}
    return [r["ms_per_iter"] / base[r["seed"]] for r in results
            if r["init"] == init and r["mode"] == mode and r["seed"] in base]


def table(results: list[dict], init: str | None = None) -> str:
    """Markdown: test error (%) of every exit per mode, mean ± std over seeds, ms/iter, ratio.

    A STANDARD exit marked * was read out by a classifier trained on the frozen trunk.
    """
    init = init or results[0].get("init", "msra")
    runs = [r for r in results if r.get("init", "msra") == init]
    lines = ["| mode | " + " | ".join(EXITS) + " | ms/iter | × STANDARD |", "|---" * (len(EXITS) + 3) + "|"]
    for mode in dict.fromkeys(r["mode"] for r in runs):
        mine = [r for r in runs if r["mode"] == mode]
        probed = set(mine[0].get("probed", []))
        cells = [_mean_std([r["error"][e] for r in mine]) + ("*" if e in probed else "") for e in EXITS]
        ratios = _ratios(results, mode, init)
        cells += [_mean_std([r["ms_per_iter"] for r in mine], 1), _mean_std(ratios) if ratios else "n/a"]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed(results: list[dict], init: str, exit_: str = "main") -> str:
    """Markdown: ``exit_``'s test error (%) of every run, one column per seed (the spread behind ±)."""
    runs = [r for r in results if r.get("init", "msra") == init]
    seeds = sorted({r["seed"] for r in runs})
    lines = ["| mode | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---" * (len(seeds) + 1) + "|"]
    for mode in dict.fromkeys(r["mode"] for r in runs):
        err = {r["seed"]: r["error"][exit_] for r in runs if r["mode"] == mode}
        lines.append(f"| {mode} | " + " | ".join(f"{err[s]:.1f}" if s in err else "" for s in seeds) + " |")
    return "\n".join(lines)


def tables(results: list[dict]) -> str:
    """Per init: the mean ± std table, then the main exit's error per seed."""
    parts = []
    for init in dict.fromkeys(r.get("init", "msra") for r in results):
        seeds = sorted({r["seed"] for r in results if r.get("init", "msra") == init})
        parts.append(f"**init {init}**, seeds {', '.join(map(str, seeds))}\n\n{table(results, init)}\n\n"
                     f"main exit's test error (%) per seed, init {init}:\n\n{per_seed(results, init)}")
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Command line: train, write the JSON results, print the markdown tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--iters", type=int, default=SOLVER_ITERS,
                   help="iterations per run (default: the bundled solvers' max_iter)")
    p.add_argument("--probe-iters", type=int, default=300,
                   help="iterations training STANDARD's exit classifiers on its frozen trunk (0: none)")
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(SOLVER_FILES))
    p.add_argument("--inits", nargs="+", default=["msra"], choices=INITS)
    p.add_argument("--out", type=Path, default=None, help="JSON results file")
    p.add_argument("--table-only", action="store_true", help="only print the tables of an existing --out")
    args = p.parse_args(argv)
    if args.table_only:
        if not args.out or not args.out.exists():
            p.error("--table-only needs an existing --out JSON file")
        results = json.loads(args.out.read_text())["runs"]
    else:
        results = run(args.modes, args.seeds, args.iters, args.out, inits=args.inits,
                      probe_iters=args.probe_iters)
    print(tables(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
