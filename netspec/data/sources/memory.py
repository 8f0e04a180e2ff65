"""MemoryData: records given from Python (``Feeder.set_memory_data``), like Caffe's
``MemoryDataLayer::Reset``; data is (N, channels, height, width), labels (N,)."""
from __future__ import annotations

import numpy as np

from .base import Source


class MemorySource(Source):
    param = "memory_data_param"

    def __init__(self, lp, phase, site):
        super().__init__(lp, phase, site)
        self.data = self.label = None

    def set_arrays(self, data, labels=None) -> None:
        """Give the records; shapes are checked against memory_data_param."""
        p = self.p
        data = np.asarray(data, np.float32)
        want = (p.channels, p.height, p.width)
        if data.ndim != 4 or data.shape[1:] != want:
            raise self.site.error("E0501", f"MemoryData expects data of shape (N, {want[0]}, {want[1]}, "
                                  f"{want[2]}) from memory_data_param, got {data.shape}", ("name",))
        if len(self.tops) > 1:
            if labels is None:
                raise self.site.error("E0501", "MemoryData has a label top but no labels were given")
            labels = np.asarray(labels, np.float32).reshape(-1)
            if len(labels) != len(data):
                raise self.site.error("E0501", f"{len(data)} records but {len(labels)} labels")
        if len(data) == 0:
            raise self.site.error("E0501", "MemoryData was given no records")
        self.data, self.label = data, labels

    def _need(self) -> None:
        if self.data is None:
            raise self.site.error("E0701", "MemoryData has no data yet",
                                  help=["give it with Feeder.set_memory_data(layer, data, labels)"])

    def __len__(self) -> int:
        self._need()
        return len(self.data)

    def describe(self, i: int) -> str:
        return f"memory record {i}"

    def read(self, i: int) -> list[np.ndarray]:
        self._need()
        out = [self.data[i]]
        return out + [self.label[i]] if len(self.tops) > 1 else out

    def labels(self):
        self._need()
        return None if self.label is None else self.label
