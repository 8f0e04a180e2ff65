#!/usr/bin/env python
"""GPU figures: images/s of ResNet-56 and GoogLeNet under fp32, bf16 autocast, channels_last
and torch.compile, and the compile-overhead ratio on the GPU.

    python benchmarks/bench_gpu.py [--repeats 5] [--iterations 10]
    python benchmarks/bench_gpu.py --modes [MODE ...]     # issue 14: every BP mode, eager vs compiled

Runs only where ``torch.cuda.is_available()``; times with CUDA events (``common.time_once``).
Each variant is one forward+backward of the compiled module (the training objective), the
variants interleaved within every repeat.  ResNet-56 at batch 128 (CIFAR shapes) and
GoogLeNet TRAIN with both auxiliary heads at batch 32, 224x224, as issue 8 asks.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_overhead  # noqa: E402
from benchmarks.common import interleaved, objective, synchronize  # noqa: E402

NETS = {"resnet56": 128, "googlenet": 32}


def _step(pair, module, amp: bool, device: torch.device):
    def run():
        for p in module.parameters():
            p.grad = None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = objective(pair.net, module(**pair.inputs))
        loss.float().backward()
    return run


def variants(name: str, batch: int, device: torch.device, use_compile: bool = True) -> tuple[dict, object]:
    """fp32 / bf16 / bf16+channels_last (/ +torch.compile) runs of one net's compiled module."""
    plain = bench_overhead.build_pair(name, batch).to(device)
    last = bench_overhead.build_pair(name, batch).to(device, torch.channels_last)
    runs = {"fp32": _step(plain, plain.compiled, False, device), "bf16": _step(plain, plain.compiled, True, device),
            "bf16 + channels_last": _step(last, last.compiled, True, device)}
    if use_compile:
        runs["bf16 + channels_last + torch.compile"] = _step(last, torch.compile(last.compiled), True, device)
    return runs, plain


def measure(repeats: int, iterations: int, device: torch.device, use_compile: bool = True,
            nets: dict | None = None) -> dict:
    """Every variant of every net (name -> batch), and the compile-overhead ratios, on ``device``."""
    nets, rows = nets or NETS, []
    for name, batch in nets.items():
        runs, _ = variants(name, batch, device, use_compile)
        times = interleaved(runs, repeats, iterations, warmup=3, device=device)
        for v, t in times.items():
            med = statistics.median(t)
            rows.append({"net": name, "batch": batch, "variant": v, "ms": 1e3 * med,
                         "images_s": batch / med, "speedup": statistics.median(times["fp32"]) / med})
    overhead = [bench_overhead.measure(n, b, repeats, iterations, device=device) for n, b in nets.items()]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run of the GPU path)"
    return {"device": name, "rows": rows, "overhead": overhead}


# -- issue 14: every BP mode on ResNet-56 with 4 exits, bf16 + channels_last, eager vs compiled --
GPU_TRAIN = 'amp: "bf16"\nchannels_last: true\n'


def measure_modes(repeats: int, iterations: int, device: torch.device, batch: int = 128, n: int = 9,
                  modes=None, log=print) -> dict:
    """Solvers of every BP mode (``bench_schedules.MODES``) on ResNet-(6n+2) with 4 exits, bf16
    autocast and channels_last, eager and ``compile: true``, timed interleaved with CUDA events:
    images/s, ratio to STANDARD, compiled/eager; plus each compiled solver's first (compiling)
    iteration and the float32 update difference to its eager twin after the timing run."""
    from benchmarks.bench_compile import params_of, update_diff
    from benchmarks.bench_schedules import MODES, batch_for, build_solvers
    modes = tuple(modes or MODES)
    x = {k: v.to(device) for k, v in batch_for(batch).items()}
    solvers, first, start = {}, {}, {}
    for mode in modes:
        for variant, extra in (("eager", ""), ("compiled", "compile: true\n")):
            s = build_solvers(batch, n, modes=(mode,), solver_extra=GPU_TRAIN + extra, device=device)[mode]
            start.setdefault(mode, params_of(s))
            synchronize(device)
            t0 = time.perf_counter()
            s.step(1, batches=[x])
            synchronize(device)
            first[(mode, variant)] = time.perf_counter() - t0
            solvers[(mode, variant)] = s
            log(f"[bench_gpu] {mode}, {variant}: first iteration {first[(mode, variant)]:.1f} s")
    times = interleaved({k: (lambda s=s: s.step(1, batches=[x])) for k, s in solvers.items()},
                        repeats, iterations, warmup=2, device=device)
    med = {k: statistics.median(t) for k, t in times.items()}
    rows = []
    for mode in modes:
        e, c = med[(mode, "eager")], med[(mode, "compiled")]
        ref_e, ref_c = med.get(("STANDARD", "eager"), e), med.get(("STANDARD", "compiled"), c)
        rows.append({"mode": mode, "eager_img_s": batch / e, "compiled_img_s": batch / c,
                     "eager_ratio": e / ref_e, "compiled_ratio": c / ref_c, "speedup": e / c,
                     "first_s": first[(mode, "compiled")],
                     "update_diff": update_diff(params_of(solvers[(mode, "compiled")]),
                                                params_of(solvers[(mode, "eager")]), start[mode])})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    return {"device": name, "batch": batch, "n": n, "rows": rows}


def markdown_modes(result: dict) -> str:
    lines = [f"Device: {result['device']}; ResNet-{6 * result['n'] + 2} with 4 exits, batch {result['batch']}, "
             "bf16 autocast + channels_last.", "",
             "| mode | eager images/s | compiled images/s | ratio to STANDARD, eager / compiled | "
             "compiled / eager speed-up | first compiled iteration (s) | update diff |",
             "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['mode']} | {r['eager_img_s']:.0f} | {r['compiled_img_s']:.0f} | "
                     f"{r['eager_ratio']:.2f} / {r['compiled_ratio']:.2f} | {r['speedup']:.2f} | "
                     f"{r['first_s']:.1f} | {r['update_diff']:.1e} |")
    lines.append("\nupdate diff: ||du_compiled - du_eager|| / ||du_eager|| after the timing run (same steps "
                 "from one seed).  Under bf16 autocast it measures rounding (a compiled graph keeps fused "
                 "intermediates in float32), not exactness: tests/test_compiled_training.py checks that "
                 "in float32.")
    return "\n".join(lines) + "\n"


def markdown(result: dict) -> str:
    lines = [f"Device: {result['device']}.", "",
             "| net | batch | variant | ms/iter | images/s | speed-up over fp32 |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['net']} | {r['batch']} | {r['variant']} | {r['ms']:.1f} | {r['images_s']:.0f} | "
                     f"{r['speedup']:.2f} |")
    lines += ["", "Compile overhead on the GPU (fp32):", "", bench_overhead.markdown(result["overhead"])]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--modes", nargs="*", metavar="MODE", help="issue 14: every BP mode (or these: STANDARD "
                    "JOINT RELAY MULTIWAY MULTIWAY_naive) on ResNet-56 with 4 exits, eager vs compile: true")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--require-cuda", action="store_true", help="exit 1 (not 0) without a CUDA device")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure", file=sys.stderr if args.require_cuda else sys.stdout)
        if args.require_cuda:
            sys.exit(1)
        return None
    if args.modes is not None:
        result = measure_modes(args.repeats, args.iterations, torch.device("cuda"), batch=args.batch,
                               modes=[m.replace("_", " ") for m in args.modes] or None)
        print(markdown_modes(result))
        return result
    result = measure(args.repeats, args.iterations, torch.device("cuda"), not args.no_compile)
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
