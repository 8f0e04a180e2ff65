"""Cross-check netspec against real BVLC Caffe: exported models and TEST-phase forwards.

    python benchmarks/caffe_crosscheck.py [--caffe-root /tmp/caffe-focal] [--repeats 7]
                                          [--cases digits googlenet caffenet alexnet resnet50]
                                          [--digits-weights digits_multiway_iter_400.netspec]

Real Caffe runs in its own root file system (``tools/setup_caffe_root.sh`` builds one:
Ubuntu 20.04's ``caffe-cpu`` package, BVLC Caffe 1.0 at commit 99bd997, with pycaffe), the
netspec side here.  The two exchange files under ``ROOT/tmp/netspec-xc``; Caffe's half is
``benchmarks/caffe_side.py``, run as ``chroot ROOT python3 ...`` (not part of CI: CI has no
Caffe).  Cases:

* ``digits``: every exit of the digits net (``netspec export --exit``) and the whole net,
  on the 297 test digits, with seeded weights or a trained snapshot (``--digits-weights``);
* ``googlenet``: BVLC GoogLeNet's two auxiliary heads and its main exit, exported from
  ``train_val.prototxt``, batch 1;
* ``caffenet``, ``alexnet``, ``googlenet-deploy``, ``resnet50``: the deploy files with random
  weights (trained-looking BatchNorm statistics) written by netspec as a ``.caffemodel``.

For each case Caffe must accept the prototxt and the ``.caffemodel`` as written, and every
blob both sides hold is compared (largest absolute difference, relative to the blob's
largest magnitude), ``prob`` first.  With ``--repeats`` > 1 the forward is also timed on
both sides (1 thread each, batch as above, median), as the table of issue 12 did.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import netspec  # noqa: E402
from benchmarks.common import vary_biases  # noqa: E402
from netspec.cli.main import main as netspec_main  # noqa: E402

ZOO = Path(os.environ.get("NETSPEC_SHARED", ROOT.parent / "shared")) / "caffe-zoo" / "models"
DIGITS = ROOT / "models" / "digits" / "deep_plain.prototxt"
DIGITS_EXITS = ("exit1_loss", "exit2_loss", "exit3_loss", "main_loss")
GOOGLENET_EXITS = ("loss1/loss", "loss2/loss", "loss3/loss3")
DEPLOY = {"caffenet": (ZOO / "bvlc_reference_caffenet" / "deploy.prototxt", 227),
          "alexnet": (ZOO / "bvlc_alexnet" / "deploy.prototxt", 227),
          "googlenet-deploy": (ZOO / "bvlc_googlenet" / "deploy.prototxt", 224),
          "resnet50": (None, 224)}


def _export(net: Path, weights: Path, out: Path, exit: str | None, extra=()) -> Path:
    args = ["export", str(net), "--weights", str(weights), "--to", "prototxt", "-o", str(out)]
    args += (["--exit", exit] if exit else []) + list(extra)
    if netspec_main(args) != 0:
        raise SystemExit(f"netspec export failed: {' '.join(args)}")
    return out


def _case(xc: Path, name: str, proto: Path, inputs: dict, repeats: int) -> dict:
    for blob, x in inputs.items():
        np.save(xc / f"{name}.{blob}.npy", x.numpy())
    return {"name": name, "prototxt": proto.name, "caffemodel": proto.with_suffix(".caffemodel").name,
            "inputs": {blob: f"{name}.{blob}.npy" for blob in inputs}, "repeats": repeats}


def digits_cases(xc: Path, weights: Path | None, repeats: int) -> list[tuple[dict, dict]]:
    import h5py
    if weights is None:
        weights = netspec.Net(DIGITS, phase="TEST", seed=5).save(xc / "digits_seeded.netspec")
    with h5py.File(ROOT / "models" / "digits" / "digits_test.h5") as f:
        x = torch.from_numpy(f["data"][:])                 # all 297 test digits
    full = netspec.Net(DIGITS, phase="TEST", weights=weights)
    with torch.no_grad():
        full.forward(data=x, label=torch.zeros(len(x)))
    cases = []
    for loss in DIGITS_EXITS + (None,):
        stem = f"digits_{loss or 'all'}"
        proto = _export(DIGITS, weights, xc / f"{stem}.prototxt", loss, ["--batch", str(len(x))])
        if loss:
            want = {"prob": F.softmax(full.blobs[loss.replace("_loss", "_fc")], 1)}
        else:
            want = {f"{e.replace('_loss', '_fc')}_prob": F.softmax(full.blobs[e.replace("_loss", "_fc")], 1)
                    for e in DIGITS_EXITS}
        cases.append((_case(xc, stem, proto, {"data": x}, repeats), want))
    return cases


def googlenet_cases(xc: Path, repeats: int) -> list[tuple[dict, dict]]:
    path = ZOO / "bvlc_googlenet" / "train_val.prototxt"
    shapes = ["--input-shape", "data=1,3,224,224", "--input-shape", "label=1"]
    full = netspec.Net(path, phase="TEST", input_shapes={"data": (1, 3, 224, 224), "label": (1,)}, seed=2)
    g = torch.Generator().manual_seed(0)
    vary_biases(full, g)
    weights = full.save(xc / "googlenet.netspec")
    x = torch.randn(1, 3, 224, 224, generator=g)
    with torch.no_grad():
        full.forward(data=x, label=torch.zeros(1))
    cases = []
    for loss, top in zip(GOOGLENET_EXITS, ("loss1/classifier", "loss2/classifier", "loss3/classifier")):
        stem = "googlenet_" + loss.split("/")[0]
        proto = _export(path, weights, xc / f"{stem}.prototxt", loss, shapes)
        cases.append((_case(xc, stem, proto, {"data": x}, repeats), {"prob": F.softmax(full.blobs[top], 1)}))
    return cases


def deploy_case(xc: Path, name: str, repeats: int, batch: int = 1) -> tuple[dict, dict]:
    """A zoo deploy file (or the generated ResNet-50) with random weights netspec writes."""
    from benchmarks.bench_inference import _gen, _randomize
    from netspec.check import check_net, load
    from netspec.compile.module import compile_net, refold
    from netspec.interop.export import write_caffemodel
    from netspec.lower import NetState
    path, size = DEPLOY[name]
    proto = xc / f"{name}.prototxt"
    if path is None:
        proto.write_text(_gen().resnet50_deploy(batch))
    else:
        shutil.copy(path, proto)
    _, src = load(proto)
    compiled = compile_net(check_net(src, NetState.of("TEST"), {"data": (batch, 3, size, size)}), seed=0)
    _randomize(compiled)
    refold(compiled.module)
    write_caffemodel(compiled, proto.with_suffix(".caffemodel"))
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    return _case(xc, name, proto, {"data": x}, repeats), {}


TRAIN_SOLVER = """net: "deep_plain.prototxt"
base_lr: 0.05
momentum: 0.9
weight_decay: 0.0001
clip_gradients: 1
lr_policy: "step"
gamma: 0.1
stepsize: {step}
max_iter: {iters}
display: 0
snapshot_after_train: false
random_seed: 1
solver_mode: CPU
weights: "init.caffemodel"
"""


def train_case(xc: Path, iters: int) -> dict:
    """The digits net trained by Caffe's rules from one set of weights: every loss weighted by
    its loss_weight (Caffe's only mode; netspec's JOINT), SGD with momentum, weight decay,
    global-norm clipping and a step; the data in file order (``shuffle: false``, since the
    shuffle draws from Caffe's own RNG)."""
    from netspec.interop.export import write_caffemodel
    text = DIGITS.read_text().replace("shuffle: true", "shuffle: false")
    (xc / "deep_plain.prototxt").write_text(text)
    for name in ("train.txt", "digits_train.h5"):
        shutil.copy(DIGITS.parent / name, xc / name)
    init = netspec.Net(xc / "deep_plain.prototxt", phase="TRAIN", seed=3)
    write_caffemodel(init.compiled, xc / "init.caffemodel")
    # the lr drops every 4 iterations: where Caffe's lr-inside-momentum rule differs from
    # torch's, the trajectories part at once
    (xc / "train_caffe.prototxt").write_text(TRAIN_SOLVER.format(step=4, iters=iters))
    (xc / "train_netspec.prototxt").write_text(TRAIN_SOLVER.format(step=4, iters=iters) + "bp_mode: JOINT\n")
    return {"kind": "train", "name": "train_digits", "solver": "train_caffe.prototxt", "iters": iters,
            "losses": [l.layer for l in init.net.losses]}


def netspec_train(xc: Path, case: dict) -> tuple[dict, dict]:
    """The same iterations in netspec: (loss name -> per-iteration values, final blobs)."""
    solver = netspec.Solver(xc / "train_netspec.prototxt", log=lambda line: None)
    start = {k: v.detach().clone() for k, v in solver.executor.params.items()}
    losses = {name: [] for name in case["losses"]}
    for rec in solver.step(case["iters"]):
        for name in losses:
            losses[name].append(rec["losses"][name])
    return losses, {k: (start[k], v.detach().clone()) for k, v in solver.executor.params.items()}


def compare_training(mine: tuple[dict, dict], xc: Path, name: str) -> dict:
    """Largest relative difference of any loss at any iteration, and of any blob's training
    update (``||w_netspec - w_caffe|| / ||w_caffe - w_start||``)."""
    losses, params = mine
    theirs = json.loads((xc / f"{name}.caffe.json").read_text())["losses"]
    blobs = dict(np.load(xc / f"{name}.caffe.npz"))
    loss_rel = max(abs(a - b) / max(abs(b), 1e-30) for k in losses for a, b in zip(losses[k], theirs[k]))
    # how far apart the two trainings moved each blob, against how far Caffe moved it
    blob_rel = max(float((params[k][1].double() - torch.from_numpy(v).double()).norm())
                   / max(float((torch.from_numpy(v).double() - params[k][0].double()).norm()), 1e-30)
                   for k, v in blobs.items())
    first = {k: (losses[k][0], theirs[k][0]) for k in losses}
    last = {k: (losses[k][-1], theirs[k][-1]) for k in losses}
    return {"iters": len(next(iter(losses.values()))), "loss_rel": loss_rel, "blob_rel": blob_rel,
            "first": first, "last": last, "blobs": len(blobs)}


def netspec_forward(xc: Path, case: dict, repeats: int) -> tuple[dict, float]:
    """Re-import the files Caffe reads, run them in netspec; (blobs, median forward seconds)."""
    net = netspec.Net(xc / case["prototxt"], phase="TEST", weights=xc / case["caffemodel"])
    if net.missing:
        raise SystemExit(f"{case['name']}: netspec left blobs unfilled: {net.missing[:5]}")
    inputs = {b: torch.from_numpy(np.load(xc / f)) for b, f in case["inputs"].items()}
    times = []
    with torch.no_grad():
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            net.forward(**inputs)
            times.append(time.perf_counter() - start)
    return {k: v.detach().clone() for k, v in net.blobs.items()}, sorted(times)[len(times) // 2]


def same_classes(mine: dict, caffe: dict) -> float:
    """The share of samples whose most probable class is the same on both sides (every prob)."""
    pairs = [(mine[k].argmax(1), torch.from_numpy(v).argmax(1)) for k, v in caffe.items()
             if k.endswith("prob") and k in mine and v.ndim == 2]
    if not pairs:
        return float("nan")
    return float(sum((a == b).sum() for a, b in pairs)) / sum(len(a) for a, _ in pairs)


def compare(mine: dict, caffe: dict) -> tuple[float, str, float]:
    """(prob's relative difference, worst blob, its relative difference) over shared blob names."""
    diffs = {}
    for name, ref in caffe.items():
        if name in mine and tuple(mine[name].shape) == ref.shape:
            ref_t = torch.from_numpy(ref).double()
            scale = max(float(ref_t.abs().max()), 1e-30)
            diffs[name] = float((mine[name].double() - ref_t).abs().max()) / scale
    prob = max((v for k, v in diffs.items() if k.endswith("prob")), default=float("nan"))
    worst = max(diffs, key=diffs.get)
    return prob, worst, diffs[worst]


def run_caffe(root: Path, xc: Path, name: str) -> None:
    inside = "/" + str(xc.relative_to(root))
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", GLOG_minloglevel="2")
    done = subprocess.run(["chroot", str(root), "python3", f"{inside}/caffe_side.py", inside, name],
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"Caffe refused {name}:\n{done.stderr[-3000:]}")


def check_training(root: Path, xc: Path, training: dict) -> dict:
    """Train in Caffe, then in netspec (from ``xc``: the relative data paths, as for Caffe)."""
    run_caffe(root, xc, training["name"])
    cwd = os.getcwd()
    os.chdir(xc)
    try:
        result = compare_training(netspec_train(xc, training), xc, training["name"])
    finally:
        os.chdir(cwd)
    first, last = result["first"]["main_loss"], result["last"]["main_loss"]
    print(f"{'train_digits':>22}: {result['iters']} iterations, every loss within {result['loss_rel']:.1e} "
          f"relative of Caffe's, every blob's update within {result['blob_rel']:.1e}; main_loss "
          f"{first[0]:.6f} -> {last[0]:.6f} (Caffe {first[1]:.6f} -> {last[1]:.6f})", flush=True)
    return {"case": "train_digits", **result}


def check_forward(root: Path, xc: Path, case: dict, want: dict, repeats: int) -> dict:
    """One TEST forward in Caffe and in netspec on the files Caffe read; the table's row."""
    run_caffe(root, xc, case["name"])
    caffe = dict(np.load(xc / f"{case['name']}.caffe.npz"))
    timing = json.loads((xc / f"{case['name']}.caffe.json").read_text())
    mine, mine_s = netspec_forward(xc, case, repeats)
    mine.update(want)               # the full trained net's softmax of that exit, where known
    prob, worst, worst_d = compare(mine, caffe)
    print(f"{case['name']:>22}: Caffe read it; prob rel diff {prob:.1e}; worst blob {worst} {worst_d:.1e}"
          + (f"; forward netspec {mine_s * 1e3:.1f} ms / Caffe {timing['forward_s'] * 1e3:.1f} ms"
             if repeats > 1 else ""), flush=True)
    return {"case": case["name"], "blobs": len(caffe), "params": timing["params"], "prob": prob,
            "same_class": same_classes(mine, caffe), "worst": worst, "worst_rel": worst_d,
            "caffe_ms": timing["forward_s"] * 1e3, "netspec_ms": mine_s * 1e3}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--caffe-root", type=Path, default=Path(os.environ.get("NETSPEC_CAFFE_ROOT", "/tmp/caffe-focal")))
    ap.add_argument("--cases", nargs="+", default=["digits", "googlenet", *DEPLOY, "train"])
    ap.add_argument("--train-iters", type=int, default=12, help="iterations of the training case")
    ap.add_argument("--digits-weights", type=Path)
    ap.add_argument("--repeats", type=int, default=1, help="forward timings per side (median)")
    ap.add_argument("--out", type=Path, help="also write the table as markdown")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    xc = args.caffe_root / "tmp" / "netspec-xc"
    shutil.rmtree(xc, ignore_errors=True)
    xc.mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("caffe_side.py"), xc)
    cases = []
    if "digits" in args.cases:
        cases += digits_cases(xc, args.digits_weights, args.repeats)
    if "googlenet" in args.cases:
        cases += googlenet_cases(xc, args.repeats)
    cases += [deploy_case(xc, n, args.repeats) for n in args.cases if n in DEPLOY]
    training = train_case(xc, args.train_iters) if "train" in args.cases else None
    (xc / "cases.json").write_text(json.dumps([c for c, _ in cases] + ([training] if training else [])))
    rows = [check_training(args.caffe_root, xc, training)] if training else []
    rows += [check_forward(args.caffe_root, xc, case, want, args.repeats) for case, want in cases]
    if args.out:
        args.out.write_text(markdown([r for r in rows if r["case"] != "train_digits"], args.repeats > 1))
    return rows


def markdown(rows: list[dict], timed: bool) -> str:
    head = "| case | Caffe blobs | parameters | prob rel. diff | same class | worst blob (rel. diff) |"
    sep = "|---|---|---|---|---|---|"
    if timed:
        head += " netspec ms | Caffe ms | netspec / Caffe |"
        sep += "---|---|---|"
    lines = [head, sep]
    for r in rows:
        line = (f"| {r['case']} | {r['blobs']} | {r['params']:,} | {r['prob']:.1e} | "
                f"{r['same_class']:.1%} | {r['worst']} ({r['worst_rel']:.1e}) |")
        if timed:
            line += f" {r['netspec_ms']:.1f} | {r['caffe_ms']:.1f} | {r['netspec_ms'] / r['caffe_ms']:.2f} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
