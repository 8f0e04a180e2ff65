#!/usr/bin/env python
"""CIFAR ResNet prototxt generator (the one source of truth for netspec's ResNet-56 nets).

The ResNet is He et al. 2016's CIFAR variant: 3 stages x n basic blocks, 16/32/64
channels, Caffe-style BatchNorm + Scale, 1x1 projection shortcuts when the stage
changes; ``resnet_cifar(9)`` is ResNet-56 (1 + 6n convolutions + the classifier).

MW-BP exits (Guo et al. 2020, Fig. 1 and sec. 5.1) hang after residual blocks: the exit
"at layer L" follows the block whose second convolution is weight layer L, so ResNet-56's
exits at 15/25/35/45 follow blocks 7, 12, 17 and 22 of 27.  Each exit is global AVE
pooling + InnerProduct(10) + SoftmaxWithLoss (+ Accuracy in TEST).  ``relay=True`` adds
Relay BP's c = 1 scopes (every layer hears only the two nearest losses): loss k stops at
the blob of exit k-2.

    python benchmarks/resnet56.py            # rewrites models/resnet56/*.prototxt
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAPER_EXITS = (15, 25, 35, 45)          # MW-BP sec. 5.1: "at layer 15, 25, 35, 45"


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


def _head(prefix, bottom, weight=None, stop_at=None, accuracy=False):
    """Global AVE pooling + InnerProduct(10) + SoftmaxWithLoss (+ TEST Accuracy)."""
    lw = f" loss_weight: {weight}" if weight is not None else ""
    scope = f' gradient_scope {{ stop_at: "{stop_at}" }}' if stop_at else ""
    text = (f'layer {{ name: "{prefix}pool" type: "Pooling" bottom: "{bottom}" top: "{prefix}pool" '
            f'pooling_param {{ pool: AVE global_pooling: true }} }}\n'
            f'layer {{ name: "{prefix}fc" type: "InnerProduct" bottom: "{prefix}pool" top: "{prefix}fc" '
            f'inner_product_param {{ num_output: 10 weight_filler {{ type: "msra" }} }} }}\n'
            f'layer {{ name: "{prefix}loss" type: "SoftmaxWithLoss" bottom: "{prefix}fc" bottom: "label" '
            f'top: "{prefix}loss"{lw}{scope} }}\n')
    if accuracy:
        text += (f'layer {{ name: "{prefix}accuracy" type: "Accuracy" bottom: "{prefix}fc" '
                 f'bottom: "label" top: "{prefix}accuracy" include {{ phase: TEST }} }}\n')
    return text


def block_name(n: int, block: int) -> str:
    """Name of global residual block ``block`` (1-based) of a 6n+2 ResNet: res{stage}_{i}."""
    return f"res{(block - 1) // n + 1}_{(block - 1) % n + 1}"


def exit_layers(n: int, k: int = 4) -> tuple[int, ...]:
    """K exits evenly spaced before the classifier, as the paper's 15/25/35/45 for n=9, K=4."""
    if n == 9 and k == 4:
        return PAPER_EXITS
    step = (3 * n) // (k + 1)
    if step < 1:
        raise ValueError(f"a 6*{n}+2 ResNet has {3 * n} blocks: too few for {k} exits")
    return tuple(1 + 2 * (3 * n - step * (k + 1 - j)) for j in range(1, k + 1))


def input_layer(batch: int) -> str:
    return (f'layer {{ name: "data" type: "Input" top: "data" top: "label"\n'
            f'  input_param {{ shape {{ dim: {batch} dim: 3 dim: 32 dim: 32 }} shape {{ dim: {batch} }} }} }}\n')


def cifar_layers(root: str = "data/cifar10", train_batch: int = 128, test_batch: int = 100) -> str:
    """TorchvisionData CIFAR-10 for TRAIN (mirrored) and TEST, per-channel mean, scale ~1/std."""
    norm = "mean_value: 125.3 mean_value: 123.0 mean_value: 113.9 scale: 0.0157"
    return "".join(
        f'layer {{ name: "cifar" type: "TorchvisionData" top: "data" top: "label"\n'
        f'  include {{ phase: {phase} }}\n'
        f'  transform_param {{ {norm}{" mirror: true" if train else ""} }}\n'
        f'  torchvision_param {{ dataset: "CIFAR10" root: "{root}" train: {str(train).lower()} '
        f'batch_size: {bs} shuffle: {str(train).lower()} }} }}\n'
        for phase, train, bs in (("TRAIN", True, train_batch), ("TEST", False, test_batch)))


def resnet_cifar(n: int = 9, batch: int = 32, exits: tuple[int, ...] = (), data: str | None = None,
                 relay: bool = False, accuracy: bool = False) -> str:
    """Prototxt of the 6n+2-layer CIFAR ResNet (n=9: ResNet-56), by default TRAIN with an Input layer.

    ``exits``: weight-layer depths of MW-BP auxiliary exits (e.g. ``exit_layers(n)``);
    ``data``: the data layers' text (default: an Input of ``batch`` images and labels);
    ``relay``: add Relay BP c=1 gradient scopes; ``accuracy``: TEST Accuracy per exit.
    """
    at = {(layer - 1) // 2: f"exit{layer}" for layer in exits}
    text = [f'name: "{"Mw" if exits else ""}ResNet-{6 * n + 2}-CIFAR"\n', data or input_layer(batch),
            _conv("conv1", "data", 16, 3, 1, 1), _bn("conv1", "conv1"), _relu("conv1_relu", "conv1")]
    bottom, channels, tapped = "conv1", 16, []
    for block in range(1, 3 * n + 1):
        out = (16, 32, 64)[(block - 1) // n]
        stride = 2 if out != channels else 1
        name = block_name(n, block)
        text.append(_block(name, bottom, out, stride, out != channels))
        bottom, channels = name, out
        if block in at:
            stop = tapped[-2] if relay and len(tapped) >= 2 else None
            text.append(_head(f"{at[block]}_", name, 1, stop, accuracy))
            tapped.append(name)
    stop = tapped[-2] if relay and len(tapped) >= 2 else None
    text.append(_head("", bottom, None, stop, accuracy))
    return "".join(text)


SOLVER = """# generated by benchmarks/resnet56.py: MW-BP paper's CIFAR-10 setting (sec. 5.1):
# SGD momentum 0.9, weight decay 1e-4, batch 128, 400 epochs of 391 iterations,
# lr 0.1 divided by 10 at 40% and 60% of training.
net: "{net}"
test_iter: 100          # 100 x 100 = the 10,000 test images
test_interval: 3910     # every 10 epochs
test_initialization: false
base_lr: 0.1
momentum: 0.9
weight_decay: 0.0001
lr_policy: "multistep"
gamma: 0.1
stepvalue: 62560
stepvalue: 93840
max_iter: 156400
iters_per_epoch: 391
display: 100
average_loss: 20
snapshot: 39100
snapshot_prefix: "models/resnet56/snapshots/{mode_lower}"
random_seed: 1
solver_mode: CPU
bp_mode: {mode}
primary_loss: "loss"
"""
POWER = "loss_weight_schedule { type: MULTIWAY_POWER nu: 2 }   # the same weighting for every mode (sec. 5.1)\n"
SOLVERS = {"standard": ("STANDARD", "resnet56_mwbp.prototxt", ""),
           "joint": ("JOINT", "resnet56_mwbp.prototxt", POWER),
           "relay": ("RELAY", "resnet56_relay.prototxt", POWER),
           "multiway": ("MULTIWAY", "resnet56_mwbp.prototxt", POWER)}


def write_models(out: Path = ROOT / "models" / "resnet56") -> list[Path]:
    """Write the MW-BP / Relay ResNet-56 nets and one solver per BP mode (atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    head = "# generated by benchmarks/resnet56.py\n"
    files = {"resnet56_mwbp.prototxt": head + resnet_cifar(9, exits=PAPER_EXITS, data=cifar_layers(),
                                                           accuracy=True),
             "resnet56_relay.prototxt": head + resnet_cifar(9, exits=PAPER_EXITS, data=cifar_layers(),
                                                            relay=True, accuracy=True)}
    for name, (mode, net, extra) in SOLVERS.items():
        files[f"solver_{name}.prototxt"] = SOLVER.format(net=f"models/resnet56/{net}", mode=mode,
                                                         mode_lower=name) + extra
    written = []
    for name, text in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)
        written.append(out / name)
    return written


if __name__ == "__main__":
    for path in write_models():
        print(f"wrote {path.relative_to(ROOT)}")
    sys.exit(0)
