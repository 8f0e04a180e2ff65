"""HDF5Data: ``source`` is a text file listing .h5 files, one a line; each file holds
one dataset per top, named as the top (e.g. ``data`` and ``label``), with the
records along the first axis.  As in Caffe, a whole file is read into memory
when it is first needed and values become float32."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ...diagnostics import did_you_mean
from .. import paths
from .base import Source

SOURCE = ("hdf5_data_param", "source")


def list_files(site, source: str) -> tuple[Path, list[tuple[Path, int]]]:
    """The list file and the (h5 path, line number) pairs it names.

    A listed path is tried against the working directory, then the list file's
    folder, then the prototxt's folder."""
    listing = site.resolve(source, SOURCE, "HDF5 source list")
    try:
        lines = listing.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise site.error("E0104", f"cannot read HDF5 source list '{listing}': {e}", SOURCE) from None
    files = []
    for n, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            continue
        found = paths.resolve(name, None) or paths.resolve(str(listing.parent / name), None) \
            or paths.resolve(name, site.net_path)
        if found is None:
            raise site.error("E0104", f"'{name}' (line {n} of '{listing}') does not exist", SOURCE,
                             help=["list one .h5 file per line, relative to the working directory "
                                   "or to the list file"])
        files.append((found, n))
    if not files:
        raise site.error("E0104", f"HDF5 source list '{listing}' names no file", SOURCE)
    return listing, files


def dataset_shapes(site, path: Path, tops: list[str]) -> dict[str, tuple]:
    """The shape of each top's dataset in ``path``; a wrong name is an error."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            names = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
            for t in tops:
                if t not in names:
                    raise site.error("E0701", f"'{path}' has no dataset '{t}' (the layer's top '{t}')",
                                     ("top", tops.index(t)),
                                     help=did_you_mean(t, names) or [f"datasets in the file: {', '.join(names) or 'none'}"],
                                     notes=["HDF5Data reads the dataset named like each top"])
            return {t: tuple(f[t].shape) for t in tops}
    except OSError as e:
        raise site.error("E0104", f"'{path}' is not a readable HDF5 file: {e}", SOURCE) from None


class HDF5Source(Source):
    param = "hdf5_data_param"

    def __init__(self, lp, phase, site):
        super().__init__(lp, phase, site)
        self.listing, listed = list_files(site, self.p.source)
        self.files = [f for f, _ in listed]
        self.starts, total, first = [], 0, None
        for f in self.files:
            shapes = dataset_shapes(site, f, self.tops)
            self._check_shapes(f, shapes, first)
            first = first or shapes
            self.starts.append(total)
            total += shapes[self.tops[0]][0]
        self.total = total
        self._hcache: dict[int, list[np.ndarray]] = {}

    def _check_shapes(self, f, shapes: dict, first: Optional[dict]) -> None:
        rows = {t: s[0] if s else 0 for t, s in shapes.items()}
        if len(set(rows.values())) != 1:
            raise self.error(f"the datasets of '{f}' have different numbers of rows: "
                             + ", ".join(f"{t}: {n}" for t, n in rows.items()), ("name",))
        if first:
            for t in self.tops:
                if shapes[t][1:] != first[t][1:]:
                    raise self.error(f"dataset '{t}' of '{f}' has records of shape {shapes[t][1:]}, "
                                     f"but '{self.files[0]}' has {first[t][1:]}")

    def __len__(self) -> int:
        return self.total

    def groups(self):
        ends = self.starts[1:] + [self.total]
        return [range(s, e) for s, e in zip(self.starts, ends)]

    def locate(self, i: int) -> tuple[int, int]:
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return k, i - self.starts[k]

    def describe(self, i: int) -> str:
        k, row = self.locate(i)
        return f"row {row} of '{self.files[k]}'"

    def _file(self, k: int) -> list[np.ndarray]:
        cache = self.__dict__.setdefault("_hcache", {})
        if k not in cache:
            import h5py
            if len(cache) >= 4:          # bounded: shuffled and class-aware reads jump between files
                cache.pop(next(iter(cache)))
            with h5py.File(self.files[k], "r") as f:
                cache[k] = [np.asarray(f[t][()], np.float32) for t in self.tops]
        return cache[k]

    def read(self, i: int) -> list[np.ndarray]:
        k, row = self.locate(i)
        return [a[row] for a in self._file(k)]

    def labels(self):
        if len(self.tops) < 2:
            return None
        return np.concatenate([self._file(k)[1].reshape(len(g), -1)[:, 0]
                               for k, g in enumerate(self.groups())])
