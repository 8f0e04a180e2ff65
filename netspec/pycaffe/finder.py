"""Make ``import caffe`` find netspec's pycaffe stand-in when real pycaffe is absent.

The finder sits at the *end* of ``sys.meta_path``: every other finder (real pycaffe on
``sys.path`` included) is asked first, so an installed pycaffe always wins, and only a
failing ``import caffe`` reaches netspec.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_SHIM = Path(__file__).with_name("_caffe.py")


class CaffeFallbackFinder:
    """A meta-path finder that serves the top-level module ``caffe`` and nothing else."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "caffe":
            return None
        return importlib.util.spec_from_file_location("caffe", _SHIM)


def install() -> None:
    """Append the fallback finder to ``sys.meta_path`` (once)."""
    if CaffeFallbackFinder not in sys.meta_path:
        sys.meta_path.append(CaffeFallbackFinder)
