#!/usr/bin/env python
"""Write docs/time_resnet56.md: a ``netspec time`` table of the CIFAR ResNet-56 on this machine.

The ResNet (He et al. 2016, CIFAR variant) comes from ``benchmarks/resnet56.py``;
``resnet_cifar(9)`` is ResNet-56.

usage: python tools/time_resnet56_doc.py [--batch 32] [--iterations 5] [--out docs/time_resnet56.md]
"""
import argparse
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # run from a checkout


from benchmarks.resnet56 import resnet_cifar  # noqa: E402,F401  (the one ResNet generator)


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
