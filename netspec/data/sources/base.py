"""The Source contract: a data layer's records, read by index.

A source turns one Caffe data layer into random access over its records:
``read(i)`` gives one array per top (top 0 the data, as (C, H, W) for images),
``describe(i)`` says which file and record ``i`` is (for errors), ``labels()``
gives each record's class (for class-aware sampling), ``groups()`` the index
ranges that Caffe shuffles as units (HDF5 files).  Sources are pickled into
DataLoader workers, so open handles are reopened lazily in each process.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ...diagnostics import NetspecError
from ..site import LayerSite


class Source:
    """Base class; subclasses set ``param`` (the layer's parameter field)."""

    param: str = ""

    def __init__(self, lp, phase: int, site: LayerSite):
        self.lp, self.phase, self.site = lp, phase, site
        self.p = getattr(lp, self.param)
        self.tops = list(lp.top)

    # -- what subclasses provide ----------------------------------------------------
    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, i: int) -> list[np.ndarray]:
        raise NotImplementedError

    def describe(self, i: int) -> str:
        return f"record {i}"

    def labels(self) -> Optional[np.ndarray]:
        """The label of every record (top 1), or None when the layer has no label top."""
        if len(self.tops) < 2:
            return None
        return np.asarray([self.read(i)[1] for i in range(len(self))]).reshape(len(self), -1)[:, 0]

    def groups(self) -> Optional[Sequence[range]]:
        return None

    @property
    def batch_size(self) -> int:
        return self.p.batch_size

    @property
    def shuffle(self) -> bool:
        """The layer's own ``shuffle`` flag (sampling_param overrides it)."""
        return getattr(self.p, "shuffle", False)

    # -- batches ----------------------------------------------------------------------
    def read_batch(self, indices: Sequence[int]) -> list[list[np.ndarray]]:
        """Per top, the records ``indices`` (not yet stacked: the transform may crop)."""
        records = [self.read(i) for i in indices]
        return [[r[t] for r in records] for t in range(len(self.tops))]

    def error(self, message: str, field_path: tuple = ("name",), **kw) -> NetspecError:
        return self.site.error("E0701", message, field_path, **kw)

    def __getstate__(self):
        # open handles (h5py files, LMDB environments) are not picklable: reopen in workers
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_h")}
