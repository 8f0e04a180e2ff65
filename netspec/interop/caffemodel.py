"""Caffe ``.caffemodel`` weights: read them (binary NetParameter in the current, V1 or V0
form; Caffe's HDF5 weights) and copy them into a compiled net by layer name.
``load_weights_file`` is every tool's loader: a ``.caffemodel`` or a netspec snapshot."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from google.protobuf.message import DecodeError

from ..diagnostics import Diagnostic, NetspecError
from ..proto import caffe_pb2
from .blobproto import blob_array
from .weights import load_weights, read_snapshot


def read_caffemodel(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> list of blob arrays, from a binary NetParameter file (or Caffe's
    HDF5 weights, by the ``.h5`` suffix as Caffe decides).

    Accepts the current ``layer`` form, V1 ``layers`` and V0 ``layers { layer { blobs } }``.
    A file that does not decode, holds no layers, or has a blob whose data does not fill
    its shape is an error (E0700), never a partial result.
    """
    p = str(path)
    if p.endswith(".h5"):
        return read_caffemodel_h5(path)
    net = _parse_netparameter(path)
    layers: dict[str, list[np.ndarray]] = {}
    for lp in list(net.layer) + list(net.layers):
        name, blobs = _name_and_blobs(lp)
        try:
            layers[name] = [blob_array(b) for b in blobs]
        except ValueError as e:
            raise NetspecError([Diagnostic("E0700", f"'{p}': layer '{name}': {e}",
                                           help=["the file is damaged or truncated"])]) from None
    if not layers:
        raise NetspecError([Diagnostic("E0700", f"'{p}' holds no layers: it is empty or not a .caffemodel")])
    return layers


def read_caffemodel_h5(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> blob arrays from Caffe's HDF5 weights (``snapshot_format: HDF5``,
    ``*.caffemodel.h5``): datasets ``data/<layer>/<i>`` (CopyTrainedLayersFromHDF5)."""
    import h5py
    p = str(path)
    try:
        f = h5py.File(p, "r")
    except (OSError, ValueError) as e:
        raise NetspecError([Diagnostic("E0700", f"'{p}' is not a readable HDF5 .caffemodel.h5: {e}",
                                       help=["the file may be truncated or not a Caffe model"])]) from None
    with f:
        if not isinstance(f.get("data"), h5py.Group) or not len(f["data"]):
            raise NetspecError([Diagnostic("E0700", f"'{p}' has no 'data' group of layers: it is not "
                                           "a Caffe HDF5 model")])
        layers: dict[str, list[np.ndarray]] = {}

        def visit(name, group):           # a layer named "a/b" is the nested group data/a/b
            if isinstance(group, h5py.Group):
                found = {int(k): v for k, v in group.items() if isinstance(v, h5py.Dataset) and k.isdigit()}
                if found:                     # a gap: a blob shared from another layer (not saved)
                    layers[name] = [np.asarray(found[i], dtype=np.float32) if i in found else None
                                    for i in range(max(found) + 1)]
        try:
            f["data"].visititems(visit)
        except (KeyError, OSError, TypeError) as e:
            raise NetspecError([Diagnostic("E0700", f"'{p}': damaged layer data: {e}")]) from None
        return layers


def _parse_netparameter(path: str | Path):
    """The NetParameter in a binary file, with clear errors for unreadable or damaged files."""
    p = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise NetspecError([Diagnostic("E0700", f"cannot read weight file '{p}': {e.strerror}")]) from None
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(raw)
    except (DecodeError, RuntimeWarning, ValueError) as e:
        help_ = ["the file may be truncated or not a Caffe model"]
        if Path(p).suffix == ".netspec":
            help_ = ["the snapshot may be truncated or overwritten; use an earlier one"]
        if raw.lstrip()[:5] in (b"name:", b"layer", b"input"):
            help_ = ["this looks like a text .prototxt; weights are the binary .caffemodel Caffe writes"]
        # only a zip or pickle header makes a file a snapshot (is_caffemodel): say both formats
        raise NetspecError([Diagnostic("E0700", f"'{p}' is neither a netspec snapshot (a torch zip archive) "
                                       f"nor a valid .caffemodel (binary NetParameter): {e}",
                                       help=help_)]) from None
    return net


def _name_and_blobs(lp):
    """(name, blobs) of a current or V1 layer; a V1 entry may wrap a V0 ``layer``."""
    v0 = getattr(lp, "layer", None)
    if v0 is not None and not isinstance(v0, str) and lp.HasField("layer"):
        return lp.name or v0.name, list(lp.blobs) or list(v0.blobs)
    return lp.name, list(lp.blobs)


def shapes_match(source: tuple, target: tuple) -> bool:
    """Caffe's Blob::ShapeEquals: equal shapes, or a legacy 4-D (num, channels, height,
    width) blob whose leading dimensions are the 1s Caffe pads smaller shapes with."""
    source, target = tuple(source), tuple(target)
    if source == target:
        return True
    return len(source) == 4 and len(target) < 4 and source == (1,) * (4 - len(target)) + target


def copy_blobs(compiled, blobs: dict[str, list[np.ndarray]], source: str = "weights",
               strict: bool = False) -> list[str]:
    """Copy blobs by layer name into ``compiled`` (Caffe's CopyTrainedLayersFrom).

    Every matching layer is checked first (blob count, shapes as Caffe's ShapeEquals) and
    nothing is copied if any check fails, so an error never leaves a half-loaded net.
    Returns the names of the compiled layers with blobs that were left unfilled; with
    ``strict`` an unfilled layer is an error too.
    """
    plan, missing = plan_copy(compiled, blobs, source)
    if strict and missing:
        raise NetspecError([Diagnostic("E0700", f"{source} leaves layer(s) unfilled: {preview_names(missing)}",
                                       help=["Caffe copies weights by layer name; check the names"])])
    apply_copy(plan)
    return missing


def plan_copy(compiled, blobs: dict[str, list[np.ndarray]], source: str) -> tuple[list, list[str]]:
    """The (tensor, array) copies that load ``blobs`` into ``compiled`` and the layers left
    unfilled; every blob count and shape mismatch is collected into one NetspecError."""
    state = dict(compiled.module.named_parameters()) | dict(compiled.module.named_buffers())
    errors, plan = [], []
    for layer in compiled.generated.layers:
        node = compiled.net.graph.layer(layer)
        if layer in blobs and node.impl.blobs:
            plan += _check_layer(compiled, state, node, blobs[layer], source, errors)
    if errors:
        raise NetspecError(errors)
    missing = [l for l in _layers_with_blobs(compiled) if l not in blobs]
    return plan, missing


def apply_copy(plan) -> None:
    """Carry out a plan from ``plan_copy``: in place, so parameter identity and aliases stay."""
    with torch.no_grad():
        for t, arr in plan:
            t.copy_(torch.from_numpy(np.ascontiguousarray(arr)).reshape(t.shape))


def _check_layer(compiled, state, node, arrays, source, errors) -> list[tuple]:
    """The (tensor, array) copies for one layer, or diagnostics added to ``errors``."""
    layer = node.name
    shared = [f"{layer}/{i}" in compiled.net.shared for i in range(len(node.impl.blobs))]
    if len(arrays) < len(shared) and all(shared[len(arrays):]):   # HDF5 leaves shared blobs out
        arrays = list(arrays) + [None] * (len(shared) - len(arrays))
    if len(arrays) != len(node.impl.blobs):
        errors.append(Diagnostic("E0700", f"{source}: layer '{layer}' has {len(arrays)} blobs, but the "
                                 f"net's layer has {len(node.impl.blobs)}", node.span,
                                 help=["rename the layer to learn its parameters from scratch"]))
        return []
    plan = []
    for i, arr in enumerate(arrays):
        t = state.get(compiled.blob_key(layer, i))
        if t is None or (arr is None and shared[i]):   # a shared blob: its owner receives the data
            continue
        if arr is None:
            errors.append(Diagnostic("E0700", f"{source}: layer '{layer}' lacks blob {i}", node.span))
            continue
        if not shapes_match(arr.shape, t.shape):
            errors.append(Diagnostic("E0700", f"{source}: cannot copy blob {i} of layer '{layer}': "
                                     f"the file has shape {tuple(arr.shape)}, the net expects "
                                     f"{tuple(t.shape)}", node.span,
                                     help=["rename the layer to learn its parameters from scratch"]))
            continue
        plan.append((t, arr))
    return plan


def read_caffemodels(path: str | Path) -> list[tuple[str, dict[str, list[np.ndarray]]]]:
    """(file, layer table) for each file of ``a.caffemodel[,b.caffemodel]``, in order."""
    return [(f, read_caffemodel(f)) for f in str(path).split(",") if f]


def load_caffemodel(compiled, path: str | Path, tables: list | None = None) -> list[str]:
    """Caffe's ``--weights a.caffemodel[,b.caffemodel]``: copy each file in turn by layer name.

    Later files overwrite earlier ones where both name a layer.  Every file is read and
    checked before the net is touched, so a bad file leaves the net as it was.  Returns the
    layers with blobs that no file filled; a file that fills none of the net's layers is an
    error (both lists of layer names are shown).  ``tables``: ``read_caffemodels(path)``,
    when the caller has already read the files.
    """
    plans, unfilled = [], set(_layers_with_blobs(compiled))
    for f, table in tables if tables is not None else read_caffemodels(path):
        plan, missing = plan_copy(compiled, table, source=f)
        if missing and len(missing) == len(_layers_with_blobs(compiled)):
            raise NetspecError([Diagnostic("E0700", f"'{f}' fills none of the net's layers",
                                           notes=[f"the file has layers: {preview_names(table)}",
                                                  f"the net's layers with weights: {preview_names(missing)}"],
                                           help=["Caffe copies weights by layer name; check the names"])])
        plans.append(plan)
        unfilled &= set(missing)
    for plan in plans:
        apply_copy(plan)
    return [l for l in _layers_with_blobs(compiled) if l in unfilled]


def _layers_with_blobs(compiled) -> list[str]:
    """The compiled layers that own learnable blobs, in net order (a layer whose blobs are
    all shared from another layer is filled through that layer)."""
    shared = compiled.net.shared
    return [l for l in compiled.generated.layers
            if any(f"{l}/{i}" not in shared for i in range(len(compiled.net.graph.layer(l).impl.blobs)))]


def preview_names(names, limit: int = 8) -> str:
    """The first ``limit`` names, comma-separated, with a count of the rest."""
    # a damaged file's name that is not UTF-8 comes back from protobuf as bytes
    names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f", ... ({more} more)" if more > 0 else "")


def is_caffemodel(path: str | Path) -> bool:
    """A binary NetParameter rather than a netspec snapshot (torch zip or pickle)."""
    if str(path).endswith((".caffemodel", ".h5")):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return head not in (b"PK", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def load_weights_file(target, path: str | Path) -> list[str]:
    """Initialise ``target`` (a Compiled net, or a bare module for snapshots) from ``path``.

    ``.caffemodel`` files (comma-separated lists too) copy by layer name; anything else is
    read as a netspec snapshot and copied by state_dict key.  Returns what was left unfilled
    (layer names for Caffe files, state_dict keys for snapshots).
    """
    first = str(path).split(",")[0]
    if is_caffemodel(first):
        if not hasattr(target, "generated"):
            raise TypeError("loading a .caffemodel needs the Compiled net (layer names)")
        return load_caffemodel(target, path)
    module = getattr(target, "module", target)
    return load_weights(module, read_snapshot(path)["weights"], str(path))
