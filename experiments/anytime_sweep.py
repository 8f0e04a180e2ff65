"""Is the early-exit curve of the MW-BP digits net monotone, and does regularisation change that?

Each run trains a copy of ``solver_multiway.prototxt`` (README's main command) with one change,
then scores thresholds with ``netspec test --early-exit`` on the 297 test digits, exactly as a
user would (two subprocesses, ``OMP_NUM_THREADS`` as given).  It prints one markdown row per
(config, seed): each exit alone, and the curve's verdict with the size of its largest drop in
test samples, which is what decides monotonicity on a test set this small.

    python -m experiments.anytime_sweep --configs bundled wd5e-4 --seeds 1 2 3 --jobs 2
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from experiments.common import SOLVER_ITERS, net_copy, set_field, solver_copy

THRESHOLDS = "0.5,0.7,0.8,0.9,0.95,0.98,0.99,0.995,0.999,1.01"
TEST_DIGITS, TEST_BATCH = 297, 99
CONFIGS = {   # name -> (solver fields changed, dropout ratio before every classifier or None)
    "bundled": ({}, None),
    "wd5e-4": ({"weight_decay": "0.0005"}, None),
    "wd1e-3": ({"weight_decay": "0.001"}, None),
    "dropout0.5": ({}, 0.5),
    "800it+wd5e-4": ({"max_iter": "800", "stepsize": "533", "weight_decay": "0.0005"}, None),
    "naive": ({"multiway_param": "{ shared_forward: false }"}, None),
}


def with_dropout(net: Path, ratio: float) -> None:
    """An in-place Dropout on each exit's pooled features, just before its InnerProduct."""
    text = net.read_text()
    for head in re.findall(r'layer \{ name: "(\w+)_fc"', text):
        text = text.replace(f'layer {{ name: "{head}_fc"',
                            f'layer {{ name: "{head}_drop" type: "Dropout" bottom: "{head}_pool" '
                            f'top: "{head}_pool" dropout_param {{ dropout_ratio: {ratio} }} }}\n'
                            f'layer {{ name: "{head}_fc"', 1)
    net.write_text(text)


def netspec(args: list[str], threads: int, cwd: Path) -> str:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    done = subprocess.run([sys.executable, "-m", "netspec", *args], env=env, cwd=cwd,
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"netspec {args[0]} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def run(config: str, seed: int, threads: int, iters: int | None, workdir: Path) -> dict:
    """Train one copy, sweep its thresholds; the exits' accuracies and the curve's verdict."""
    edits, dropout = CONFIGS[config]
    d = workdir / f"{config}_s{seed}"
    d.mkdir(parents=True)
    net = net_copy(d)
    if dropout:
        with_dropout(net, dropout)
    budget = iters or int(edits.get("max_iter", SOLVER_ITERS))      # --iters overrides the config's
    solver = solver_copy(d, "MULTIWAY", seed, budget, net)
    text = set_field(solver.read_text(), "snapshot_prefix", f'"{d / "snap"}"')
    for field, value in edits.items():
        if field != "max_iter":                                     # the budget, set above
            text = set_field(text, field, value)
    solver.write_text(text)
    netspec(["train", "--solver", str(solver)], threads, d)
    weights = max(d.glob("snap_iter_*.netspec"), key=lambda p: p.stat().st_mtime)
    out = netspec(["test", "--model", str(net), "--weights", str(weights), "--early-exit", THRESHOLDS,
                   "--repeats", "0", "--iterations", str(TEST_DIGITS // TEST_BATCH)], threads, d)
    return parse(out, config, seed)


def parse(out: str, config: str, seed: int) -> dict:
    exits = {n.removesuffix("_loss"): float(a) for n, a in re.findall(r"^\s+(\w+): ([\d.]+)% at", out, re.M)}
    drop = re.search(r"that drop is (\d+) of", out)
    verdict = "monotone" if "curve: monotone" in out else f"falls by {drop.group(1)} sample(s)"
    return {"config": config, "seed": seed, "exits": exits, "verdict": verdict}


def row(r: dict) -> str:
    accs = " / ".join(f"{a:.2f}" for a in r["exits"].values())
    return f"| {r['config']} | {r['seed']} | {accs} | {r['verdict']} |"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run (default 1)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time")
    p.add_argument("--iters", type=int, help="override every run's max_iter (smoke runs)")
    args = p.parse_args(argv)
    jobs = [(c, s) for c in args.configs for s in args.seeds]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        results = pool.map(lambda j: run(*j, args.threads, args.iters, Path(tmp)), jobs)
        print("| config | seed | exit1 / exit2 / exit3 / main (%) | early-exit curve |")
        print("|---|---|---|---|")
        for r in results:
            print(row(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
