"""The JSON-lines training log of ``netspec train --log FILE``, read back as Caffe's tables.

Each line is one record: ``{"kind": "train", "iter", "loss", "smoothed_loss", "lr",
"losses": {layer: unweighted value}, "weights", "seconds"}`` or ``{"kind": "test",
"iter", "net", "outputs": {name: value}}``.  :func:`train_table` and :func:`test_table`
give the columns of Caffe's ``parse_log.py`` (``LOG.train`` / ``LOG.test``).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..diagnostics import Diagnostic, NetspecError, Span
from ..fileio import write_atomic

TRAIN_FIXED = ["NumIters", "Seconds", "LearningRate", "loss", "smoothed_loss"]
TEST_FIXED = ["NumIters", "Seconds", "LearningRate", "TestNet"]
REQUIRED = {"train": ("iter", "loss", "lr"), "test": ("iter", "net", "outputs")}


def read_log(path: str | Path) -> tuple[list[dict], list[dict]]:
    """The train and the test records of a netspec JSON-lines log, in file order."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or "not UTF-8 text"
        raise NetspecError([Diagnostic("E0104", f"cannot read log '{path}': {why}")]) from None
    out: dict[str, list[dict]] = {"train": [], "test": []}
    for n, line in enumerate(lines, 1):
        if line.strip():
            rec = _record(path, n, line)
            out[rec["kind"]].append(rec)
    return out["train"], out["test"]


def _record(path, n: int, line: str) -> dict:
    def bad(msg: str) -> NetspecError:
        return NetspecError([Diagnostic("E0800", msg, Span(str(path), n, 1, n, len(line) + 1),
                                        help=["the log is written by `netspec train --log FILE`"])])
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise bad(f"not a JSON record: {e.msg}") from None
    kind = rec.get("kind") if isinstance(rec, dict) else None
    if kind not in REQUIRED:
        raise bad(f"expected a record with \"kind\": \"train\" or \"test\", got {str(kind)!r}")
    absent = [k for k in REQUIRED[kind] if k not in rec]
    if absent:
        raise bad(f"{kind} record lacks {', '.join(absent)}")
    return rec


def train_table(train: list[dict]) -> tuple[list[str], list[list]]:
    """Caffe's train table: one row per iteration, one column per loss layer (unweighted).

    A loss layer named like a fixed column (Caffe nets often call it ``loss``) gets the
    column ``<name>_layer``, so that ``loss`` stays the weighted total.
    """
    names = _names(r.get("losses", {}) for r in train)
    rows, seconds = [], 0.0
    for r in train:
        seconds += r.get("seconds", 0.0)
        rows.append([r["iter"], round(seconds, 6), r["lr"], r["loss"], r.get("smoothed_loss", r["loss"])]
                    + [r.get("losses", {}).get(k, "") for k in names])
    return TRAIN_FIXED + [f"{k}_layer" if k in TRAIN_FIXED else k for k in names], rows


def test_table(train: list[dict], test: list[dict]) -> tuple[list[str], list[list]]:
    """Caffe's test table: one row per test pass; time and lr are those of its iteration."""
    names = _names(r["outputs"] for r in test)
    clock, lr, seconds = {}, {}, 0.0
    for r in train:
        seconds += r.get("seconds", 0.0)
        clock[r["iter"] + 1], lr[r["iter"]] = seconds, r["lr"]     # a test at iter k runs after k iterations
    rows = []
    for r in test:
        it = r["iter"]
        rows.append([it, round(clock.get(it, 0.0), 6), lr.get(it, lr.get(it - 1, "")), r["net"]]
                    + [r["outputs"].get(k, "") for k in names])
    return TEST_FIXED + names, rows


test_table.__test__ = False             # a library function, not a pytest test


def _names(dicts) -> list[str]:
    return list(dict.fromkeys(k for d in dicts for k in d))


def write_table(path: Path, header: list[str], rows: list[list], delimiter: str = ",") -> None:
    """Write a delimited table atomically (temp file, then rename)."""
    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    write_atomic(path, buf.getvalue())
