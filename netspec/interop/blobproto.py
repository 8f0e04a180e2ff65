"""Caffe's BlobProto as numpy: the one reader of blobs, for weights, mean files and
InfogainLoss matrices.  A leaf (numpy and the schema only), so layers and data
transforms read ``.binaryproto`` files without importing the rest of interop."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..proto import caffe_pb2


def blob_array(blob) -> np.ndarray:
    """A BlobProto as a float32 array of its shape (legacy num/channels/height/width too)."""
    legacy = ("num", "channels", "height", "width")
    if blob.HasField("shape"):
        shape = tuple(blob.shape.dim)
    elif any(blob.HasField(f) for f in legacy):
        shape = tuple(getattr(blob, f) for f in legacy)
    else:   # Caffe writes a 0-axis blob (PReLU channel_shared, scalar Scale) with no shape at all
        n = len(blob.double_data) or len(blob.data)
        shape = () if n == 1 else (n,)
    data = np.asarray(blob.double_data if len(blob.double_data) else blob.data, dtype=np.float32)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"blob has {data.size} values for shape {shape}")
    return data.reshape(shape)


def read_blobproto(path: str | Path) -> np.ndarray:
    """The array in a binary ``.binaryproto`` file (a serialized BlobProto).

    Raises OSError when the file cannot be read, ``google.protobuf.message.DecodeError``
    or ValueError when it is not a BlobProto; callers turn these into diagnostics."""
    return blob_array(caffe_pb2.BlobProto.FromString(Path(path).read_bytes()))
