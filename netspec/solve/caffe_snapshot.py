"""Snapshots in Caffe's format (``snapshot_format: BINARYPROTO`` or ``HDF5``) for a Solver.

Written when a solver file asks for a ``snapshot_format`` (netspec's native ``.netspec``
snapshot stays the default, since it also holds the RNG state and per-loss optimizer
state).  The files are read and written by ``netspec/interop/snapshot.py``; this module
maps the solver onto them: the whole train net compiled beside the training module, and
one history blob per learnable blob in the net's order (AdaDelta and Adam: all first
moments, then all second moments).  MULTIWAY keeps optimizer state per loss: its slots
follow one another in schedule order, which only netspec reads back.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..compile.module import compile_net
from ..diagnostics import Diagnostic, NetspecError
from ..interop.caffemodel import load_caffemodel
from ..interop.export import blob_tensor, write_caffemodel
from ..interop.snapshot import (is_caffe_solverstate, read_any_solverstate, write_caffemodel_h5,
                                write_solverstate, write_solverstate_h5)
from ..proto import caffe_pb2
from .executor import share_parameters
from .lr_policy import step_index
from .updates import HISTORY_SLOTS, solver_type

__all__ = ["write_caffe_snapshot", "restore_caffe_snapshot", "is_caffe_solverstate"]


def export_net(solver):
    """The whole train net compiled, its blobs aliasing the training module's: Caffe's file
    holds every layer, also those the schedule prunes from training (they keep fillers)."""
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


def _history(solver, full) -> list[torch.Tensor]:
    """The history tensors in Caffe's order (zeros where a slot has none yet)."""
    out = []
    for slot, p, k in history_keys(solver, full):
        hist = solver.executor.state[slot].get(p, {}).get(k)
        out.append(hist if hist is not None else torch.zeros_like(_blob(full, p)))
    return out


def write_caffe_snapshot(solver, stem: str | Path) -> tuple[Path, Path]:
    """The snapshot pair of the solver's ``snapshot_format``: (weights file, state file)."""
    full = export_net(solver)
    step = step_index(solver.param, max(0, solver.iter - 1))
    if solver.param.snapshot_format == caffe_pb2.SolverParameter.HDF5:
        model = write_caffemodel_h5(full, f"{stem}.caffemodel.h5")
        state = write_solverstate_h5(f"{stem}.solverstate.h5", solver.iter, str(model), step,
                                     _history(solver, full))
    else:
        model = write_caffemodel(full, f"{stem}.caffemodel")
        state = write_solverstate(f"{stem}.solverstate", solver.iter, str(model), step, _history(solver, full))
    return model, state


def restore_caffe_snapshot(solver, path: str | Path) -> None:
    """Resume from a Caffe ``.solverstate`` or ``.solverstate.h5``: its ``learned_net``
    weights, iteration and history."""
    it, learned_net, history = read_any_solverstate(path)
    apply_solver_state(solver, path, it, learned_net, history)


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
