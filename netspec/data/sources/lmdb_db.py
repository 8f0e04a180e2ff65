"""Data with ``backend: LMDB``: a Caffe LMDB of serialized ``Datum`` records, read
in key order (Caffe's cursor order).  Raw Datums hold C*H*W bytes (or float_data);
encoded ones hold an image file, decoded with Pillow in its own colour mode unless
``force_encoded_color``."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from google.protobuf.message import DecodeError

from ...proto import caffe_pb2
from .base import Source
from .images import decode

SOURCE = ("data_param", "source")


def datum_array(datum, force_color: bool = False) -> np.ndarray:
    """A Datum's pixels as (C, H, W): uint8 for byte data, float32 for float_data.
    Raises ValueError when the sizes disagree."""
    if datum.encoded:
        return decode(datum.data, True if force_color else None)
    shape = (datum.channels, datum.height, datum.width)
    n = int(np.prod(shape))
    if datum.data:
        if len(datum.data) != n:
            raise ValueError(f"{len(datum.data)} data bytes for channels x height x width = "
                             f"{' x '.join(map(str, shape))} = {n}")
        return np.frombuffer(datum.data, np.uint8).reshape(shape)
    if len(datum.float_data) != n or n == 0:
        raise ValueError(f"{len(datum.float_data)} float_data values for shape {shape}")
    return np.asarray(datum.float_data, np.float32).reshape(shape)


_ENVS: dict = {}


def open_env(path: Path):
    """A read-only environment for ``path``, one per process: py-lmdb refuses to open
    an environment twice in a process, and a handle must not cross a fork."""
    import lmdb
    key = (os.getpid(), str(Path(path).resolve()))
    if key not in _ENVS:
        _ENVS[key] = lmdb.open(str(path), readonly=True, lock=False, readahead=False,
                               subdir=Path(path).is_dir(), max_readers=256)
    return _ENVS[key]


def is_lmdb(path: Path) -> bool:
    return (path / "data.mdb").exists() or (path.is_file() and path.suffix == ".mdb")


class LMDBSource(Source):
    param = "data_param"

    def __init__(self, lp, phase, site):
        super().__init__(lp, phase, site)
        self.path = site.resolve(self.p.source, SOURCE, "LMDB")
        if self.p.backend != caffe_pb2.DataParameter.LMDB and not is_lmdb(self.path):
            raise site.error("E0501", "only backend: LMDB is supported", ("data_param", "backend"),
                             help=["convert the LevelDB to LMDB (Caffe's convert_imageset -backend lmdb)"])
        self.keys = self._keys()
        if not self.keys:
            raise site.error("E0104", f"LMDB '{self.path}' holds no record", SOURCE)

    def _env(self):
        import lmdb
        try:
            return open_env(self.path)
        except lmdb.Error as e:
            raise self.site.error("E0104", f"'{self.path}' is not a readable LMDB: {e}", SOURCE) from None

    def _keys(self) -> list[bytes]:
        with self._env().begin() as txn:
            return list(txn.cursor().iternext(keys=True, values=False))

    def __len__(self) -> int:
        return len(self.keys)

    def describe(self, i: int) -> str:
        return f"record {i} (key '{self.keys[i].decode(errors='replace')}') of LMDB '{self.path}'"

    def datum(self, i: int):
        with self._env().begin() as txn:
            raw = txn.get(self.keys[i])
        datum = caffe_pb2.Datum()
        try:
            datum.ParseFromString(raw)
        except DecodeError as e:
            raise self.error(f"{self.describe(i)} is not a Caffe Datum: {e}", SOURCE) from None
        return datum

    def read(self, i: int) -> list[np.ndarray]:
        datum = self.datum(i)
        try:
            data = datum_array(datum, self.p.force_encoded_color)
        except (OSError, ValueError) as e:
            raise self.error(f"{self.describe(i)} is corrupt: {e}", SOURCE) from None
        return [data, np.float32(datum.label)][:len(self.tops)]

    def labels(self):
        if len(self.tops) < 2:
            return None
        return np.asarray([self.datum(i).label for i in range(len(self))])
