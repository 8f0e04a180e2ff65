#!/usr/bin/env python
"""GPU figures: images/s of ResNet-56 and GoogLeNet under fp32, bf16 autocast, channels_last
and torch.compile, and the compile-overhead ratio on the GPU.

    python benchmarks/bench_gpu.py [--repeats 5] [--iterations 10]

Runs only where ``torch.cuda.is_available()``; times with CUDA events (``common.time_once``).
Each variant is one forward+backward of the compiled module (the training objective), the
variants interleaved within every repeat.  ResNet-56 at batch 128 (CIFAR shapes) and
GoogLeNet TRAIN with both auxiliary heads at batch 32, 224x224, as issue 8 asks.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_overhead  # noqa: E402
from benchmarks.common import interleaved, objective  # noqa: E402

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
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return None
    result = measure(args.repeats, args.iterations, torch.device("cuda"), not args.no_compile)
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
