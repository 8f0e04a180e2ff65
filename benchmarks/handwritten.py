"""Hand-written PyTorch twins of the benchmarked nets, and the weight maps onto them.

These are what a researcher would write without netspec: ``nn.Conv2d``/``nn.Linear``,
``nn.BatchNorm2d`` for Caffe's BatchNorm + Scale pair, ``F.cross_entropy`` for
SoftmaxWithLoss.  Nothing here is generated.  Each ``forward(data, label)`` returns the
unweighted loss tops under the compiled net's top names, so both sides are trained on the
same objective ``sum_i loss_weight_i * top_i`` (weights read from the net).

Each ``*_state(sd)`` maps a compiled module's ``state_dict`` (or any dict with its keys,
e.g. its gradients) onto the hand-written module's keys, so the two get identical weights.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.resnet56 import block_name


# -- ResNet-56 (CIFAR) ----------------------------------------------------------------------
class BasicBlock(nn.Module):
    """He et al.'s CIFAR basic block with a 1x1 projection shortcut on a stage change."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv_a = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn_a = nn.BatchNorm2d(cout)
        self.conv_b = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn_b = nn.BatchNorm2d(cout)
        self.proj = None
        if cin != cout:
            self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn_a(self.conv_a(x)))
        y = self.bn_b(self.conv_b(y))
        return F.relu(y + (x if self.proj is None else self.proj(x)))


class HandResNet(nn.Module):
    """The 6n+2 CIFAR ResNet (n=9: ResNet-56), written directly in PyTorch."""

    def __init__(self, n: int = 9):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for cout in (16, 32, 64):
            for _ in range(n):
                blocks.append(BasicBlock(cin, cout, 2 if cout != cin else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, 10)

    def forward(self, data, label):
        x = self.blocks(F.relu(self.bn1(self.conv1(data))))
        return {"loss": F.cross_entropy(self.fc(x.mean((2, 3))), label.long())}


def _bn_entries(dst: str, src: str, sd: dict) -> dict:
    """Caffe BatchNorm (running sums and their scale factor) + Scale -> one nn.BatchNorm2d."""
    s = sd[f"{src}_bn.scale_factor"]
    inv = torch.where(s == 0, torch.zeros_like(s), 1 / s)
    return {f"{dst}.weight": sd[f"{src}_scale.weight"], f"{dst}.bias": sd[f"{src}_scale.bias"],
            f"{dst}.running_mean": sd[f"{src}_bn.mean"] * inv,
            f"{dst}.running_var": sd[f"{src}_bn.variance"] * inv,
            f"{dst}.num_batches_tracked": torch.tensor(0)}


def resnet_state(sd: dict, n: int = 9) -> dict:
    """Compiled ResNet keys -> HandResNet keys."""
    out = {"conv1.weight": sd["conv1.weight"], "fc.weight": sd["fc.weight"], "fc.bias": sd["fc.bias"]}
    out |= _bn_entries("bn1", "conv1", sd)
    for b in range(1, 3 * n + 1):
        name, dst = block_name(n, b), f"blocks.{b - 1}"
        for part in "ab":
            out[f"{dst}.conv_{part}.weight"] = sd[f"{name}_{part}.weight"]
            out |= _bn_entries(f"{dst}.bn_{part}", f"{name}_{part}", sd)
        if f"{name}_proj.weight" in sd:
            out[f"{dst}.proj.0.weight"] = sd[f"{name}_proj.weight"]
            out |= _bn_entries(f"{dst}.proj.1", f"{name}_proj", sd)
    return out


# -- the deep plain digits net -----------------------------------------------------------------
class HandDigits(nn.Module):
    """12 conv+ReLU (3x3, pad 1), 2x2 max pool after conv6, exits after conv 3/6/9 and 12."""

    WIDTHS = (16, 16, 16, 32, 32, 32, 32, 32, 32, 32, 32, 32)
    EXITS = {3: "exit1", 6: "exit2", 9: "exit3", 12: "main"}

    def __init__(self):
        super().__init__()
        cin = 1
        self.convs = nn.ModuleList()
        for w in self.WIDTHS:
            self.convs.append(nn.Conv2d(cin, w, 3, 1, 1))
            cin = w
        self.heads = nn.ModuleDict({name: nn.Linear(self.WIDTHS[i - 1], 10) for i, name in self.EXITS.items()})

    def forward(self, data, label):
        x, losses, label = data, {}, label.long()
        for i, conv in enumerate(self.convs, start=1):
            x = F.relu(conv(x))
            if i in self.EXITS:
                name = self.EXITS[i]
                losses[f"{name}_loss"] = F.cross_entropy(self.heads[name](x.mean((2, 3))), label)
            if i == 6:
                x = F.max_pool2d(x, 2, 2)
        return losses


def digits_state(sd: dict) -> dict:
    """Compiled digits keys -> HandDigits keys."""
    out = {}
    for i in range(1, 13):
        out |= {f"convs.{i - 1}.weight": sd[f"conv{i}.weight"], f"convs.{i - 1}.bias": sd[f"conv{i}.bias"]}
    for name in HandDigits.EXITS.values():
        out |= {f"heads.{name}.weight": sd[f"{name}_fc.weight"], f"heads.{name}.bias": sd[f"{name}_fc.bias"]}
    return out


# -- GoogLeNet (BVLC train_val, TRAIN: two auxiliary heads) -------------------------------------
class Inception(nn.Module):
    """Szegedy et al.'s inception module: 1x1 | 1x1-3x3 | 1x1-5x5 | maxpool-1x1, concatenated."""

    def __init__(self, cin, c1, c3r, c3, c5r, c5, cp):
        super().__init__()
        self.b1 = nn.Conv2d(cin, c1, 1)
        self.b3r, self.b3 = nn.Conv2d(cin, c3r, 1), nn.Conv2d(c3r, c3, 3, padding=1)
        self.b5r, self.b5 = nn.Conv2d(cin, c5r, 1), nn.Conv2d(c5r, c5, 5, padding=2)
        self.bp = nn.Conv2d(cin, cp, 1)

    def forward(self, x):
        return torch.cat([F.relu(self.b1(x)), F.relu(self.b3(F.relu(self.b3r(x)))),
                          F.relu(self.b5(F.relu(self.b5r(x)))),
                          F.relu(self.bp(F.max_pool2d(x, 3, 1, 1, ceil_mode=True)))], 1)


class AuxHead(nn.Module):
    """GoogLeNet's auxiliary classifier: avgpool 5/3, 1x1 conv 128, fc 1024, dropout 0.7, fc 1000."""

    def __init__(self, cin: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, 128, 1)
        self.fc = nn.Linear(2048, 1024)
        self.classifier = nn.Linear(1024, 1000)

    def forward(self, x, label):
        x = F.relu(self.conv(F.avg_pool2d(x, 5, 3, ceil_mode=True)))
        x = F.dropout(F.relu(self.fc(x.flatten(1))), 0.7, training=self.training)
        return F.cross_entropy(self.classifier(x), label)


INCEPTIONS = {"3a": (192, 64, 96, 128, 16, 32, 32), "3b": (256, 128, 128, 192, 32, 96, 64),
              "4a": (480, 192, 96, 208, 16, 48, 64), "4b": (512, 160, 112, 224, 24, 64, 64),
              "4c": (512, 128, 128, 256, 24, 64, 64), "4d": (512, 112, 144, 288, 32, 64, 64),
              "4e": (528, 256, 160, 320, 32, 128, 128), "5a": (832, 256, 160, 320, 32, 128, 128),
              "5b": (832, 384, 192, 384, 48, 128, 128)}


class GoogLeNetTrunk(nn.Module):
    """What both hand-written GoogLeNets share: the stem, nine inceptions, the main classifier."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3)
        self.conv2_reduce = nn.Conv2d(64, 64, 1)
        self.conv2 = nn.Conv2d(64, 192, 3, padding=1)
        self.inception = nn.ModuleDict({k: Inception(*v) for k, v in INCEPTIONS.items()})
        self.classifier = nn.Linear(1024, 1000)

    def to_4a(self, x):
        """conv1 .. inception 3b and its pooling: the input of inception 4a."""
        inc = self.inception
        x = F.max_pool2d(F.relu(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.local_response_norm(x, 5, 1e-4, 0.75, 1.0)
        x = F.local_response_norm(F.relu(self.conv2(F.relu(self.conv2_reduce(x)))), 5, 1e-4, 0.75, 1.0)
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        return F.max_pool2d(inc["3b"](inc["3a"](x)), 3, 2, ceil_mode=True)


class HandGoogLeNet(GoogLeNetTrunk):
    """BVLC GoogLeNet for training (LRN after the stem, aux heads after 4a and 4d)."""

    def __init__(self):
        super().__init__()
        self.aux1, self.aux2 = AuxHead(512), AuxHead(528)

    def forward(self, data, label):
        label, inc = label.long(), self.inception
        x = inc["4a"](self.to_4a(data))
        loss1 = self.aux1(x, label)            # before 4b: dropout draws in the net's order
        x = inc["4d"](inc["4c"](inc["4b"](x)))
        loss2 = self.aux2(x, label)
        x = F.max_pool2d(inc["4e"](x), 3, 2, ceil_mode=True)
        x = F.avg_pool2d(inc["5b"](inc["5a"](x)), 7, 1)
        x = F.dropout(x, 0.4, training=self.training).flatten(1)
        return {"loss1/loss1": loss1, "loss2/loss2": loss2,
                "loss3/loss3": F.cross_entropy(self.classifier(x), label)}


INCEPTION_BRANCHES = {"b1": "1x1", "b3r": "3x3_reduce", "b3": "3x3", "b5r": "5x5_reduce", "b5": "5x5", "bp": "pool_proj"}
_GOOGLENET_FLAT = {"conv1": "conv1_7x7_s2", "conv2_reduce": "conv2_3x3_reduce", "conv2": "conv2_3x3",
                   "classifier": "loss3_classifier",
                   **{f"aux{i}.{part}": f"loss{i}_{part}" for i in (1, 2) for part in ("conv", "fc", "classifier")},
                   **{f"inception.{k}.{b}": f"inception_{k}_{c}" for k in INCEPTIONS for b, c in INCEPTION_BRANCHES.items()}}


def googlenet_state(sd: dict) -> dict:
    """Compiled GoogLeNet keys -> HandGoogLeNet keys."""
    return {f"{dst}.{blob}": sd[f"{src}.{blob}"] for dst, src in _GOOGLENET_FLAT.items()
            for blob in ("weight", "bias")}
