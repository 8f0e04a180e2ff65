"""Caffe ``.caffemodel`` weights: read (binary NetParameter, current or V1 form) and copy by layer name."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from google.protobuf.message import DecodeError

from ..diagnostics import Diagnostic, NetspecError
from ..proto import caffe_pb2


def blob_array(blob) -> np.ndarray:
    """A BlobProto as a float32 array of its shape (legacy num/channels/height/width too)."""
    if blob.HasField("shape"):
        shape = tuple(blob.shape.dim)
    else:
        shape = tuple(d for d in (blob.num, blob.channels, blob.height, blob.width))
        shape = shape if any(shape) else (len(blob.data),)
    data = np.asarray(blob.double_data if len(blob.double_data) else blob.data, dtype=np.float32)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"blob has {data.size} values for shape {shape}")
    return data.reshape(shape)


def read_caffemodel(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Layer name -> list of blob arrays, from a binary NetParameter file."""
    p = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise NetspecError([Diagnostic("E0700", f"cannot read weight file '{p}': {e.strerror}")]) from None
    net = caffe_pb2.NetParameter()
    try:
        net.ParseFromString(raw)
    except DecodeError as e:
        raise NetspecError([Diagnostic("E0700", f"'{p}' is not a valid .caffemodel (binary NetParameter): "
                                       f"{e}", help=["the file may be truncated or not a Caffe model"])]) from None
    layers: dict[str, list[np.ndarray]] = {}
    for lp in list(net.layer) + list(net.layers):
        try:
            layers[lp.name] = [blob_array(b) for b in lp.blobs]
        except ValueError as e:
            raise NetspecError([Diagnostic("E0700", f"'{p}': layer '{lp.name}': {e}")]) from None
    return layers


def copy_blobs(compiled, blobs: dict[str, list[np.ndarray]], source: str = "weights",
               strict: bool = False) -> list[str]:
    """Copy blobs by layer name into ``compiled`` (Caffe's CopyTrainedLayersFrom).

    Shapes must match (legacy 4-D shapes are accepted when the element counts agree and
    Caffe would reshape).  Returns the names of the compiled layers left unfilled.
    """
    state = dict(compiled.module.named_parameters()) | dict(compiled.module.named_buffers())
    errors, filled = [], set()
    for layer in compiled.generated.layers:
        node = compiled.net.graph.layer(layer)
        if layer not in blobs or not node.impl.blobs:
            continue
        arrays = blobs[layer]
        if len(arrays) != len(node.impl.blobs):
            errors.append(Diagnostic("E0700", f"{source}: layer '{layer}' has {len(arrays)} blobs, but the "
                                     f"net's layer has {len(node.impl.blobs)}", node.span))
            continue
        for i, arr in enumerate(arrays):
            key = compiled.blob_key(layer, i)
            t = state[key]
            if tuple(arr.shape) != tuple(t.shape) and arr.size != t.numel():
                errors.append(Diagnostic("E0700", f"{source}: blob {i} of layer '{layer}' has shape "
                                         f"{tuple(arr.shape)}, the net expects {tuple(t.shape)}", node.span))
                continue
            with torch.no_grad():
                t.copy_(torch.from_numpy(np.ascontiguousarray(arr)).reshape(t.shape))
        filled.add(layer)
    if errors:
        raise NetspecError(errors)
    return [l for l in compiled.generated.layers
            if compiled.net.graph.layer(l).impl.blobs and l not in filled]
