"""Every case of ../shared/caffe-oracle (real BVLC Caffe 1.0) through netspec.

Layer and net cases: every blob after forward, every blob and param diff after backward,
the param diffs Caffe leaves exactly zero, the statistics forward updates.  Solver cases:
the solver file run by netspec's own Solver (its HDF5Data layer, ``weights:
init.caffemodel``, lr policy and update rule), iteration by iteration: loss, learning rate
and every parameter.  New cases in the manifest are picked up automatically; a mismatch is
a netspec bug, never a reason to loosen the tolerance the case gives.
"""
import json
import math

import numpy as np
import pytest

from oracle_harness import ORACLE, close, manifest, run_case

CASES = [c for c in manifest() if c["kind"] in ("layer", "net")]
SOLVERS = [c for c in manifest() if c["kind"] == "solver"]
KNOWN_KINDS = {"layer", "net", "solver"}


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_oracle_case(case, monkeypatch):
    case_dir = ORACLE / case["dir"]
    monkeypatch.chdir(case_dir)          # Caffe resolves relative paths (H.binaryproto) from the cwd
    mismatches = run_case(case_dir)
    assert not mismatches, "\n".join(map(str, mismatches))


@pytest.mark.parametrize("case", SOLVERS, ids=[c["name"] for c in SOLVERS])
def test_oracle_solver_trajectory(case, monkeypatch):
    """``Solver("solver.prototxt").step(1)`` k times reproduces Caffe's trajectory."""
    from netspec.solve.solver import Solver
    case_dir = ORACLE / case["dir"]
    monkeypatch.chdir(case_dir)          # data_list.txt, net.prototxt, init.caffemodel: cwd-relative
    meta = json.loads((case_dir / "case.json").read_text())
    traj, tol = np.load(case_dir / "trajectory.npz"), meta["tolerance"]
    solver = Solver("solver.prototxt", log=lambda line: None)
    blobs = sorted(k.split("/", 1)[1] for k in traj.files if k.startswith("param/"))
    errors = _param_errors(solver, traj, blobs, 0, tol)
    assert not errors, "init.caffemodel was not loaded as Caffe loads it:\n" + "\n".join(errors)
    for k in range(meta["iterations"]):
        rec = solver.step(1)[0]
        ok, msg = close(np.float32(rec["loss"]), traj["loss"][k], tol["loss"])
        if not ok:
            errors.append(f"iteration {k}: loss {rec['loss']:.7g} vs Caffe {traj['loss'][k]:.7g}: {msg}")
        if not math.isclose(rec["lr"], traj["lr"][k], rel_tol=tol["lr"]["rtol"]):
            errors.append(f"iteration {k}: lr {rec['lr']!r} vs Caffe {traj['lr'][k]!r}")
        errors += _param_errors(solver, traj, blobs, k + 1, tol)
        assert not errors, "\n".join(errors)


def _param_errors(solver, traj, blobs, k, tol) -> list[str]:
    errors = []
    for b in blobs:
        ok, msg = close(solver.executor.params[b].detach().numpy(), traj[f"param/{b}"][k], tol["params"])
        if not ok:
            errors.append(f"param {b} after iteration {k}: {msg}")
    return errors


def test_the_oracle_is_present_and_complete():
    if not ORACLE.exists():
        pytest.skip("../shared/caffe-oracle is not present")
    counts = {}
    for c in manifest():
        counts[c["kind"]] = counts.get(c["kind"], 0) + 1
    assert set(counts) <= KNOWN_KINDS, f"new case kinds {set(counts) - KNOWN_KINDS}: add a runner for them"
    assert counts.get("layer", 0) >= 125 and counts.get("net", 0) >= 8 and counts.get("solver", 0) >= 10
