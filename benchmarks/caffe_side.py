"""The half of the Caffe cross-check that runs inside real Caffe's Python (pycaffe).

It imports nothing of netspec (pycaffe lives in its own interpreter, here Ubuntu 20.04's
Python 3.8 with BVLC Caffe 1.0 at 99bd997), so it only reads files and writes files:

    python3 caffe_side.py DIR

``DIR/cases.json`` lists cases ``{"name", "prototxt", "caffemodel", "inputs": {blob: .npy}}``
(paths relative to DIR).  For each, Caffe loads the net in TEST phase with the weights, sets
the inputs, runs one forward and writes every blob's data to ``DIR/<name>.caffe.npz``, plus
``DIR/<name>.caffe.json`` with the forward's median wall time over ``repeats`` runs.  A case
``{"kind": "train", "name", "solver", "iters", "losses"}`` trains instead: every loss per
iteration to the json, the final learnable blobs (``layer/i``) to the npz.
A net Caffe refuses (it aborts the process) is reported by the driver as a failure.
"""
import json
import os
import sys
import time

os.environ.setdefault("GLOG_minloglevel", "2")          # Caffe's INFO log would drown the output

import numpy as np   # noqa: E402
import caffe         # noqa: E402


def run_case(root, case):
    caffe.set_mode_cpu()
    net = caffe.Net(os.path.join(root, case["prototxt"]), caffe.TEST,
                    weights=os.path.join(root, case["caffemodel"]))
    for blob, npy in case["inputs"].items():
        data = np.load(os.path.join(root, npy))
        net.blobs[blob].reshape(*data.shape)
        net.blobs[blob].data[...] = data
    net.reshape()
    times = []
    for _ in range(max(1, case.get("repeats", 1))):
        start = time.perf_counter()
        net.forward()
        times.append(time.perf_counter() - start)
    np.savez(os.path.join(root, case["name"] + ".caffe.npz"),
             **{name: blob.data.copy() for name, blob in net.blobs.items()})
    with open(os.path.join(root, case["name"] + ".caffe.json"), "w") as f:
        json.dump({"forward_s": sorted(times)[len(times) // 2], "times": times,
                   "params": int(sum(b.data.size for bs in net.params.values() for b in bs))}, f)


def train_case(root, case):
    """``caffe train`` in Python: the solver file's iterations, recording every loss top after
    each step (that iteration's forward), then the final learnable blobs."""
    caffe.set_mode_cpu()
    os.chdir(root)                        # the solver's and net's relative paths, as caffe train
    solver = caffe.get_solver(case["solver"])
    losses = {name: [] for name in case["losses"]}
    for _ in range(case["iters"]):
        solver.step(1)
        for name in losses:
            losses[name].append(float(solver.net.blobs[name].data.sum()))
    params = {f"{layer}/{i}": b.data.copy() for layer, blobs in solver.net.params.items()
              for i, b in enumerate(blobs)}
    np.savez(os.path.join(root, case["name"] + ".caffe.npz"), **params)
    with open(os.path.join(root, case["name"] + ".caffe.json"), "w") as f:
        json.dump({"losses": losses}, f)


def main(root):
    with open(os.path.join(root, "cases.json")) as f:
        cases = json.load(f)
    only = sys.argv[2] if len(sys.argv) > 2 else None
    for case in cases:
        if only is None or case["name"] == only:
            (train_case if case.get("kind") == "train" else run_case)(root, case)
            print("caffe ran", case["name"], flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
