"""Caffe's snapshot files: ``PREFIX_iter_N.caffemodel`` + ``PREFIX_iter_N.solverstate``
(``snapshot_format: BINARYPROTO``) or ``.caffemodel.h5`` + ``.solverstate.h5`` (``HDF5``).

The layout is Caffe's ``SGDSolver::SnapshotSolverStateTo{BinaryProto,HDF5}``: ``iter``,
``learned_net``, ``current_step`` and the history blobs; the weights are what
``Net::ToProto``/``Net::ToHDF5`` write for the whole net.  This module reads and writes
the files; which optimizer slot goes in which history blob is the solver's business
(``netspec/solve/caffe_snapshot.py``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..diagnostics import Diagnostic, NetspecError
from ..fileio import write_atomic
from ..proto import caffe_pb2
from .blobproto import blob_array
from .export import to_blob_proto, to_net_parameter


def write_solverstate(path: str | Path, it: int, learned_net: str, current_step: int, history) -> Path:
    """A binary ``.solverstate`` (SolverState) with ``history`` (tensors, Caffe's order)."""
    state = caffe_pb2.SolverState(iter=it, learned_net=str(learned_net), current_step=current_step)
    for hist in history:
        to_blob_proto(hist, state.history.add())
    write_atomic(Path(path), state.SerializeToString())
    return Path(path)


def read_solverstate(path: str | Path) -> tuple[int, str, list[np.ndarray]]:
    """(iter, learned_net, history arrays) of a binary ``.solverstate``."""
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(Path(path).read_bytes())
    except OSError as e:
        raise NetspecError([Diagnostic("E0700", f"cannot read solver state '{path}': "
                                       f"{e.strerror}")]) from None
    except Exception as e:                       # DecodeError and friends: damaged file
        raise NetspecError([Diagnostic("E0700", f"'{path}' is not a valid .solverstate: {e}")]) from None
    return state.iter, state.learned_net, [blob_array(b) for b in state.history]


def write_caffemodel_h5(full, path: str | Path) -> Path:
    """``full``'s weights as Caffe's Net::ToHDF5: datasets ``data/<layer>/<i>``, a group per
    layer, a shared blob saved only by its owner."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _atomic_h5(path) as f:
        data = f.create_group("data")
        for lp in to_net_parameter(full).layer:
            group = data.create_group(lp.name)
            for i, blob in enumerate(lp.blobs):
                if f"{lp.name}/{i}" not in full.net.shared:
                    group[str(i)] = blob_array(blob)
    return path


def write_solverstate_h5(path: str | Path, it: int, learned_net: str, current_step: int, history) -> Path:
    """A ``.solverstate.h5``: ``iter``, ``learned_net``, ``current_step``, ``history/<i>``."""
    with _atomic_h5(Path(path)) as f:
        f["iter"] = np.array([it], dtype=np.int32)
        f["learned_net"] = np.bytes_(str(learned_net))
        f["current_step"] = np.array([current_step], dtype=np.int32)
        group = f.create_group("history")
        for n, t in enumerate(history):
            group[str(n)] = t.detach().cpu().float().numpy()
    return Path(path)


def read_solverstate_h5(path: str | Path) -> tuple[int, str, list[np.ndarray]]:
    """(iter, learned_net, history arrays) of a ``.solverstate.h5`` written by Caffe or netspec."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            it, net = int(np.asarray(f["iter"]).reshape(-1)[0]), f["learned_net"][()]
            history = [np.asarray(f["history"][str(i)], dtype=np.float32) for i in range(len(f["history"]))]
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise NetspecError([Diagnostic("E0700", f"'{path}' is not a readable .solverstate.h5: {e}")]) from None
    return it, net.decode() if isinstance(net, bytes) else str(net), history


def read_any_solverstate(path: str | Path) -> tuple[int, str, list[np.ndarray]]:
    """A ``.solverstate`` or ``.solverstate.h5``, by its suffix as Caffe decides."""
    return read_solverstate_h5(path) if str(path).endswith(".h5") else read_solverstate(path)


def is_caffe_solverstate(path: str | Path) -> bool:
    return str(path).endswith((".solverstate", ".solverstate.h5"))


class _atomic_h5:
    """``with _atomic_h5(path) as f``: an h5py file written beside ``path``, renamed on success."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, path.with_name(path.name + f".tmp{os.getpid()}")

    def __enter__(self):
        import h5py
        try:
            self.file = h5py.File(self.tmp, "w")
        except OSError as e:
            raise NetspecError([Diagnostic("E0700", f"cannot write '{self.path}': {e}")]) from None
        return self.file

    def __exit__(self, kind, *_):
        self.file.close()
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
