"""Write a compiled net's weights as a Caffe ``.caffemodel`` (binary NetParameter).

The file is what Caffe's ``Net::ToProto`` writes after ``Net::Init``: the net's active
layers in file order, with the automatic Split layers Caffe inserts (``InsertSplits``),
``phase`` set on every layer, ``loss_weight: 1`` added to loss layers that give none
(``LossLayer::LayerSetUp``), BatchNorm's three statistics blobs pinned with
``param { lr_mult: 0 }``, and each layer's blobs in Caffe's order and layout (shape +
float data).  Caffe's ``CopyTrainedLayersFrom`` only reads layer names and blobs; the
rest makes the file byte-identical to one real Caffe writes for the same net.
"""
from __future__ import annotations

import operator
from pathlib import Path

from ..diagnostics import Diagnostic, NetspecError
from ..fileio import write_atomic
from ..proto import caffe_pb2
from ..upgrade import upgrade_batch_norm_params


def write_caffemodel(compiled, path: str | Path) -> Path:
    """Write ``compiled``'s blobs to ``path`` atomically (temp file, then rename)."""
    path = Path(path)
    write_atomic(path, caffemodel_bytes(compiled))
    return path


def caffemodel_bytes(compiled) -> bytes:
    """The serialized NetParameter of ``compiled`` with its current weights."""
    return to_net_parameter(compiled).SerializeToString()


def to_net_parameter(compiled):
    """``compiled`` as Caffe's ``Net::ToProto`` would write it (without diffs)."""
    net = compiled.net
    nodes = sorted(net.graph.layers(), key=lambda n: n.index)
    _require_compiled(compiled, nodes)
    out = caffe_pb2.NetParameter(name=net.name)
    layers = caffe_layer_params([n.lp for n in nodes], net.state.phase)
    by_name = {n.name: n for n in nodes}
    for lp in layers:
        node = by_name.get(lp.name) if lp.type != "Split" else None
        if node is not None:
            _caffe_setup(lp, node)
            for i in range(len(node.impl.blobs)):
                to_blob_proto(blob_tensor(compiled, node.name, i), lp.blobs.add())
        out.layer.add().CopyFrom(lp)
    return out


def _require_compiled(compiled, nodes) -> None:
    """Every layer with blobs must be in the module, or the export would drop weights."""
    absent = [n.name for n in nodes if n.impl is not None and n.impl.blobs
              and n.name not in compiled.generated.attrs]
    if absent:
        raise NetspecError([Diagnostic("E0700", "cannot export weights: the compiled module leaves out "
                                       f"layer(s) {', '.join(absent)}",
                                       help=["compile the net with all its outputs"])])


def blob_tensor(compiled, layer: str, i: int):
    """Blob ``i`` of ``layer`` in the live module (shared blobs resolve to the owner's tensor)."""
    return operator.attrgetter(compiled.blob_key(layer, i))(compiled.module)


def to_blob_proto(tensor, blob) -> None:
    """Caffe's Blob::ToProto: shape dims (none for a 0-axis blob), then float data.

    The packed float field is encoded directly from the array's bytes and parsed by
    protobuf's C core: appending millions of Python floats one by one is far slower."""
    arr = tensor.detach().to("cpu").float().contiguous().numpy().astype("<f4", copy=False)
    raw = b""
    if arr.ndim:
        shape = caffe_pb2.BlobShape(dim=arr.shape).SerializeToString()
        raw += b"\x3a" + _varint(len(shape)) + shape          # field 7 (shape), length-delimited
    if arr.size:
        raw += b"\x2a" + _varint(arr.nbytes) + arr.tobytes()  # field 5 (data), packed floats
    blob.MergeFromString(raw)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


# -- what Net::Init does to each LayerParameter -----------------------------------------

def caffe_layer_params(layers, phase: int) -> list:
    """Copies of ``layers`` (already filtered for the state) with Caffe's Split layers
    inserted and ``phase`` set where the file leaves it out."""
    out = insert_splits(layers)
    for lp in out:
        lp.ClearField("blobs")
        if not lp.HasField("phase"):
            lp.phase = phase
    return out


def _loss_setup(lp, node) -> None:
    if node.impl.is_loss and not lp.loss_weight:   # LossLayer::LayerSetUp
        lp.loss_weight.append(1.0)


def _batch_norm_setup(lp, node) -> None:
    upgrade_batch_norm_params(lp)                  # done by Caffe when it reads the net
    while len(lp.param) < 3:                       # BatchNormLayer::LayerSetUp
        lp.param.add().lr_mult = 0.0


_SETUP_BY_TYPE = {"BatchNorm": _batch_norm_setup}


def _caffe_setup(lp, node) -> None:
    """The changes a layer's own LayerSetUp makes to its copy of the parameter."""
    if node.impl is None:
        return
    _loss_setup(lp, node)
    _SETUP_BY_TYPE.get(lp.type, lambda *_: None)(lp, node)


def insert_splits(layers) -> list:
    """Caffe's InsertSplits: a blob read by several layers (or read and used as a loss)
    gets a Split layer right after its producer, and each reader its own split top."""
    source, count, loss_weight = {}, {}, {}
    last_top = {}
    for i, lp in enumerate(layers):
        for j, b in enumerate(lp.bottom):
            if b in last_top:
                source[i, j] = last_top[b]
                count[last_top[b]] = count.get(last_top[b], 0) + 1
        for j, t in enumerate(lp.top):
            last_top[t] = (i, j)
        for j in range(min(len(lp.loss_weight), len(lp.top))):
            loss_weight[last_top[lp.top[j]]] = lp.loss_weight[j]
            if lp.loss_weight[j]:
                count[last_top[lp.top[j]]] = count.get(last_top[lp.top[j]], 0) + 1
    return _with_splits(layers, source, count, loss_weight)


def _with_splits(layers, source, count, loss_weight) -> list:
    out, next_split = [], {}
    for i, original in enumerate(layers):
        lp = caffe_pb2.LayerParameter()
        lp.CopyFrom(original)
        out.append(lp)
        for j, b in enumerate(lp.bottom):
            top = source.get((i, j))
            if top is not None and count[top] > 1:
                k = next_split.get(top, 0)
                next_split[top] = k + 1
                lp.bottom[j] = _split_name(layers[top[0]].name, b, top[1]) + f"_{k}"
        for j, t in enumerate(lp.top):
            if count.get((i, j), 0) > 1:
                w = loss_weight.get((i, j), 0.0)
                out.append(_split_layer(lp.name, t, j, count[i, j], w))
                if w:
                    lp.ClearField("loss_weight")
                    next_split[i, j] = next_split.get((i, j), 0) + 1
    return out


def _split_name(layer: str, blob: str, j: int) -> str:
    return f"{blob}_{layer}_{j}_split"


def _split_layer(layer: str, blob: str, j: int, n: int, loss_weight: float):
    """Caffe's ConfigureSplitLayer."""
    name = _split_name(layer, blob, j)
    sp = caffe_pb2.LayerParameter(name=name, type="Split", bottom=[blob],
                                  top=[f"{name}_{k}" for k in range(n)])
    if loss_weight:
        sp.loss_weight.extend([loss_weight] + [0.0] * (n - 1))
    return sp
