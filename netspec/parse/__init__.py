"""Stage 1: prototxt text -> syntax tree (see :mod:`netspec.syntax`)."""
from .parser import parse_file, parse_text

__all__ = ["parse_file", "parse_text"]
