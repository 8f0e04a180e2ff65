#!/usr/bin/env python
"""Write docs/time_resnet56.md: a ``netspec time`` table of the CIFAR ResNet-56 on this machine.

The ResNet (He et al. 2016, CIFAR variant: 3 stages x n basic blocks, 16/32/64
channels, Caffe-style BatchNorm + Scale, 1x1 projection shortcuts when the
stage changes) is generated here; ``resnet_cifar(9)`` is ResNet-56.

usage: python tools/time_resnet56_doc.py [--batch 32] [--iterations 5] [--out docs/time_resnet56.md]
"""
import argparse
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # run from a checkout


def _conv(name, bottom, out, k, stride, pad):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}"\n'
            f'  convolution_param {{ num_output: {out} kernel_size: {k} stride: {stride} pad: {pad} '
            f'bias_term: false weight_filler {{ type: "msra" }} }} }}\n')


def _bn(name, blob):
    return (f'layer {{ name: "{name}_bn" type: "BatchNorm" bottom: "{blob}" top: "{blob}" }}\n'
            f'layer {{ name: "{name}_scale" type: "Scale" bottom: "{blob}" top: "{blob}" '
            f'scale_param {{ bias_term: true }} }}\n')


def _relu(name, blob):
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n'


def _block(name, bottom, out, stride, project):
    text = _conv(f"{name}_a", bottom, out, 3, stride, 1) + _bn(f"{name}_a", f"{name}_a")
    text += _relu(f"{name}_a_relu", f"{name}_a")
    text += _conv(f"{name}_b", f"{name}_a", out, 3, 1, 1) + _bn(f"{name}_b", f"{name}_b")
    short = bottom
    if project:
        short = f"{name}_proj"
        text += _conv(short, bottom, out, 1, stride, 0) + _bn(short, short)
    text += (f'layer {{ name: "{name}" type: "Eltwise" bottom: "{name}_b" bottom: "{short}" '
             f'top: "{name}" eltwise_param {{ operation: SUM }} }}\n')
    return text + _relu(f"{name}_relu", name)


def resnet_cifar(n: int = 9, batch: int = 32) -> str:
    """Prototxt of the 6n+2-layer CIFAR ResNet (n=9: ResNet-56), TRAIN with an Input layer."""
    text = [f'name: "ResNet-{6 * n + 2}-CIFAR"\n',
            f'layer {{ name: "data" type: "Input" top: "data" top: "label"\n'
            f'  input_param {{ shape {{ dim: {batch} dim: 3 dim: 32 dim: 32 }} shape {{ dim: {batch} }} }} }}\n',
            _conv("conv1", "data", 16, 3, 1, 1), _bn("conv1", "conv1"), _relu("conv1_relu", "conv1")]
    bottom, channels = "conv1", 16
    for stage, out in enumerate((16, 32, 64), start=1):
        for i in range(n):
            stride = 2 if stage > 1 and i == 0 else 1
            name = f"res{stage}_{i + 1}"
            text.append(_block(name, bottom, out, stride, out != channels))
            bottom, channels = name, out
    text.append(f'layer {{ name: "pool" type: "Pooling" bottom: "{bottom}" top: "pool" '
                f'pooling_param {{ pool: AVE global_pooling: true }} }}\n')
    text.append('layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" '
                'inner_product_param { num_output: 10 weight_filler { type: "msra" } } }\n')
    text.append('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }\n')
    return "".join(text)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "time_resnet56.md"))
    args = ap.parse_args(argv)
    import torch
    from netspec.check import check_net, load
    from netspec.lower import NetState
    from netspec.tools.timing import format_markdown, time_net
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet56_cifar.prototxt"
        path.write_text(resnet_cifar(9, args.batch))
        _, src = load(path)
        net = check_net(src, NetState.of("TRAIN"))
        timing = time_net(net, args.iterations, args.warmup, args.gpu)
    where = torch.cuda.get_device_name() if args.gpu else f"{platform.processor() or platform.machine()} CPU, " \
        f"{torch.get_num_threads()} threads"
    head = (f"# `netspec time` — ResNet-56 (CIFAR, batch {args.batch}, TRAIN)\n\n"
            f"Measured on {where}, torch {torch.__version__}, {args.iterations} iterations after "
            f"{args.warmup} warm-up; milliseconds per iteration.  Regenerate with "
            f"`python tools/time_resnet56_doc.py`.  Per-layer figures run each layer on its own "
            f"(see `netspec/tools/timing.py`), so their sum exceeds the whole-module totals a little; "
            f"the machine was shared with other jobs, so expect noise.\n\n")
    Path(args.out).write_text(head + format_markdown(timing))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
