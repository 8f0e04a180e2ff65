"""Where data files are: Caffe resolves them against the working directory; netspec
also tries the directory of the prototxt that names them, so that a net under
``models/`` trains from the repository root as well as from its own folder."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def candidates(path: str, net_path: Optional[str]) -> list[Path]:
    """The places ``path`` may refer to, in the order they are tried."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return [p]
    found = [p]
    if net_path and not str(net_path).startswith("<"):
        found.append(Path(os.path.dirname(os.path.abspath(net_path))) / p)
    return found


def resolve(path: str, net_path: Optional[str]) -> Optional[Path]:
    """The first candidate of ``path`` that exists, or None."""
    for c in candidates(path, net_path):
        if c.exists():
            return c
    return None


def tried(path: str, net_path: Optional[str]) -> str:
    """The candidates as a user reads them, for 'not found' diagnostics."""
    return ", ".join(f"'{c}'" for c in candidates(path, net_path))
