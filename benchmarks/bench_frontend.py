"""Front-end cost: parse, schema-check, lower+check and compile for generated ResNet-style nets.

    python benchmarks/bench_frontend.py [--sizes 100 1000 10000] [--repeat 5] [--compile]

Prints a table (median and spread over repeats) and, with --out, writes it as markdown.
Target (issues 2 and 8): parse, check and compile of a 1,000-layer net under 1 s.

    python benchmarks/bench_frontend.py --memory [--sizes 10000 40000 200000]

measures the memory of ``netspec check FILE`` instead (issue 15): each size runs the real
command (its table printed to /dev/null) in a fresh process.  "peak RSS" is that whole
process's ``ru_maxrss``, what a user sees (target: a 200,000-layer file under 1 GB);
peak minus the RSS after the command's imports is the front end's own cost, and the slope
between the first and last size its cost per layer.  The last column says whether the
process imported torch (checking needs none).
``total`` is parse + schema + check (+ compile when timed).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netspec.check import check_net  # noqa: E402
from netspec.diagnostics import Diagnostics  # noqa: E402
from netspec.lower import NetSource, NetState  # noqa: E402
from netspec.parse import parse_text  # noqa: E402
from netspec.proto import caffe_pb2  # noqa: E402
from netspec.schema import to_message  # noqa: E402


def resnet_text(n_layers: int, width: int = 16) -> str:
    """A plain ResNet-style prototxt with about ``n_layers`` layers (5 per residual block)."""
    out = ['name: "gen"',
           'layer { name: "data" type: "Input" top: "data" top: "label" '
           'input_param { shape { dim: 8 dim: 3 dim: 32 dim: 32 } shape { dim: 8 } } }',
           f'layer {{ name: "stem" type: "Convolution" bottom: "data" top: "b0" '
           f'convolution_param {{ num_output: {width} kernel_size: 3 pad: 1 '
           f'weight_filler {{ type: "msra" }} }} }}']
    blocks = max(1, (n_layers - 5) // 5)
    for i in range(blocks):
        x, y = f"b{i}", f"b{i + 1}"
        out.append(f'layer {{ name: "c{i}a" type: "Convolution" bottom: "{x}" top: "c{i}a" '
                   f'convolution_param {{ num_output: {width} kernel_size: 3 pad: 1 }} }}')
        out.append(f'layer {{ name: "r{i}a" type: "ReLU" bottom: "c{i}a" top: "c{i}a" }}')
        out.append(f'layer {{ name: "c{i}b" type: "Convolution" bottom: "c{i}a" top: "c{i}b" '
                   f'convolution_param {{ num_output: {width} kernel_size: 3 pad: 1 }} }}')
        out.append(f'layer {{ name: "s{i}" type: "Eltwise" bottom: "{x}" bottom: "c{i}b" top: "{y}" }}')
        out.append(f'layer {{ name: "r{i}b" type: "ReLU" bottom: "{y}" top: "{y}" }}')
    out.append(f'layer {{ name: "fc" type: "InnerProduct" bottom: "b{blocks}" top: "fc" '
               f'inner_product_param {{ num_output: 10 }} }}')
    out.append('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }')
    return "\n".join(out) + "\n"


def stages(text: str, do_compile: bool) -> dict[str, float]:
    t = {}
    t0 = time.perf_counter()
    tree = parse_text(text, "<gen>")
    t1 = time.perf_counter()
    diags = Diagnostics()
    msg, smap = to_message(tree, caffe_pb2.NetParameter, diags)
    diags.check()
    t2 = time.perf_counter()
    net = check_net(NetSource(msg, smap, (), "<gen>"), NetState())
    t3 = time.perf_counter()
    t.update(parse=t1 - t0, schema=t2 - t1, check=t3 - t2, total=t3 - t0)
    if do_compile:
        from netspec.compile.module import compile_net
        compile_net(net, seed=0)
        t["compile"] = time.perf_counter() - t3
    t["layers"] = len(net.graph)
    return t


def measure(sizes, repeat: int, do_compile: bool = True) -> dict:
    """Median and spread of every stage for each size (fewer repeats above 1,000 layers)."""
    stages(resnet_text(50), do_compile)          # warm-up: grammar build, imports
    cols = ["parse", "schema", "check"] + (["compile"] if do_compile else []) + ["total"]
    rows = []
    for n in sizes:
        text = resnet_text(n)
        runs = [stages(text, do_compile) for _ in range(repeat if n <= 1000 else max(1, repeat // 2))]
        for r in runs:
            r["total"] += r.get("compile", 0.0)
        rows.append({"layers": runs[0]["layers"], "runs": runs,
                     **{c: (statistics.median(r[c] for r in runs),
                            (max(r[c] for r in runs) - min(r[c] for r in runs)) / 2) for c in cols}})
    return {"cols": cols, "rows": rows, "parse_split": parse_split(resnet_text(1000))}


def parse_split(text: str) -> dict[str, float]:
    """Where parsing a net spends its time (cProfile, by package): the lark parser and lexer,
    netspec's tree callbacks, the rest."""
    import cProfile
    import pstats
    prof = cProfile.Profile()
    prof.runcall(parse_text, text, "<gen>")
    st = pstats.Stats(prof)
    split = {"lark": 0.0, "netspec": 0.0, "other": 0.0}
    for (path, _, _), (_, _, tottime, _, _) in st.stats.items():
        key = "lark" if "/lark/" in path else "netspec" if "/netspec/" in path else "other"
        split[key] += tottime
    total = sum(split.values()) or 1.0
    return {k: v / total for k, v in split.items()}


def markdown(res: dict) -> str:
    cols = res["cols"]
    lines = [f"| layers | {' | '.join(c + ' (s)' for c in cols)} | total per layer (ms) |",
             "|" + "---|" * (len(cols) + 2)]
    for r in res["rows"]:
        cells = " | ".join(f"{r[c][0]:.3f} ± {r[c][1]:.3f}" for c in cols)
        lines.append(f"| {r['layers']} | {cells} | {1e3 * r['total'][0] / r['layers']:.2f} |")
    split = res["parse_split"]
    lines.append(f"\nParsing 1,000 layers, by package (cProfile self time): lark {100 * split['lark']:.0f}%, "
                 f"netspec's tree building {100 * split['netspec']:.0f}%, other {100 * split['other']:.0f}%.")
    return "\n".join(lines) + "\n"


_MEMORY_CHILD = """
import os, resource, sys
sys.path.insert(0, sys.argv[2])
from netspec.cli.main import build_parser, parse_and_run
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
parser = build_parser(["check"])          # the imports `netspec check` makes
base = rss()
sys.stdout = open(os.devnull, "w")        # the table is printed, as by the command, but not kept
rc = parse_and_run(parser, ["check", sys.argv[1]])
sys.stdout = sys.__stdout__
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(rc, base, peak, int("torch" in sys.modules))
"""


def memory_of(n_layers: int) -> tuple[int, int, int, bool]:
    """(layers, RSS after imports, peak RSS, torch imported) of `netspec check` on an
    n-layer file, in a fresh process."""
    import subprocess
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"gen{n_layers}.prototxt"
        text = resnet_text(n_layers)
        path.write_text(text)
        done = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(path),
                               str(Path(__file__).resolve().parents[1])],
                              capture_output=True, text=True, check=True)
    rc, base, peak, torch = (int(x) for x in done.stdout.split())
    if rc != 0:
        raise RuntimeError(f"netspec check failed on {n_layers} layers:\n{done.stderr}")
    return text.count("\nlayer {"), base, peak, bool(torch)


def memory_table(sizes: list[int]) -> str:
    rows = [memory_of(n) for n in sizes]
    lines = ["| layers | RSS after imports (MB) | peak RSS, whole process (MB) | front end (MB) | "
             "per layer (KB) | torch imported |", "|---|---|---|---|---|---|"]
    for n, base, peak, torch in rows:
        lines.append(f"| {n} | {base / 1e6:.0f} | {peak / 1e6:.0f} | {(peak - base) / 1e6:.0f} | "
                     f"{(peak - base) / n / 1e3:.2f} | {'yes' if torch else 'no'} |")
    if len(rows) >= 2:
        (n0, b0, p0, _), (n1, b1, p1, _) = rows[0], rows[-1]
        slope = ((p1 - b1) - (p0 - b0)) / max(1, n1 - n0)
        lines.append(f"\nSlope {slope / 1e3:.2f} KB per layer between {n0} and {n1} layers; a "
                     f"200,000-layer file: about {(p1 + slope * (200_000 - n1)) / 1e9:.2f} GB "
                     "whole process (extrapolated from the last size).")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="also time compilation to a module")
    ap.add_argument("--out", type=Path, help="write the table as markdown here")
    ap.add_argument("--memory", action="store_true", help="peak memory of `netspec check` "
                    "(a fresh process per size) instead of times")
    args = ap.parse_args(argv)
    if args.memory:
        table = memory_table(args.sizes)
        print(table)
        if args.out:
            args.out.write_text(table)
        return 0
    table = markdown(measure(args.sizes, args.repeat, args.compile))
    print(table)
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
