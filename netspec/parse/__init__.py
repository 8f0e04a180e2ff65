"""Stage 1: prototxt text -> syntax tree (see :mod:`netspec.syntax`)."""
from .parser import parse_file, parse_fragment, parse_text, read_source

__all__ = ["parse_file", "parse_fragment", "parse_text", "read_source"]
