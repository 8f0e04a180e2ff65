"""Front-end cost: parse, schema-check, lower+check and compile for generated ResNet-style nets.

    python benchmarks/bench_frontend.py [--sizes 100 1000 10000] [--repeat 5] [--compile]

Prints a table (median and spread over repeats) and, with --out, writes it as markdown.
Target (issue 2): parse + check of a 1,000-layer net under 1 s on the 2-core CI machine.
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="also time compilation to a module")
    ap.add_argument("--out", type=Path, help="write the table as markdown here")
    args = ap.parse_args(argv)
    stages(resnet_text(50), args.compile)          # warm-up: grammar build, imports
    cols = ["parse", "schema", "check"] + (["compile"] if args.compile else []) + ["total"]
    rows = [f"| layers | {' | '.join(c + ' (s)' for c in cols)} |", "|" + "---|" * (len(cols) + 1)]
    for n in args.sizes:
        text = resnet_text(n)
        runs = [stages(text, args.compile) for _ in range(args.repeat if n <= 1000 else max(1, args.repeat // 2))]
        cells = []
        for c in cols:
            vals = [r[c] for r in runs]
            spread = (max(vals) - min(vals)) / 2
            cells.append(f"{statistics.median(vals):.3f} ± {spread:.3f}")
        rows.append(f"| {runs[0]['layers']} | {' | '.join(cells)} |")
    table = "\n".join(rows)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
