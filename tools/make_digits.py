"""Convert the UCI handwritten digits, as scikit-learn bundles them, into the HDF5
train/test splits under models/digits/ (the offline default dataset).

    pip install scikit-learn h5py        # scikit-learn only for this script
    python tools/make_digits.py [--out models/digits] [--test 297] [--seed 0]

1797 8x8 grey images (values 0..16) of the digits 0-9 become float32 ``data``
(N x 1 x 8 x 8, scaled to [0, 1]) and float32 ``label`` (N) datasets; the split
is stratified by class and seeded, and the files are written without
timestamps so that re-running gives the same bytes.  ``train.txt`` and
``test.txt`` are HDF5Data source lists naming the files (relative to the list).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np


def load() -> tuple[np.ndarray, np.ndarray]:
    """The digits as (N, 1, 8, 8) float32 in [0, 1] and (N,) float32 labels."""
    from sklearn.datasets import load_digits
    digits = load_digits()           # bundled with scikit-learn: no download
    x = (digits.images.astype(np.float32) / 16.0)[:, None]
    return x, digits.target.astype(np.float32)


def split(x, y, n_test: int, seed: int):
    from sklearn.model_selection import train_test_split
    return train_test_split(x, y, test_size=n_test, stratify=y, random_state=seed)


def write(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    with h5py.File(path, "w", track_order=False) as f:
        for name, a in (("data", x), ("label", y)):
            f.create_dataset(name, data=a, compression="gzip", compression_opts=9,
                             shuffle=True, track_times=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="models/digits")
    ap.add_argument("--test", type=int, default=297, help="test records (stratified)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x_train, x_test, y_train, y_test = split(*load(), args.test, args.seed)
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        write(out / f"digits_{name}.h5", x, y)
        (out / f"{name}.txt").write_text(f"digits_{name}.h5\n")
        print(f"{out / f'digits_{name}.h5'}: data {x.shape}, label {y.shape}, "
              f"per class {np.bincount(y.astype(int)).tolist()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
