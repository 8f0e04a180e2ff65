"""Caffe's snapshots: ``PREFIX_iter_N.caffemodel`` + ``PREFIX_iter_N.solverstate``
(``snapshot_format: BINARYPROTO``) or ``.caffemodel.h5`` + ``.solverstate.h5`` (``HDF5``).

Written when a solver file asks for a ``snapshot_format`` (netspec's native
``.netspec`` snapshot stays the default, since it also holds the RNG state and per-loss
optimizer state).  The layout is Caffe's ``SGDSolver::SnapshotSolverStateTo{BinaryProto,
HDF5}``: ``iter``, ``learned_net``, ``current_step`` and one history blob per learnable
blob in the net's order (AdaDelta and Adam: all first moments, then all second moments);
the weights are what ``Net::ToProto``/``Net::ToHDF5`` write for the whole train net.  MULTIWAY keeps optimizer state per loss: its slots follow one another
in schedule order, which only netspec reads back.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..diagnostics import Diagnostic, NetspecError
from ..proto import caffe_pb2
from ..solve.lr_policy import step_index
from ..solve.updates import HISTORY_SLOTS, solver_type
from .caffemodel import blob_array, load_caffemodel
from ..fileio import write_atomic
from .export import blob_tensor, caffemodel_bytes, to_blob_proto, to_net_parameter


def export_net(solver):
    """The whole train net compiled, its blobs aliasing the training module's: Caffe's file
    holds every layer, also those the schedule prunes from training (they keep fillers)."""
    from ..compile.module import compile_net
    from ..solve.executor import share_parameters
    net = solver.net
    full = compile_net(net, outputs=[b for n in net.graph.layers() for b in n.tops], seed=solver.seed)
    full.module.to(solver.device)
    share_parameters(solver.executor.main, full)
    return full


def history_keys(solver, full) -> list[tuple[str, str, str]]:
    """(update slot, param key, history slot) in Caffe's ``history_`` order."""
    kinds = HISTORY_SLOTS[solver_type(solver.param)]
    slots = sorted(solver.executor.state, key=_slot_order(solver))
    return [(slot, p, k) for slot in slots for k in kinds for p in caffe_blob_keys(full)]


def caffe_blob_keys(full) -> list[str]:
    """Caffe's ``learnable_params_`` order: every blob of every layer (BatchNorm statistics
    included, their history stays zero), a shared blob once, by its owner."""
    graph, shared = full.net.graph, full.net.shared
    return [f"{l}/{i}" for l in full.generated.layers
            for i in range(len(graph.layer(l).impl.blobs)) if f"{l}/{i}" not in shared]


def _blob(full, key: str):
    layer, i = key.rsplit("/", 1)
    return blob_tensor(full, layer, int(i))


def _slot_order(solver):
    order = [s.slot for s in solver.schedule.steps if hasattr(s, "slot")]
    return lambda slot: order.index(slot) if slot in order else len(order)


def write_binaryproto_snapshot(solver, stem: str | Path) -> tuple[Path, Path]:
    """Write ``stem.caffemodel`` and ``stem.solverstate`` for ``solver`` at its iteration."""
    model, state_path = Path(f"{stem}.caffemodel"), Path(f"{stem}.solverstate")
    model.parent.mkdir(parents=True, exist_ok=True)
    full = export_net(solver)
    write_atomic(model, caffemodel_bytes(full))
    state = caffe_pb2.SolverState(iter=solver.iter, learned_net=str(model),
                                  current_step=step_index(solver.param, max(0, solver.iter - 1)))
    for slot, p, k in history_keys(solver, full):
        hist = solver.executor.state[slot].get(p, {}).get(k)
        to_blob_proto(hist if hist is not None else torch.zeros_like(_blob(full, p)), state.history.add())
    write_atomic(state_path, state.SerializeToString())
    return model, state_path


def restore_binaryproto_snapshot(solver, path: str | Path) -> None:
    """Resume from a ``.solverstate``: its ``learned_net`` weights, iteration and history."""
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(Path(path).read_bytes())
    except OSError as e:
        raise NetspecError([Diagnostic("E0700", f"cannot read solver state '{path}': "
                                       f"{e.strerror}")]) from None
    except Exception as e:                       # DecodeError and friends: damaged file
        raise NetspecError([Diagnostic("E0700", f"'{path}' is not a valid .solverstate: {e}")]) from None
    apply_solver_state(solver, path, state.iter, state.learned_net, [blob_array(b) for b in state.history])


def apply_solver_state(solver, path, it: int, learned_net: str, history: list[np.ndarray]) -> None:
    """Load ``learned_net`` and the ``history`` arrays (Caffe's order) into ``solver``."""
    full = export_net(solver)
    keys = history_keys(solver, full)
    if len(history) != len(keys):
        raise NetspecError([Diagnostic("E0700", f"'{path}' holds {len(history)} history blobs; this "
                                       f"solver and net need {len(keys)}",
                                       help=["resume with the solver file and net that wrote it"])])
    model = Path(learned_net)
    if not model.is_absolute() and not model.exists():
        model = Path(path).parent / model.name
    load_caffemodel(full, model)                # full aliases the training module's tensors
    for (slot, p, k), arr in zip(keys, history):
        target = _blob(full, p)
        if arr.size != target.numel():
            raise NetspecError([Diagnostic("E0700", f"'{path}': history of '{p}' has {arr.size} values, "
                                           f"the parameter {target.numel()}")])
        if p not in solver.executor.params:         # statistics: Caffe's zero history
            continue
        solver.executor.state[slot].setdefault(p, {})[k] = torch.from_numpy(
            np.ascontiguousarray(arr)).reshape(target.shape).to(target.device, target.dtype)
    solver.iter = it


# -- snapshot_format: HDF5 (Caffe's Net::ToHDF5 and SnapshotSolverStateToHDF5) ------------

def write_hdf5_snapshot(solver, stem: str | Path) -> tuple[Path, Path]:
    """Write ``stem.caffemodel.h5`` (datasets ``data/<layer>/<i>``, a group per layer) and
    ``stem.solverstate.h5`` (``iter``, ``learned_net``, ``current_step``, ``history/<i>``)."""
    model, state_path = Path(f"{stem}.caffemodel.h5"), Path(f"{stem}.solverstate.h5")
    model.parent.mkdir(parents=True, exist_ok=True)
    full = export_net(solver)
    with _atomic_h5(model) as f:
        data = f.create_group("data")
        for lp in to_net_parameter(full).layer:
            group = data.create_group(lp.name)
            for i, blob in enumerate(lp.blobs):
                if f"{lp.name}/{i}" not in full.net.shared:     # Caffe saves owned params only
                    group[str(i)] = blob_array(blob)
    with _atomic_h5(state_path) as f:
        f["iter"] = np.array([solver.iter], dtype=np.int32)
        f["learned_net"] = np.bytes_(str(model))
        f["current_step"] = np.array([step_index(solver.param, max(0, solver.iter - 1))], dtype=np.int32)
        history = f.create_group("history")
        for n, (slot, p, k) in enumerate(history_keys(solver, full)):
            hist = solver.executor.state[slot].get(p, {}).get(k)
            t = hist if hist is not None else torch.zeros_like(_blob(full, p))
            history[str(n)] = t.detach().cpu().float().numpy()
    return model, state_path


def restore_hdf5_snapshot(solver, path: str | Path) -> None:
    """Resume from a ``.solverstate.h5`` written by Caffe or netspec."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            it, net = int(np.asarray(f["iter"]).reshape(-1)[0]), f["learned_net"][()]
            history = [np.asarray(f["history"][str(i)], dtype=np.float32) for i in range(len(f["history"]))]
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise NetspecError([Diagnostic("E0700", f"'{path}' is not a readable .solverstate.h5: {e}")]) from None
    apply_solver_state(solver, path, it, net.decode() if isinstance(net, bytes) else str(net), history)


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


# -- dispatch by the solver's snapshot_format and by file name ----------------------------

WRITERS = {"BINARYPROTO": write_binaryproto_snapshot, "HDF5": write_hdf5_snapshot}
READERS = {".solverstate": restore_binaryproto_snapshot, ".solverstate.h5": restore_hdf5_snapshot}


def write_caffe_snapshot(solver, stem: str | Path) -> tuple[Path, Path]:
    """The snapshot pair of the solver's ``snapshot_format``: (weights file, state file)."""
    fmt = caffe_pb2.SolverParameter.SnapshotFormat.Name(solver.param.snapshot_format)
    return WRITERS[fmt](solver, stem)


def is_caffe_solverstate(path: str | Path) -> bool:
    return str(path).endswith(tuple(READERS))


def restore_caffe_snapshot(solver, path: str | Path) -> None:
    """Resume from a Caffe ``.solverstate`` or ``.solverstate.h5``."""
    suffix = ".solverstate.h5" if str(path).endswith(".h5") else ".solverstate"
    READERS[suffix](solver, path)
