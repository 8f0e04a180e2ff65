"""Atomic file writes: nothing a user had is lost to a crash or a full disk.

Every file netspec writes (snapshots, weights, generated code, logs, reports) goes to a
temporary file beside its destination, is flushed to disk, and is renamed over the
destination only when complete; a failure leaves the old file untouched and no temp file.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from .diagnostics import Diagnostic, NetspecError


@contextmanager
def atomic_writer(path: str | Path, mode: str = "wb"):
    """``with atomic_writer(p) as f: ...`` writes ``p`` all at once or not at all.

    ``mode`` is ``"wb"`` or ``"w"``; an OSError becomes diagnostic E0700 naming ``p``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise NetspecError([Diagnostic("E0803", f"cannot write '{path}': {e.strerror or e}")]) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; returns the path."""
    with atomic_writer(path, "w" if isinstance(data, str) else "wb") as f:
        f.write(data)
    return Path(path)
