#!/usr/bin/env python
"""Inference: netspec's TEST-phase build against hand-written PyTorch twins (issue 12).

    python benchmarks/bench_inference.py [--nets googlenet caffenet alexnet resnet50]
                                         [--batches 1 16] [--repeats 7] [--iterations 2]
                                         [--device cuda]

Each net's inference build (``compile_net(..., inference=True)``: what ``netspec.Net(phase=
"TEST")`` runs under ``torch.no_grad()``, ``netspec test`` and ``netspec time --phase TEST``)
and its twin get the same weights; before timing both run the same input and their ``prob``
must agree (1e-4 relative: folding reorders float32 arithmetic).  Then forward passes under
``torch.inference_mode`` are timed side by side in one process, interleaved within every
repeat, at 1 intra-op thread; the ratio netspec / twin is the median of per-repeat ratios.
Target: at most 1.05 for every net at batch 1 and 16.

Twins: GoogLeNet and CaffeNet/AlexNet deploy written with ``nn.Conv2d``/``F.max_pool2d``/
``F.local_response_norm`` (``benchmarks/handwritten.py``'s inception module), and
``torchvision.models.resnet50`` for ResNet-50 (``tools/gen_resnet50_deploy.py``), changed in
two places to be Caffe's ResNet-50 exactly: the stride 2 of each stage's first bottleneck
moves from ``conv2`` (3x3) to ``conv1`` (1x1), where Caffe's ResNets put it, and the stem's
max pooling is Caffe's ``pool1`` (3x3/2, no padding, ceil rounding: ``nn.MaxPool2d(3, 2,
ceil_mode=True)``) instead of torchvision's padded floor-rounded one.  Caffe's BatchNorm +
Scale become ``nn.BatchNorm2d`` (running stats = Caffe's sums / scale factor; weight, bias =
the Scale's).  ``optimize=max`` (channels_last) is measured alongside as its own ratio.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import ROOT, interleaved, ratio_stats  # noqa: E402
from benchmarks.handwritten import INCEPTION_BRANCHES, INCEPTIONS, GoogLeNetTrunk  # noqa: E402
from netspec.check import check_net, load  # noqa: E402
from netspec.compile.inference import max_build  # noqa: E402
from netspec.compile.module import compile_net, refold  # noqa: E402
from netspec.lower import NetState  # noqa: E402

SHARED = Path(__import__("os").environ.get("NETSPEC_SHARED", ROOT.parent / "shared"))
ZOO = SHARED / "caffe-zoo" / "models"
FILES = {"googlenet": ZOO / "bvlc_googlenet" / "deploy.prototxt",
         "caffenet": ZOO / "bvlc_reference_caffenet" / "deploy.prototxt",
         "alexnet": ZOO / "bvlc_alexnet" / "deploy.prototxt"}
SIZES = {"googlenet": 224, "caffenet": 227, "alexnet": 227, "resnet50": 224}


def available(name: str) -> bool:
    return name == "resnet50" or FILES[name].exists()


# -- twins ---------------------------------------------------------------------------------
class GoogLeNetDeploy(GoogLeNetTrunk):
    """BVLC GoogLeNet deploy: the main classifier only, softmax on top."""

    def forward(self, x):
        inc = self.inception
        x = inc["4e"](inc["4d"](inc["4c"](inc["4b"](inc["4a"](self.to_4a(x))))))
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        x = F.avg_pool2d(inc["5b"](inc["5a"](x)), 7, 1).flatten(1)
        return F.softmax(self.classifier(x), 1)


GOOGLENET_NAMES = {"conv1": "conv1/7x7_s2", "conv2_reduce": "conv2/3x3_reduce", "conv2": "conv2/3x3",
                   "classifier": "loss3/classifier",
                   **{f"inception.{k}.{b}": f"inception_{k}/{c}" for k in INCEPTIONS for b, c in INCEPTION_BRANCHES.items()}}


class CaffeNetDeploy(nn.Module):
    """BVLC CaffeNet (pool before LRN) or AlexNet (LRN before pool) deploy."""

    def __init__(self, lrn_first: bool):
        super().__init__()
        self.lrn_first = lrn_first
        self.conv1 = nn.Conv2d(3, 96, 11, 4)
        self.conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=2)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1, groups=2)
        self.fc6, self.fc7, self.fc8 = nn.Linear(9216, 4096), nn.Linear(4096, 4096), nn.Linear(4096, 1000)

    def _pool_norm(self, x):
        if self.lrn_first:
            return F.max_pool2d(F.local_response_norm(x, 5, 1e-4, 0.75, 1.0), 3, 2, ceil_mode=True)
        return F.local_response_norm(F.max_pool2d(x, 3, 2, ceil_mode=True), 5, 1e-4, 0.75, 1.0)

    def forward(self, x):
        x = self._pool_norm(F.relu(self.conv1(x)))
        x = self._pool_norm(F.relu(self.conv2(x)))
        x = F.relu(self.conv5(F.relu(self.conv4(F.relu(self.conv3(x))))))
        x = F.max_pool2d(x, 3, 2, ceil_mode=True).flatten(1)
        x = F.relu(self.fc7(F.relu(self.fc6(x))))
        return F.softmax(self.fc8(x), 1)


CAFFENET_NAMES = {n: n for n in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")}


def resnet50_twin() -> nn.Module:
    """torchvision's ResNet-50 made Caffe's: stride on the first 1x1, Caffe's pool1."""
    import torchvision
    m = torchvision.models.resnet50(weights=None)
    m.maxpool = nn.MaxPool2d(3, 2, ceil_mode=True)
    for layer in (m.layer2, m.layer3, m.layer4):
        layer[0].conv1.stride, layer[0].conv2.stride = (2, 2), (1, 1)
    return nn.Sequential(m, nn.Softmax(1))


def _gen():
    spec = importlib.util.spec_from_file_location("gen_resnet50_deploy", ROOT / "tools" / "gen_resnet50_deploy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _bn_state(dst: str, tag: str, state: dict) -> dict:
    sf = state[f"bn{tag}.scale_factor"]
    inv = torch.where(sf == 0, 0.0, 1 / sf)
    return {f"{dst}.running_mean": state[f"bn{tag}.mean"] * inv, f"{dst}.running_var": state[f"bn{tag}.variance"] * inv,
            f"{dst}.weight": state[f"scale{tag}.weight"], f"{dst}.bias": state[f"scale{tag}.bias"]}


def resnet50_state(compiled) -> dict:
    """The compiled Caffe ResNet-50's blobs as the twin's state_dict (``0.`` = the resnet)."""
    sd = caffe_state(compiled)
    out = {"0.conv1.weight": sd["conv1.weight"], **_bn_state("0.bn1", "_conv1", sd),
           "0.fc.weight": sd["fc1000.weight"], "0.fc.bias": sd["fc1000.bias"]}
    for li, (stage, blocks, _) in enumerate(_gen().STAGES, 1):
        for i in range(blocks):
            tag, dst = f"{stage}{'abcdefghij'[i]}", f"0.layer{li}.{i}"
            for j, branch in enumerate(("2a", "2b", "2c"), 1):
                out[f"{dst}.conv{j}.weight"] = sd[f"res{tag}_branch{branch}.weight"]
                out |= _bn_state(f"{dst}.bn{j}", f"{tag}_branch{branch}", sd)
            if i == 0:
                out[f"{dst}.downsample.0.weight"] = sd[f"res{tag}_branch1.weight"]
                out |= _bn_state(f"{dst}.downsample.1", f"{tag}_branch1", sd)
    return out


def caffe_state(compiled) -> dict:
    """The state_dict keyed by Caffe layer name instead of module attribute ('conv1/7x7_s2.weight')."""
    layer = {a: l for l, a in compiled.generated.attrs.items()}
    return {f"{layer[k.rsplit('.', 1)[0]]}.{k.rsplit('.', 1)[1]}": v
            for k, v in compiled.module.state_dict().items()}


def _mapped(compiled, names: dict[str, str]) -> dict:
    sd = caffe_state(compiled)
    return {f"{dst}.{blob}": sd[f"{src}.{blob}"] for dst, src in names.items() for blob in ("weight", "bias")}


# -- building and timing -----------------------------------------------------------------------
def _randomize(compiled, seed: int = 0) -> None:
    """Random weights (He-scaled, so activations stay O(1)), trained-looking BatchNorm
    statistics and Scale blobs: deploy files have no fillers, which would leave zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in compiled.module.state_dict(keep_vars=True).items():
            if name.endswith("scale_factor"):
                t.fill_(1.0)
            elif name.endswith(".variance"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif "scale" in name and name.endswith(".weight"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.5)
            elif t.dim() > 1:
                t.copy_(torch.randn(t.shape, generator=g) * (2 / t[0].numel()) ** 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)


def build(name: str, batch: int):
    """(inference Compiled, twin module, input) with identical weights, both in eval mode."""
    size = SIZES[name]
    if name == "resnet50":
        import tempfile
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "resnet50_deploy.prototxt"
            path.write_text(_gen().resnet50_deploy(batch))
            _, src = load(path)
    else:
        _, src = load(FILES[name])
    net = check_net(src, NetState.of("TEST"), {"data": (batch, 3, size, size)})
    compiled = compile_net(net, seed=0, inference=True)
    _randomize(compiled)
    refold(compiled.module)
    if name == "resnet50":
        twin, state = resnet50_twin(), resnet50_state(compiled)
    elif name == "googlenet":
        twin, state = GoogLeNetDeploy(), _mapped(compiled, GOOGLENET_NAMES)
    else:
        twin, state = CaffeNetDeploy(lrn_first=name == "alexnet"), _mapped(compiled, CAFFENET_NAMES)
    twin.load_state_dict(state)
    twin.eval()
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    return compiled, twin, x


def check_equal(compiled, twin, x, rel: float = 1e-4) -> float:
    """Max abs difference of the two ``prob`` outputs; asserts it is within ``rel`` of their scale."""
    with torch.inference_mode():
        a, b = compiled.module(data=x)["prob"], twin(x)
    diff = float((a - b).abs().max())
    assert diff <= rel * float(b.abs().max()), f"netspec and the twin differ by {diff}"
    return diff


def measure(name: str, batch: int, repeats: int, iterations: int, channels_last: bool = True,
            device: torch.device = torch.device("cpu")) -> dict:
    """One net at one batch on ``device``.  On CUDA, ``optimize=max`` is what ``Net(...,
    optimize="max")`` runs (``max_build``: channels_last and torch.compile), and the twin it is
    compared with gets the same treatment (channels_last + torch.compile)."""
    compiled, twin, x = build(name, batch)
    diff = check_equal(compiled, twin, x)        # on the CPU, before anything moves
    module, twin, x = compiled.module.to(device), twin.to(device), x.to(device)
    candidates = {"netspec": lambda: module(data=x), "twin": lambda: twin(x)}
    if channels_last:
        import copy
        cl = copy.deepcopy(module)
        run_max = max_build(cl, device) if device.type == "cuda" else cl.to(memory_format=torch.channels_last)
        refold(cl)
        cl_twin = copy.deepcopy(twin).to(memory_format=torch.channels_last)
        run_twin = torch.compile(cl_twin) if device.type == "cuda" else cl_twin
        xc = x.contiguous(memory_format=torch.channels_last)
        candidates |= {"netspec max": lambda: run_max(data=xc), "twin cl": lambda: run_twin(xc)}
    with torch.inference_mode():
        times = interleaved(candidates, repeats, iterations, warmup=2 if device.type == "cuda" else 1,
                            device=device)
    row = {"net": name, "batch": batch, "device": str(device), "repeats": repeats, "iterations": iterations,
           "max_abs_diff": diff, "netspec_ms": statistics.median(times["netspec"]) * 1e3,
           "twin_ms": statistics.median(times["twin"]) * 1e3, "ratio": ratio_stats(times["netspec"], times["twin"])}
    if channels_last:
        row |= {"max_ms": statistics.median(times["netspec max"]) * 1e3,
                "ratio_max": ratio_stats(times["netspec max"], times["twin"]),
                "ratio_cl": ratio_stats(times["netspec max"], times["twin cl"])}
    return row


def markdown(rows: list[dict]) -> str:
    out = ["| net | batch | netspec ms | twin ms | ratio (median, range) | max abs diff | "
           "optimize=max ms | max / twin | max / twin channels_last |",
           "|---|---:|---:|---:|---|---:|---:|---|---|"]
    for r in rows:
        m, lo, hi = r["ratio"]
        extra = " | | |"
        if "ratio_max" in r:
            (a, alo, ahi), (c, clo, chi) = r["ratio_max"], r["ratio_cl"]
            extra = f" {r['max_ms']:.1f} | {a:.3f} ({alo:.2f}-{ahi:.2f}) | {c:.3f} ({clo:.2f}-{chi:.2f}) |"
        out.append(f"| {r['net']} | {r['batch']} | {r['netspec_ms']:.1f} | {r['twin_ms']:.1f} | "
                   f"**{m:.3f}** ({lo:.2f}-{hi:.2f}) | {r['max_abs_diff']:.1e} |" + extra)
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", nargs="+", default=["googlenet", "caffenet", "alexnet", "resnet50"],
                    choices=list(SIZES))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--device", default="cpu", help="cuda: time on the GPU (CUDA events); optimize=max is "
                    "then channels_last + torch.compile, against the twin compiled the same way")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.nets:
        if not available(name):
            print(f"{name}: not measured, {FILES[name]} is absent")
            continue
        for batch in args.batches:
            rows.append(measure(name, batch, args.repeats, args.iterations, not args.no_channels_last, device))
            print(markdown(rows[-1:]).splitlines()[-1], flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} thread(s)"
    print(f"Device: {name}\n\n" + markdown(rows))


if __name__ == "__main__":
    main()
