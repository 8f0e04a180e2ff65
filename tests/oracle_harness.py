"""Run one case of ../shared/caffe-oracle through netspec and compare with real Caffe.

``run_case(case_dir)`` returns a list of :class:`Mismatch` (empty = the case passes).
Layer and net cases: forward blobs, blob diffs, param diffs, exact zero diffs and
params changed by forward.  Solver cases are handled by the solver tests.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from netspec.check import check_net, load
from netspec.compile.module import compile_net
from netspec.interop.caffemodel import copy_blobs, read_caffemodel
from netspec.lower import NetState

from conftest import SHARED

ORACLE = SHARED / "caffe-oracle"


@dataclass
class Mismatch:
    what: str
    detail: str

    def __str__(self) -> str:
        return f"{self.what}: {self.detail}"


def manifest() -> list[dict]:
    if not (ORACLE / "manifest.json").exists():
        return []
    return json.loads((ORACLE / "manifest.json").read_text())["cases"]


def close(actual: np.ndarray, expected: np.ndarray, tol: dict) -> tuple[bool, str]:
    actual = np.asarray(actual, dtype=np.float64).reshape(np.shape(expected))
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    atol = tol["atol_scale"] * scale
    ok = np.allclose(actual, expected, rtol=tol["rtol"], atol=atol)
    err = float(np.abs(actual - expected).max()) if expected.size else 0.0
    return ok, f"max abs err {err:.3g} (atol {atol:.3g}, rtol {tol['rtol']})"


def build(case_dir: Path, case: dict):
    """Check and compile the case's net with every blob as an output; load its weights."""
    _, src = load(case_dir / "net.prototxt")
    net = check_net(src, NetState.of(case["phase"]))
    latest, first = {}, _first_versions(net)
    for node in net.graph.layers():
        for b in node.tops:
            latest[b.name] = b
    # first versions too: an in-place chain's diff in Caffe is the gradient of its first version
    wanted = list(latest.values()) + [b for b in first.values() if b not in latest.values()]
    compiled = compile_net(net, outputs=wanted, seed=0)
    compiled.oracle_outputs, compiled.oracle_latest = wanted, latest
    copy_blobs(compiled, read_caffemodel(case_dir / "weights.caffemodel"))
    return net, compiled


def run_case(case_dir: Path) -> list[Mismatch]:
    case_dir = Path(case_dir)
    case = json.loads((case_dir / "case.json").read_text())
    net, compiled = build(case_dir, case)
    module = compiled.module
    module.train(case["phase"] == "TRAIN")
    inputs = dict(np.load(case_dir / "inputs.npz"))
    with_diff = set(case.get("blobs_with_diff", []))
    scratch = _scale_scratch(net, case)
    args = {}
    for name in compiled.generated.inputs:
        t = torch.from_numpy(inputs[name].copy())
        t.requires_grad_(name in with_diff and name not in scratch)
        args[name] = t
    retained = {}
    out = _forward(module, compiled, args, _first_versions(net), retained)
    bad: list[Mismatch] = []
    fwd = np.load(case_dir / "forward.npz")
    tol_f = case["tolerance"]["forward"]
    for name in fwd.files:
        if name not in out:
            if name in args:
                continue
            bad.append(Mismatch(f"forward {name}", "blob not produced by netspec"))
            continue
        ok, msg = close(out[name].detach().numpy(), fwd[name], tol_f)
        if not ok:
            bad.append(Mismatch(f"forward {name}", msg))
    _params_after_forward(case_dir, compiled, tol_f, bad)
    if case.get("backward"):
        _backward(case_dir, case, compiled, out, args, retained, bad, scratch)
    return bad


def _scale_scratch(net, case) -> dict:
    """Input blobs whose Caffe diff is scratch, not a gradient: without force_backward an
    Input needs no gradient, yet ScaleLayer::Backward_cpu stores top_diff * bottom_data in
    its bottom's diff while computing the scale's own gradient.  Maps blob -> Scale top."""
    if case.get("force_backward"):
        return {}
    inputs = {b.name for n in net.graph.layers() if n.type == "Input" for b in n.tops}
    return {n.bottoms[0].name: n.tops[0].name for n in net.graph.layers()
            if n.type == "Scale" and n.bottoms[0].name in inputs and "weight" in n.impl.blobs}


def _first_versions(net) -> dict:
    first = {}
    for node in net.graph.layers():
        for b in node.tops:
            first.setdefault(b.name, b)
    return first


def _forward(module, compiled, args, first, retained):
    """Run forward; return the latest version of every blob by name, and keep the first
    version in ``retained`` (its grad retained) for the blob's diff: Caffe's in-place
    layers overwrite one diff, which ends up as the gradient of the first version."""
    result = module(**args)
    out = {}
    for key, blob in zip(compiled.generated.outputs, compiled.oracle_outputs):
        if blob == compiled.oracle_latest[blob.name]:
            out[blob.name] = result[key]
        if blob == first.get(blob.name) and result[key].requires_grad:
            result[key].retain_grad()
            retained[blob.name] = result[key]
    for name, t in args.items():
        out.setdefault(name, t)
    return out


def _params_after_forward(case_dir, compiled, tol, bad) -> None:
    path = case_dir / "params_after_forward.npz"
    if not path.exists():
        return
    state = dict(compiled.module.named_parameters()) | dict(compiled.module.named_buffers())
    data = np.load(path)
    for key in data.files:
        _, layer, i = key.split("/") if key.count("/") == 2 else (None, *key.rsplit("/", 2)[-2:])
        t = state[compiled.blob_key(layer, int(i))]
        ok, msg = close(t.detach().numpy(), data[key], tol)
        if not ok:
            bad.append(Mismatch(f"params after forward {key}", msg))


def _backward(case_dir, case, compiled, out, args, retained, bad, scratch) -> None:
    tops = np.load(case_dir / "top_diffs.npz")
    seeds = [(out[n], torch.from_numpy(tops[n].copy())) for n in tops.files if n in out]
    seeds = [(t, g.reshape(t.shape)) for t, g in seeds if t.requires_grad]
    params = dict(compiled.module.named_parameters())
    for p in params.values():
        p.grad = None
    if seeds:
        torch.autograd.backward([t for t, _ in seeds], [g.to(t.dtype) for t, g in seeds])
    bwd = np.load(case_dir / "backward.npz")
    tol = case["tolerance"]["backward"]
    zero = set(case.get("zero_param_diffs", []))
    for key in bwd.files:
        kind, rest = key.split("/", 1)
        if kind == "blob" and rest in scratch:
            # netspec computes no gradient here; check that Caffe's value is the scratch product
            product = bwd[f"blob/{scratch[rest]}"] * args[rest].detach().numpy()
            if not np.array_equal(bwd[key], product):
                bad.append(Mismatch(f"diff {rest}", "Caffe wrote a diff that is not Scale's scratch"))
            if args[rest].grad is not None:
                bad.append(Mismatch(f"diff {rest}", "netspec back-propagated into an Input that "
                                    "needs no gradient (no force_backward)"))
            continue
        if kind == "blob":
            _blob_diff(rest, bwd[key], args, retained, tol, bad, seeded=tops)
            continue
        layer, i = rest.rsplit("/", 1)
        bkey = compiled.blob_key(layer, int(i))
        p = params.get(bkey)
        g = None if p is None else p.grad
        actual = np.zeros_like(bwd[key]) if g is None else g.detach().numpy()
        if key in zero:
            if np.any(actual != 0):
                bad.append(Mismatch(f"param diff {rest}", "Caffe leaves it exactly zero"))
            continue
        ok, msg = close(actual, bwd[key], tol)
        if not ok:
            bad.append(Mismatch(f"param diff {rest}", msg))


def _blob_diff(name, expected, args, retained, tol, bad, seeded) -> None:
    """A blob's diff: an input's grad, or the grad of the blob's first version.  A blob
    outside autograd keeps what Caffe would leave in its diff: the seeded top diff for an
    output (e.g. Pooling's mask top, which no backward writes), zeros otherwise."""
    t = args.get(name) if name in args else retained.get(name)
    g = None if t is None else t.grad
    if g is not None:
        actual = g.detach().numpy()
    elif name in seeded.files:
        actual = seeded[name]
    else:
        actual = np.zeros_like(expected)
    ok, msg = close(actual, expected, tol)
    if not ok:
        bad.append(Mismatch(f"diff {name}", msg))
