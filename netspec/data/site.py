"""A data layer's place in the user's prototxt, so that data errors point at it.

Sources run in DataLoader worker processes, so a site carries plain, picklable
facts (spans of the fields data errors talk about) rather than the source map.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..diagnostics import Diagnostic, NetspecError, Span
from . import paths

# the fields a data error can point at, inside a LayerParameter
FIELDS = (("name",), ("top", 0), ("top", 1), ("transform_param", "mean_file"),
          ("transform_param", "crop_size"), ("transform_param", "mean_value"),
          *((p, f) for p in ("hdf5_data_param", "image_data_param", "data_param",
                             "memory_data_param", "torchvision_param")
            for f in ("source", "root_folder", "root", "dataset", "batch_size", "backend")))


@dataclass
class LayerSite:
    """Which layer (name, type), in which net file, and where its fields are."""

    name: str
    type: str
    net_path: Optional[str] = None
    spans: dict = field(default_factory=dict)

    @classmethod
    def of(cls, net, node) -> "LayerSite":
        """The site of graph node ``node`` of CheckedNet ``net``."""
        spans = {f: net.source.span(node.path + f) for f in FIELDS}
        return cls(node.name, node.type, net.source.path, {f: s for f, s in spans.items() if s})

    def span(self, field_path: tuple = ()) -> Optional[Span]:
        return self.spans.get(tuple(field_path)) or self.spans.get(("name",))

    def error(self, code: str, message: str, field_path: tuple = (), help: Sequence[str] = (),
              notes: Sequence[str] = ()) -> NetspecError:
        """A NetspecError about this layer (raise it)."""
        msg = f"layer '{self.name}' ({self.type}): {message}"
        return NetspecError([Diagnostic(code, msg, self.span(field_path), "error", list(help), list(notes))])

    def resolve(self, path: str, field_path: tuple, what: str = "file") -> Path:
        """``path`` resolved as Caffe does (working directory), then next to the prototxt."""
        if not path:
            raise self.error("E0501", f"no {what} is given", field_path,
                             help=[f"set {'.'.join(map(str, field_path))}"])
        found = paths.resolve(path, self.net_path)
        if found is None:
            raise self.error("E0104", f"{what} '{path}' does not exist", field_path,
                             notes=[f"looked for {paths.tried(path, self.net_path)}"],
                             help=["paths are relative to the working directory, or to the prototxt's folder"])
        return found
