"""TorchvisionData (a netspec extension): a torchvision dataset already on disk,
e.g. ``torchvision_param { dataset: "CIFAR10" root: "data" train: true }``.
Nothing is ever downloaded (``download=False``); images keep torchvision's RGB
order and become (C, H, W) uint8 records, so transform_param applies as usual."""
from __future__ import annotations

import inspect

import numpy as np

from .base import Source

# record shapes of the datasets with a ``train`` flag, for shape inference without I/O
SHAPES = {"MNIST": (1, 28, 28), "FashionMNIST": (1, 28, 28), "KMNIST": (1, 28, 28),
          "QMNIST": (1, 28, 28), "CIFAR10": (3, 32, 32), "CIFAR100": (3, 32, 32),
          "USPS": (1, 16, 16)}
ROOT = ("torchvision_param", "root")
DATASET = ("torchvision_param", "dataset")


class TorchvisionSource(Source):
    param = "torchvision_param"

    def __init__(self, lp, phase, site):
        super().__init__(lp, phase, site)
        root = site.resolve(self.p.root, ROOT, "torchvision root")
        self.dataset = self._open(self._class(), str(root))

    def _class(self):
        import torchvision.datasets as tvd
        name = self.p.dataset
        cls = getattr(tvd, name, None)
        if not inspect.isclass(cls) or "train" not in inspect.signature(cls).parameters:
            raise self.site.error("E0501", f"'{name}' is not a torchvision dataset with a train/test split",
                                  DATASET, help=["supported: " + ", ".join(SHAPES)])
        return cls

    def _open(self, cls, root: str):
        try:
            return cls(root, train=self.p.train, download=False)
        except (RuntimeError, OSError, ValueError) as e:
            raise self.site.error("E0104", f"no {self.p.dataset} dataset under '{root}': {e}", ROOT,
                                  help=["netspec never downloads; fetch it with torchvision "
                                        "(download=True) once, then point root at it"]) from None

    def __len__(self) -> int:
        return len(self.dataset)

    def describe(self, i: int) -> str:
        return f"record {i} of {self.p.dataset} under '{self.dataset.root}'"

    def read(self, i: int) -> list[np.ndarray]:
        try:
            img, target = self.dataset[i]
        except Exception as e:       # torchvision raises whatever its decoder raises
            raise self.error(f"cannot read {self.describe(i)}: {e}", ROOT) from None
        a = np.asarray(img)
        a = a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))
        return [a, np.float32(target)][:len(self.tops)]

    def labels(self):
        targets = getattr(self.dataset, "targets", None)
        if targets is None:
            return super().labels()
        return np.asarray(targets).reshape(len(self), -1)[:, 0]
