"""Shared benchmark machinery: side-by-side timing, ratio statistics, the machine, compilation.

Every comparison runs its candidates in one process, interleaved: within each repeat every
candidate runs once, in an order rotated from repeat to repeat, so drift on a shared machine
(other jobs, thermal, frequency) hits all candidates alike.  Ratios are taken per repeat
(paired) and reported as median and range.
"""
from __future__ import annotations

import datetime
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from netspec.check import check_net, load  # noqa: E402
from netspec.compile.module import compile_net  # noqa: E402
from netspec.lower import NetState  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn, iterations: int, device: torch.device) -> float:
    """Seconds per iteration of ``fn`` run ``iterations`` times (CUDA events on a GPU)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iterations):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / iterations
    t0 = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - t0) / iterations


def interleaved(candidates: dict, repeats: int, iterations: int, warmup: int = 1,
                device: torch.device = torch.device("cpu")) -> dict[str, list[float]]:
    """Seconds per iteration of each candidate (name -> callable running one iteration),
    ``repeats`` times; within a repeat every candidate runs, in an order rotated each repeat."""
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    synchronize(device)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(time_once(candidates[name], iterations, device))
    return times


def ratio_stats(num: list[float], den: list[float]) -> tuple[float, float, float]:
    """Median, min and max of the per-repeat ratios num/den (paired: same repeat)."""
    r = [a / b for a, b in zip(num, den)]
    return statistics.median(r), min(r), max(r)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What the figures were measured on."""
    import os
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    try:
        info["load"] = "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        info["load"] = "?"
    return info


def compile_text(text: str, phase: str = "TRAIN", input_shapes: dict | None = None, name: str = "net"):
    """Check and compile prototxt ``text`` (written to a temporary file, so spans have a path)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.prototxt"
        path.write_text(text)
        return compile_file(path, phase, input_shapes)


def compile_file(path: Path, phase: str = "TRAIN", input_shapes: dict | None = None):
    """Load, check and compile a prototxt for ``phase`` (seeded fillers): (net, Compiled), as the
    training executor compiles it (BatchNorm + Scale fused)."""
    _, src = load(path)
    net = check_net(src, NetState.of(phase), input_shapes)
    return net, compile_net(net, seed=0, fuse=True)


def vary_biases(net, generator: torch.Generator) -> None:
    """Draw every 1-d blob of a ``netspec.Net`` from N(0, 0.1^2): Caffe's fillers leave biases
    constant (0.2 or 0), and a bias mixed up between layers would not show."""
    with torch.no_grad():
        for blobs in net.params.values():
            for b in blobs:
                if b.dim() == 1:
                    b.copy_(torch.randn(b.shape, generator=generator) * 0.1)


def objective(net, tops: dict) -> torch.Tensor:
    """Caffe's training objective sum_i loss_weight_i * top_i over the net's losses."""
    return sum(w * tops[t.name] for loss in net.losses for t, w in loss.tops)


def profile_top(fn, rows: int = 12, sort: str = "self_cpu_time_total") -> str:
    """torch.profiler table of the operators of one call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by=sort, row_limit=rows)
