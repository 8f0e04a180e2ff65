"""netspec's own weight and snapshot files (``.netspec``): a ``torch.save`` dict with
``version``, ``iter``, ``net``, ``weights`` (a state_dict) and, for solver snapshots,
the optimizer state per loss, RNG state and smoothed losses.

Reading, version checking, writing (atomically) and copying weights into a module live
here; ``netspec.solve`` builds and consumes the solver's part of the dict.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..diagnostics import Diagnostic, NetspecError
from ..fileio import atomic_writer

SNAPSHOT_VERSION = 1


def write_snapshot(path: str | Path, state: dict) -> Path:
    """Write a snapshot dict (``version`` added when absent) atomically: temp file, then rename."""
    path = Path(path)
    with atomic_writer(path) as f:
        torch.save({"version": SNAPSHOT_VERSION} | state, f)
    return path


def read_snapshot(path: str | Path) -> dict:
    """Load a netspec snapshot, with a clear error for a missing or corrupt file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise NetspecError([Diagnostic("E0700", f"snapshot '{path}' does not exist")]) from None
    except Exception as e:  # torch raises many types for a damaged file
        raise NetspecError([Diagnostic("E0700", f"'{path}' is not a readable netspec snapshot: "
                                       f"{str(e).splitlines()[0] if str(e) else type(e).__name__}",
                                       help=["the file may be truncated; use an earlier snapshot"])]) from None
    if not isinstance(state, dict) or state.get("version") != SNAPSHOT_VERSION:
        raise NetspecError([Diagnostic("E0700", f"'{path}' is not a netspec snapshot (version "
                                       f"{SNAPSHOT_VERSION})")])
    return state


def load_weights(module: torch.nn.Module, weights: dict, source: str) -> list[str]:
    """Copy snapshot weights into ``module`` in place (keeps parameter identity and aliases).

    Keys present in both must have equal shapes; returns the module keys left unfilled.
    """
    own = dict(module.state_dict(keep_vars=True))
    bad = [f"'{k}': snapshot {tuple(v.shape)} vs net {tuple(own[k].shape)}"
           for k, v in weights.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise NetspecError([Diagnostic("E0700", f"{source}: shapes differ for " + "; ".join(bad))])
    with torch.no_grad():
        for k, v in weights.items():
            if k in own:
                own[k].data.copy_(v.to(own[k].device, own[k].dtype))
    return [k for k in own if k not in weights]


