"""Legacy net formats, upgraded to the current LayerParameter form as Caffe does.

* ``input:`` / ``input_shape`` / ``input_dim`` become one Input layer named "input"
  (Caffe's UpgradeNetInput).
* V1 ``layers { type: CONVOLUTION blobs_lr: 1 ... }`` become ``layer`` entries
  (Caffe's UpgradeV1LayerParameter): the type enum turns into its string name,
  ``blobs_lr``/``weight_decay``/``param``/``blob_share_mode`` into ``param`` specs.

Each upgraded layer keeps the field path of its original text, so diagnostics
still point at what the user wrote.
"""
from __future__ import annotations

from .diagnostics import Diagnostics
from .proto import caffe_pb2

V1_TYPES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}


def layer_entries(src, diags: Diagnostics) -> list[tuple]:
    """(LayerParameter, source path) for every layer of ``src.net``, legacy forms upgraded."""
    net = src.net
    entries = []
    if net.input:
        entries.append((legacy_input_layer(net, src, diags), ("input", 0)))
    if net.layers and net.layer:
        diags.error("E0200", "the net mixes V1 `layers` and current `layer` entries",
                    src.name_span(("layers", 0)), help=["upgrade the V1 entries (netspec upgrade)"])
    entries += [(lp, ("layer", i)) for i, lp in enumerate(net.layer)]
    if net.layers:
        diags.warning("W0501", "this net uses the deprecated V1 `layers` format; it is upgraded "
                      "on the fly", src.name_span(("layers", 0)),
                      help=["`netspec upgrade FILE` prints the current form"])
        entries += [(upgrade_v1_layer(v1), ("layers", i)) for i, v1 in enumerate(net.layers)]
    return entries


def legacy_input_layer(net, src, diags: Diagnostics):
    """Caffe's UpgradeNetInput: ``input:`` fields become one Input layer."""
    lp = caffe_pb2.LayerParameter(name="input", type="Input", top=list(net.input))
    shapes = [list(s.dim) for s in net.input_shape]
    if net.input_dim:
        if len(net.input_dim) != 4 * len(net.input):
            diags.error("E0308", f"input_dim has {len(net.input_dim)} values for {len(net.input)} "
                        "inputs; give 4 (N, C, H, W) per input", src.span(("input_dim", 0)))
        dims = list(net.input_dim)
        shapes = [dims[4 * i:4 * i + 4] for i in range(len(net.input))]
    if shapes and len(shapes) not in (1, len(net.input)):
        diags.error("E0308", f"{len(shapes)} input shapes for {len(net.input)} inputs",
                    src.span(("input_shape", 0)), help=["give one input_shape per input"])
    for dims in shapes:
        lp.input_param.shape.add().dim.extend(dims)
    return lp


def upgrade_v1_layer(v1):
    """Caffe's UpgradeV1LayerParameter for one ``layers`` entry."""
    lp = caffe_pb2.LayerParameter()
    lp_fields = lp.DESCRIPTOR.fields_by_name
    for fd, value in v1.ListFields():
        if fd.name in ("type", "blobs_lr", "weight_decay", "param", "blob_share_mode", "layer"):
            continue
        target = lp_fields.get(fd.name)
        if target is None:
            continue
        if fd.is_repeated:
            getattr(lp, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(lp, fd.name).CopyFrom(value)
        else:
            setattr(lp, fd.name, value)
    if v1.HasField("type"):
        lp.type = V1_TYPES.get(caffe_pb2.V1LayerParameter.LayerType.Name(v1.type), "")
    n = max(len(v1.blobs_lr), len(v1.weight_decay), len(v1.param), len(v1.blob_share_mode))
    for i in range(n):
        spec = lp.param.add()
        if i < len(v1.param):
            spec.name = v1.param[i]
        if i < len(v1.blob_share_mode):
            spec.share_mode = v1.blob_share_mode[i]
        if i < len(v1.blobs_lr):
            spec.lr_mult = v1.blobs_lr[i]
        if i < len(v1.weight_decay):
            spec.decay_mult = v1.weight_decay[i]
    return lp
