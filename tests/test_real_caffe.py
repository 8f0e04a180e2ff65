"""Real BVLC Caffe reads what netspec writes and computes what netspec computes.

Runs only where a Caffe root file system exists (``tools/setup_caffe_root.sh``; the path in
NETSPEC_CAFFE_ROOT, default /tmp/caffe-focal) and this process may chroot into it (root).
CI has neither, so there it skips and says why.
"""
import os
from pathlib import Path

import pytest

from conftest import shared_path

CAFFE_ROOT = Path(os.environ.get("NETSPEC_CAFFE_ROOT", "/tmp/caffe-focal"))
pytestmark = pytest.mark.skipif(
    not (CAFFE_ROOT / "usr" / "lib" / "python3" / "dist-packages" / "caffe").is_dir()
    or not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason=f"no real Caffe: build one with `sudo sh tools/setup_caffe_root.sh {CAFFE_ROOT}`")


def crosscheck(*cases):
    from benchmarks.caffe_crosscheck import main
    return {r["case"]: r for r in main(["--caffe-root", str(CAFFE_ROOT), "--cases", *cases])}


def test_caffe_runs_every_exported_digits_exit_as_netspec_does():
    rows = crosscheck("digits")
    assert set(rows) == {"digits_exit1_loss", "digits_exit2_loss", "digits_exit3_loss",
                         "digits_main_loss", "digits_all"}
    for name, r in rows.items():
        # float32 through 12 convolutions with other BLAS kernels: rounding, not semantics
        assert r["prob"] < 1e-5 and r["worst_rel"] < 1e-5, (name, r)
        assert r["same_class"] == 1.0, (name, r)           # on all 297 test digits
    assert rows["digits_exit1_loss"]["params"] == 4970 < rows["digits_main_loss"]["params"]


def test_caffe_runs_googlenet_aux_heads_and_a_batchnorm_resnet():
    shared_path("caffe-zoo", "models", "bvlc_googlenet", "train_val.prototxt")     # skips without it
    rows = crosscheck("googlenet", "resnet50")
    assert set(rows) == {"googlenet_loss1", "googlenet_loss2", "googlenet_loss3", "resnet50"}
    for name, r in rows.items():
        assert r["prob"] < 1e-5 and r["worst_rel"] < 1e-5, (name, r)


def test_caffe_trains_the_digits_net_as_netspec_does():
    """12 iterations of SGD with momentum, weight decay, clipping and an lr drop every 4 from
    one set of weights.  Float32 rounding grows along the way (1e-7 at first, up to about 1e-5
    by the end); torch's momentum rule (lr outside the buffer) is 7e-3 away in the losses and
    0.6 in the updates, so the bounds separate semantics from rounding."""
    (row,) = crosscheck("train").values()
    assert row["iters"] == 12
    assert row["loss_rel"] < 1e-4 and row["blob_rel"] < 2e-2, row
    assert row["first"]["main_loss"][0] == pytest.approx(row["first"]["main_loss"][1], rel=1e-6)
