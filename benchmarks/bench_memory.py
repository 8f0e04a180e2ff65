#!/usr/bin/env python
"""Memory: peak tensor memory of one training iteration per BP mode, and a leak check.

    python benchmarks/bench_memory.py [--batch 32] [--leak-iterations 10 100]

What is measured.  On a GPU, ``torch.cuda.max_memory_allocated`` (reset before the iteration,
minus what was allocated before it).  On the CPU, torch's allocations are invisible to
tracemalloc and RSS is blurred by the C allocator keeping freed pages, so ``LiveStorage``
counts them exactly instead: a ``TorchDispatchMode`` that sees every operator (forward and
backward) and records each fresh output storage's bytes until the storage is freed (a weak
reference's callback).  Its peak over one iteration is the most tensor memory the iteration
held at once beyond what was alive before it (weights, optimizer history): activations,
autograd's saved tensors, retained graphs, gradients, update temporaries.  Workspace an
operator frees before returning is not seen.  Reported as ratios to STANDARD.

Leak check: the deep plain digits net trains with each mode's solver file; the memory still
held after iteration 10 and after iteration 100, and the peak of iteration 10 and of
iteration 100, must be equal (a retained graph surviving its iteration would grow both).
"""
from __future__ import annotations

import argparse
import sys
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_schedules import batch_for, build_solvers  # noqa: E402
from benchmarks.common import ROOT  # noqa: E402


class LiveStorage(TorchDispatchMode):
    """Bytes of tensor storage created under this mode and still alive (``current``), and the
    most seen at once since the last ``reset_peak`` (``peak``)."""

    def __init__(self):
        super().__init__()
        self.current = self.peak = 0
        self._refs: dict[int, weakref.ref] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # outputs sharing an input's storage (in-place ops, views) allocate nothing
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor) and t.device.type != "meta"}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                st = t.untyped_storage()
                if id(st) not in inputs and id(st) not in self._refs:
                    self._track(st)
        return out

    def _track(self, st) -> None:
        key, n = id(st), st.nbytes()
        self._refs[key] = weakref.ref(st, lambda _, key=key, n=n: self._free(key, n))
        self.current += n
        self.peak = max(self.peak, self.current)

    def _free(self, key: int, n: int) -> None:
        if self._refs.pop(key, None) is not None:
            self.current -= n

    def reset_peak(self) -> None:
        self.peak = self.current


def iteration_peak(solver, batch: dict, device: torch.device) -> int:
    """Peak bytes held during one iteration beyond what was alive before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        solver.step(1, batches=[batch])
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with LiveStorage() as live:
        solver.step(1, batches=[batch])
        return live.peak


def mode_peaks(batch: int, n: int = 9, device: torch.device = torch.device("cpu")) -> dict:
    """Peak memory of one iteration (the second: optimizer history exists) for every mode."""
    solvers = build_solvers(batch, n, device=device)
    x = batch_for(batch)
    peaks = {}
    for name, s in solvers.items():
        s.step(1, batches=[x])
        peaks[name] = iteration_peak(s, x, device)
    return peaks


DIGITS_SOLVERS = {"STANDARD": "solver_standard", "JOINT": "solver_joint", "RELAY": "solver_relay",
                  "MULTIWAY": "solver_multiway", "MULTIWAY naive": "solver_multiway_naive"}


def leak_check(marks: tuple[int, ...] = (10, 100)) -> dict:
    """Digits net, each mode: (held, peak) after iteration m, for m in ``marks``."""
    from netspec.solve.solver import Solver
    out = {}
    for name, stem in DIGITS_SOLVERS.items():
        solver = Solver(ROOT / "models" / "digits" / f"{stem}.prototxt", log=lambda line: None)
        seen = {}
        with LiveStorage() as live:
            for it in range(1, max(marks) + 1):
                live.reset_peak()
                solver.step(1)
                if it in marks:
                    seen[it] = (live.current, live.peak)
        out[name] = seen
    return out


def markdown(peaks: dict, leaks: dict, batch: int, n: int) -> str:
    lines = [f"| mode | peak MiB of one iteration (ResNet-{6 * n + 2}, 4 exits, batch {batch}) | "
             f"ratio to STANDARD |", "|---|---|---|"]
    for name, p in peaks.items():
        lines.append(f"| {name} | {p / 2**20:.1f} | {p / peaks['STANDARD']:.2f} |")
    if leaks:
        marks = sorted(next(iter(leaks.values())))
        lines += ["", "| mode (digits net) | " + " | ".join(f"held after it. {m} (KiB) | peak of it. {m} (KiB)"
                                                         for m in marks) + " | leak? |",
                  "|---|" + "---|---|" * len(marks) + "---|"]
        for name, seen in leaks.items():
            cells = " | ".join(f"{seen[m][0] / 1024:.1f} | {seen[m][1] / 1024:.1f}" for m in marks)
            same = len({seen[m] for m in marks}) == 1
            lines.append(f"| {name} | {cells} | {'none' if same else '**differs**'} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n", type=int, default=9)
    ap.add_argument("--leak-iterations", type=int, nargs=2, default=[10, 100])
    args = ap.parse_args(argv)
    peaks = mode_peaks(args.batch, args.n)
    leaks = leak_check(tuple(args.leak_iterations))
    print(markdown(peaks, leaks, args.batch, args.n))
    return peaks, leaks


if __name__ == "__main__":
    main()
