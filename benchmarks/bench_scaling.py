"""Data-parallel scaling: step time with 1 and 2 processes, per BP mode, and what the
gradient reductions cost (issue 9).

    python benchmarks/bench_scaling.py [--modes STANDARD JOINT RELAY MULTIWAY] [--iters 30]
                                       [--threads 1] [--out table.md]

For every mode, on the bundled digits net (12 convolutions, 4 losses, global batch 64):

* ``1 proc``: one process, batch 64;
* ``2 procs``: two gloo ranks on loopback, 32 each;
* ``2 alone``: the same two processes side by side, each on its 32-record slice, with
  no communication at all: the same compute and the same contention for the cores.

Communication fraction = 1 - t(2 alone) / t(2 procs): the part of a data-parallel step
that exists only because the ranks exchange gradients (measured side by side, so the
machine's load affects both alike).  ``exposed`` is the time RELAY/MULTIWAY's reducer
spent blocked waiting for its all-reduces (communication not hidden behind backward).
``reduced`` counts the gradient values each rank all-reduces per iteration and the
collectives that carry them: MULTIWAY reduces every loss's scope separately (a parameter
in k scopes is reduced k times), JOINT reduces the union once.
Every process runs ``--threads`` torch threads (default 1: one core per rank, as one GPU
per rank).  Step times are medians over ``--iters`` iterations after 5 warm-up iterations, the
fastest of ``--rounds`` repeats.  ``all-reduce alone`` times one iteration's gradient
collectives (same bucket sizes, same two processes) without any compute, and the
communication fraction divides it by the 2-process step time.

Issue 14 (``--overlap``): for RELAY and MULTIWAY, each 2-rank gloo job alternates (ABBA,
``--iters`` iterations each) between all-reduces launched from the gradient hooks during
each restricted backward (``overlap``, the default) and after it (``after``,
``NETSPEC_DIST_OVERLAP=0``), so both see the same processes, load and rank imbalance; at
each ``--bucket-mb``, medians over every round's iterations: step time, time blocked in
``GradReducer.wait`` per iteration; then buckets per iteration, of which launched before
their backward's last gradient, and ``all-reduce alone``: those buckets all-reduced back to
back with no compute (about what overlap could hide).  Then the bucket
all-reduces per iteration with ``iter_size`` 1 and 2 (under DDP, STANDARD and JOINT, counted by
a comm hook; RELAY by its reducer), at the smallest ``--bucket-mb`` so that there are several
buckets:

    python benchmarks/bench_scaling.py --overlap [--bucket-mb 25 0.05] [--iters 30] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ["STANDARD", "JOINT", "RELAY", "MULTIWAY"]
WARMUP = 5


def solver_path(mode: str) -> Path:
    return ROOT / "models" / "digits" / f"solver_{mode.lower()}.prototxt"


# -- one process of a measurement -------------------------------------------------------
def worker(kind: str, mode: str, iters: int, out: str, opts: dict | None = None) -> None:
    """``kind``: "one" (whole batch), "dist" (a gloo rank), "alone" (a rank's slice, no comm).
    ``opts`` (dist, issue 14): ``bucket_mb``, ``iter_size``; ``alternate`` (overlap on/off in one
    job, ``alternating``) or else the bucket all-reduces per iteration (``count_all_reduces``)."""
    import torch
    torch.set_flush_denormal(True)                 # as `netspec train` does
    result = in_process(kind, mode, iters, opts or {})
    if int(os.environ.get("RANK", 0)) == 0:
        Path(out).write_text(json.dumps(result))
    if kind == "dist":
        from netspec.solve.distributed import shutdown
        shutdown()                                 # the solver is garbage by now: see shutdown()


def in_process(kind: str, mode: str, iters: int, opts: dict) -> dict:
    from netspec.solve.solver import Solver
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if kind == "dist":
        from netspec.solve.distributed import BUCKET_MB, DistributedSolver, init_from_env
        solver = DistributedSolver(init_from_env(str(solver_path(mode)), "cpu", 120.0),
                                   solver_path(mode), log=lambda _: None,
                                   bucket_mb=opts.get("bucket_mb", BUCKET_MB))
        solver.param.iter_size = opts.get("iter_size", solver.param.iter_size)
    else:
        Alone = type("Alone", (Solver,), {"shard": (rank, world)})
        solver = Alone(solver_path(mode), log=lambda _: None)
    if opts:
        return alternating(solver, iters) if opts.get("alternate") else count_all_reduces(solver, iters)
    solver.step(WARMUP)
    reducer = getattr(solver.executor, "reducer", None)
    if reducer is not None:
        reducer.waited_s = 0.0
    recs = solver.step(iters)
    return {"step_s": statistics.median(r["seconds"] for r in recs),
            "comm_s": time_collectives(collective_sizes(solver)) if kind == "dist" else None,
            "exposed_s": reducer.waited_s / iters if kind == "dist" and solver.executor.ddp is None
            else None,
            "reduced": reduction_volume(solver) if kind == "dist" else None}


def alternating(solver, iters: int) -> dict:
    """Issue 14: ``2 * iters`` iterations of one job, all-reduces launched from the gradient
    hooks (on) and after each backward (off) in ABBA order, so both see the same processes,
    load and rank imbalance.  Per iteration: step time and time blocked in the reducer."""
    ex, reducer = solver.executor, solver.executor.reducer
    solver.step(WARMUP)                    # the first iteration learns the bucket plans
    samples = {True: {"step": [], "wait": [], "buckets": 0, "early": 0},
               False: {"step": [], "wait": [], "buckets": 0, "early": 0}}
    for i in range(2 * iters):
        ex.overlap = i % 4 in (0, 3)
        got = samples[ex.overlap]
        wait, launched, early = reducer.waited_s, reducer.launched, reducer.early
        got["step"].append(solver.step(1)[-1]["seconds"])
        got["wait"].append(reducer.waited_s - wait)
        got["buckets"] += reducer.launched - launched
        got["early"] += reducer.early - early
    ex.overlap = True
    return {"on" if on else "off": {**got, "buckets": got["buckets"] / iters, "early": got["early"] / iters}
            for on, got in samples.items()} | {"comm_s": time_collectives(reducer_buckets(solver))}


def count_all_reduces(solver, iters: int) -> dict:
    """Bucket all-reduces per iteration (DDP's, or RELAY/MULTIWAY's reducer's) and the median
    step time."""
    reducer = solver.executor.reducer
    calls = count_ddp_all_reduces(solver) if solver.executor.ddp is not None else None
    solver.step(WARMUP)
    before = len(calls) if calls is not None else reducer.launched
    recs = solver.step(iters)
    after = len(calls) if calls is not None else reducer.launched
    return {"all_reduces": (after - before) / iters, "step_s": statistics.median(r["seconds"] for r in recs)}


def count_ddp_all_reduces(solver) -> list:
    """Record each bucket all-reduce DDP launches (a comm hook doing what DDP's default does)."""
    import torch.distributed as dist
    calls, world = [], dist.get_world_size()

    def counting(state, bucket):
        calls.append(bucket.index())
        return dist.all_reduce(bucket.buffer().div_(world), async_op=True).get_future().then(
            lambda f: f.value()[0])
    solver.executor.ddp.register_comm_hook(None, counting)
    return calls


def reducer_buckets(solver) -> list[int]:
    """Values per bucket all-reduce of one RELAY/MULTIWAY iteration (bucketed as the plan does)."""
    from netspec.schedule import Backward
    ex = solver.executor
    return [sum(ex.params[k].numel() for k in keys) for s in ex.schedule.steps if isinstance(s, Backward)
            for keys in ex.reducer.plan(list(s.params), {k: ex.params[k] for k in s.params})]


def collective_sizes(solver) -> list[int]:
    """Values per gradient all-reduce in one iteration: DDP's buckets, or one per backward."""
    from netspec.schedule import Backward
    ex = solver.executor
    if ex.ddp is not None:
        data = ex.ddp._get_ddp_logging_data()
        return [int(b) // 4 for b in str(data.get("bucket_sizes", "0")).split(",")]   # float32 bytes
    return [sum(ex.params[k].numel() for k in s.params)
            for s in ex.schedule.steps if isinstance(s, Backward)]


def time_collectives(sizes: list[int], reps: int = 30) -> float:
    """Median seconds to all-reduce one iteration's gradient buckets, alone (no compute)."""
    import time
    import torch
    import torch.distributed as dist
    tensors = [torch.zeros(n) for n in sizes]
    times = []
    for _ in range(reps):
        dist.barrier()
        start = time.perf_counter()
        for t in tensors:
            dist.all_reduce(t)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def reduction_volume(solver) -> dict:
    """Gradient values all-reduced per iteration, and the collectives (buckets) carrying them."""
    from netspec.schedule import Backward
    ex = solver.executor
    if ex.ddp is not None:
        numel = sum(p.numel() for p in ex.main.module.parameters() if p.requires_grad)
        buckets = str(ex.ddp._get_ddp_logging_data().get("bucket_sizes", "0")).split(",")
        return {"values": numel, "collectives": len(buckets)}
    steps = [s for s in ex.schedule.steps if isinstance(s, Backward)]
    return {"values": sum(ex.params[k].numel() for s in steps for k in s.params),
            "collectives": len(steps)}


# -- the driver -------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(kind: str, mode: str, procs: int, threads: int, iters: int, opts: dict | None = None) -> dict:
    out = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    port, threads = free_port(), str(threads)
    env = lambda r: {**os.environ, "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": str(procs),
                     "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": threads}
    cmd = [sys.executable, __file__, "--worker", kind, mode, str(iters), out, json.dumps(opts or {})]
    running = [subprocess.Popen(cmd, env=env(r), cwd=ROOT) for r in range(procs)]
    if any(p.wait() for p in running):
        raise SystemExit(f"{kind} {mode} failed")
    result = json.loads(Path(out).read_text())
    os.unlink(out)
    return result


def best(results: list[dict]) -> dict:
    """The fastest of repeated measurements (the one least disturbed by other load)."""
    return min(results, key=lambda r: r["step_s"])


def table(rows: list[dict]) -> str:
    lines = ["| mode | 1 proc (ms) | 2 procs (ms) | speed-up | 2 alone (ms) | 1 - alone/2 procs | "
             "all-reduce alone (ms) | comm fraction | exposed wait (ms) | reduced per iter |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        exposed = f"{r['exposed_s'] * 1e3:.1f}" if r["exposed_s"] is not None else "(DDP)"
        lines.append(f"| {r['mode']} | {r['one'] * 1e3:.1f} | {r['dist'] * 1e3:.1f} | "
                     f"{r['one'] / r['dist']:.2f}x | {r['alone'] * 1e3:.1f} | "
                     f"{1 - r['alone'] / r['dist']:.0%} | {r['comm_s'] * 1e3:.1f} | "
                     f"{r['comm_s'] / r['dist']:.1%} | {exposed} | "
                     f"{r['reduced']['values']:,} values in {r['reduced']['collectives']} reductions |")
    return "\n".join(lines)


def overlap_tables(modes: list[str], buckets: list[float], threads: int, iters: int, rounds: int) -> str:
    """Issue 14: overlapped vs after-the-backward all-reduces (alternating within each job;
    medians over every round's iterations), and the all-reduces per iteration with iter_size 1
    and 2 (DDP's for STANDARD/JOINT, the reducer's for RELAY)."""
    med = lambda runs, on, what: statistics.median(x for r in runs for x in r[on][what]) * 1e3
    lines = ["| mode | bucket MB | step ms: overlap / after | blocked in wait ms/iter: overlap / after | "
             "buckets/iter | launched before the last gradient | all-reduce alone (ms/iter) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for mode in [m for m in modes if m in ("RELAY", "MULTIWAY")]:
        for mb in buckets:
            runs = [measure("dist", mode, 2, threads, iters, {"alternate": True, "bucket_mb": mb})
                    for _ in range(rounds)]
            comm = statistics.median(r["comm_s"] for r in runs) * 1e3
            lines.append(f"| {mode} | {mb:g} | "
                         f"{med(runs, 'on', 'step'):.1f} / {med(runs, 'off', 'step'):.1f} | "
                         f"{med(runs, 'on', 'wait'):.2f} / {med(runs, 'off', 'wait'):.2f} | "
                         f"{runs[0]['on']['buckets']:.1f} | {runs[0]['on']['early']:.1f} | {comm:.2f} |")
            print(lines[-1], flush=True)
    lines += ["", "| mode | bucket MB | iter_size | bucket all-reduces per iteration | step (ms) |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for mode in [m for m in modes if m in ("STANDARD", "JOINT", "RELAY")]:
        for size in (1, 2):
            r = measure("dist", mode, 2, threads, iters, {"iter_size": size, "count": True,
                                                          "bucket_mb": min(buckets)})
            lines.append(f"| {mode} | {min(buckets):g} | {size} | {r['all_reduces']:g} | "
                         f"{r['step_s'] * 1e3:.1f} |")
            print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", default=MODES)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--rounds", type=int, default=2, help="repeat each measurement; keep the fastest")
    ap.add_argument("--out", help="also write the table (markdown) here")
    ap.add_argument("--overlap", action="store_true", help="issue 14: all-reduces overlapped with the "
                    "backward vs after it (RELAY, MULTIWAY), and DDP all-reduces per iteration vs iter_size")
    ap.add_argument("--bucket-mb", type=float, nargs="+", default=[25.0, 0.05],
                    help="with --overlap: the bucket sizes to compare (default 25, DDP's, and 0.05)")
    args = ap.parse_args()
    if args.overlap:
        text = overlap_tables(args.modes, args.bucket_mb, args.threads, args.iters, args.rounds)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
        return
    rows = []
    for mode in args.modes:
        one, dist, alone = (best([measure(kind, mode, procs, args.threads, args.iters)
                                  for _ in range(args.rounds)])
                            for kind, procs in (("one", 1), ("dist", 2), ("alone", 2)))
        rows.append({"mode": mode, "one": one["step_s"], "dist": dist["step_s"], "alone": alone["step_s"],
                     "exposed_s": dist["exposed_s"], "reduced": dist["reduced"], "comm_s": dist["comm_s"]})
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    text = table(rows)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5],
               json.loads(sys.argv[6]) if len(sys.argv) > 6 else None)
    else:
        main()
