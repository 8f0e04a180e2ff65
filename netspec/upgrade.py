"""Legacy net and solver formats, upgraded to the current form as Caffe's upgrade_proto.cpp does.

Nets, in Caffe's order (UpgradeNetAsNeeded):

* V0 ``layers { layer { type: "conv" kernelsize: 3 ... } }`` become V1 entries
  (UpgradeV0Net): a ``padding`` layer is folded into the conv/pool layer that reads it,
  each V0 field moves to its typed ``*_param`` block;
* V1 data layers' ``scale``/``mean_file``/``crop_size``/``mirror`` move to
  ``transform_param`` (UpgradeNetDataTransformation);
* V1 ``layers { type: CONVOLUTION blobs_lr: 1 ... }`` become ``layer`` entries
  (UpgradeV1LayerParameter): the type enum turns into its string name,
  ``blobs_lr``/``weight_decay``/``param``/``blob_share_mode`` into ``param`` specs;
* ``input:`` / ``input_shape`` / ``input_dim`` become one Input layer named "input"
  (UpgradeNetInput);
* a BatchNorm with three ``param`` specs gets ``lr_mult: 0 decay_mult: 0`` on each
  (UpgradeNetBatchNorm).

Solvers: the V1 ``solver_type`` enum becomes the ``type`` string (UpgradeSolverType).

``layer_entries`` applies the layer upgrades while lowering; each upgraded layer keeps
the field path of its original text, so diagnostics still point at what the user wrote.
``upgrade_net``/``upgrade_solver`` rewrite whole messages for ``netspec upgrade``.
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
        entries += _legacy_entries(src, diags)
    for lp, path in entries:
        if upgrade_batch_norm_params(lp, changed_only=True):
            diags.warning("W0501", f"BatchNorm '{lp.name}' declares its 3 statistics as learnable params "
                          "(the old definition); upgraded to lr_mult: 0 decay_mult: 0 as Caffe does",
                          src.span(path + ("param", 0)), help=["drop the param blocks"])
    return entries


def _legacy_entries(src, diags: Diagnostics) -> list[tuple]:
    """The V0/V1 ``layers`` of ``src.net`` as (LayerParameter, path of the original entry)."""
    net, v0 = src.net, needs_v0_upgrade(src.net)
    fmt = "V0 `layers { layer { ... } }`" if v0 else "V1 `layers`"
    diags.warning("W0501", f"this net uses the deprecated {fmt} format; it is upgraded on the fly",
                  src.name_span(("layers", 0)), help=["`netspec upgrade FILE` prints the current form"])
    if not v0:
        return [(upgrade_v1_layer(upgrade_v1_data(v1)), ("layers", i)) for i, v1 in enumerate(net.layers)]
    out = []
    for v1, i, problems in upgrade_v0_layers(net):
        for code, msg in problems:
            report = diags.error if code.startswith("E") else diags.warning
            report(code, msg, src.span(("layers", i, "layer")))
        if v1 is not None:
            out.append((upgrade_v1_layer(upgrade_v1_data(v1)), ("layers", i)))
    return out


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


def upgrade_batch_norm_params(lp, changed_only: bool = False) -> bool:
    """Caffe's UpgradeNetBatchNorm: a BatchNorm layer that declares its three statistics
    blobs as ``param``s (the old definition) gets ``lr_mult: 0 decay_mult: 0`` on each,
    since statistics are not learned.  Returns whether it applied (with ``changed_only``:
    whether a value actually changed)."""
    if lp.type != "BatchNorm" or len(lp.param) != 3:
        return False
    changed = any(spec.lr_mult != 0 or spec.decay_mult != 0 for spec in lp.param)
    for spec in lp.param:
        spec.lr_mult = 0.0
        spec.decay_mult = 0.0
    return changed or not changed_only


# -- V0 (UpgradeV0Net) ------------------------------------------------------------------

V0_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION",
    "data": "DATA", "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS", "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT", "im2col": "IM2COL",
    "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS", "innerproduct": "INNER_PRODUCT",
    "lrn": "LRN", "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING",
    "relu": "RELU", "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT", "tanh": "TANH", "window_data": "WINDOW_DATA",
}

_ANY = "*"      # the field moves for every layer type
_CONV_IP = {"conv": "convolution_param", "innerproduct": "inner_product_param"}
_CONV_POOL = {"conv": "convolution_param", "pool": "pooling_param"}
_DATA4 = {"data": "data_param", "hdf5_data": "hdf5_data_param", "images": "image_data_param",
          "window_data": "window_data_param"}

# V0 field -> (field in the typed block, {V0 type -> block}); UpgradeV0LayerParameter
V0_FIELDS = {
    "num_output": ("num_output", _CONV_IP), "biasterm": ("bias_term", _CONV_IP),
    "weight_filler": ("weight_filler", _CONV_IP), "bias_filler": ("bias_filler", _CONV_IP),
    "pad": ("pad", _CONV_POOL), "kernelsize": ("kernel_size", _CONV_POOL),
    "stride": ("stride", _CONV_POOL), "group": ("group", {"conv": "convolution_param"}),
    "pool": ("pool", {"pool": "pooling_param"}),
    "dropout_ratio": ("dropout_ratio", {"dropout": "dropout_param"}),
    "local_size": ("local_size", {"lrn": "lrn_param"}), "alpha": ("alpha", {"lrn": "lrn_param"}),
    "beta": ("beta", {"lrn": "lrn_param"}), "k": ("k", {"lrn": "lrn_param"}),
    "source": ("source", {**_DATA4, "infogain_loss": "infogain_loss_param"}),
    "scale": ("scale", {_ANY: "transform_param"}), "meanfile": ("mean_file", {_ANY: "transform_param"}),
    "cropsize": ("crop_size", {_ANY: "transform_param"}), "mirror": ("mirror", {_ANY: "transform_param"}),
    "batchsize": ("batch_size", _DATA4),
    "rand_skip": ("rand_skip", {"data": "data_param", "images": "image_data_param"}),
    "shuffle_images": ("shuffle", {"images": "image_data_param"}),
    "new_height": ("new_height", {"images": "image_data_param"}),
    "new_width": ("new_width", {"images": "image_data_param"}),
    "concat_dim": ("concat_dim", {"concat": "concat_param"}),
    "det_fg_threshold": ("fg_threshold", {"window_data": "window_data_param"}),
    "det_bg_threshold": ("bg_threshold", {"window_data": "window_data_param"}),
    "det_fg_fraction": ("fg_fraction", {"window_data": "window_data_param"}),
    "det_context_pad": ("context_pad", {"window_data": "window_data_param"}),
    "det_crop_mode": ("crop_mode", {"window_data": "window_data_param"}),
    "hdf5_output_param": (None, {"hdf5_output": "hdf5_output_param"}),
}


def needs_v0_upgrade(net) -> bool:
    """Caffe's NetNeedsV0ToV1Upgrade: some ``layers`` entry wraps a V0 ``layer``."""
    return any(v1.HasField("layer") for v1 in net.layers)


def upgrade_v0_layers(net) -> list[tuple]:
    """Caffe's UpgradeV0PaddingLayers + UpgradeV0LayerParameter over ``net.layers``.

    Returns (V1LayerParameter or None, index of the original entry, problems) per entry;
    padding layers give None (they are folded into the conv/pool layer reading them).
    A problem is (diagnostic code, message): Caffe aborts on the errors (E...) and logs
    the warnings (W...: a field that does not apply to the layer type is dropped)."""
    last_top = {b: -1 for b in net.input}
    out = []
    for i, conn in enumerate(net.layers):
        problems, v1 = [], None
        if conn.layer.type != "padding":
            v1 = caffe_pb2.V1LayerParameter()
            v1.CopyFrom(conn)
            problems += _fold_padding(net, v1, last_top)
            v1 = _upgrade_v0_entry(v1, problems)
        for t in conn.top:
            last_top[t] = i
        out.append((v1, i, problems))
    return out


def _fold_padding(net, conn, last_top) -> list[tuple]:
    """A bottom made by a V0 padding layer: take the padding's input and its ``pad``."""
    problems = []
    for j, b in enumerate(conn.bottom):
        src = last_top.get(b, -1)
        if src == -1 or net.layers[src].layer.type != "padding":
            continue
        pad_layer = net.layers[src]
        if conn.layer.type not in ("conv", "pool") or len(conn.bottom) != 1:
            problems.append(("E0501", f"V0 padding layer '{pad_layer.layer.name}' feeds layer "
                             f"'{conn.layer.name}' ({conn.layer.type}); Caffe folds padding only "
                             "into a one-input conv or pool layer"))
            continue
        conn.layer.pad = pad_layer.layer.pad
        conn.bottom[j] = pad_layer.bottom[0]
    return problems


def _upgrade_v0_entry(conn, problems: list):
    """Caffe's UpgradeV0LayerParameter: one V0 entry as a V1 entry."""
    v0, v1 = conn.layer, caffe_pb2.V1LayerParameter(bottom=conn.bottom, top=conn.top)
    if v0.HasField("name"):
        v1.name = v0.name
    if v0.HasField("type"):
        if v0.type not in V0_TYPES:
            problems.append(("E0304", f"unknown V0 layer type '{v0.type}' (layer '{v0.name}'); "
                             f"V0 types: {', '.join(sorted(V0_TYPES))}"))
            return None
        v1.type = caffe_pb2.V1LayerParameter.LayerType.Value(V0_TYPES[v0.type])
    v1.blobs.extend(v0.blobs)
    v1.blobs_lr.extend(v0.blobs_lr)
    v1.weight_decay.extend(v0.weight_decay)
    for fd, value in v0.ListFields():
        if fd.name in V0_FIELDS:
            _move_v0_field(v1, v0.type, fd.name, value, problems)
    return v1


def _move_v0_field(v1, v0_type: str, name: str, value, problems: list) -> None:
    field, blocks = V0_FIELDS[name]
    block_name = blocks.get(v0_type, blocks.get(_ANY))
    if block_name is None:
        problems.append(("W0501", f"V0 layer type '{v0_type}' has no parameter '{name}'; Caffe's "
                         "upgrade drops it"))
        return
    block = getattr(v1, block_name)
    if field is None:
        block.CopyFrom(value)
        return
    fd = block.DESCRIPTOR.fields_by_name[field]
    if fd.is_repeated:
        getattr(block, field).append(value)
    elif fd.message_type is not None:
        getattr(block, field).CopyFrom(value)
    else:
        setattr(block, field, value)


# -- V1 data transformation (UpgradeNetDataTransformation) ------------------------------

_DATA_BLOCKS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param", "WINDOW_DATA": "window_data_param"}


def upgrade_v1_data(v1):
    """Move a V1 data layer's scale/mean_file/crop_size/mirror into ``transform_param``."""
    block_name = _DATA_BLOCKS.get(caffe_pb2.V1LayerParameter.LayerType.Name(v1.type)) if v1.type else None
    if block_name is None or not v1.HasField(block_name):
        return v1
    block = getattr(v1, block_name)
    for f in ("scale", "mean_file", "crop_size", "mirror"):
        if block.HasField(f):
            setattr(v1.transform_param, f, getattr(block, f))
            block.ClearField(f)
    return v1


# -- whole messages, for `netspec upgrade` ---------------------------------------------

def upgrade_net(net) -> tuple[object, list[str]]:
    """Caffe's UpgradeNetAsNeeded on a copy of ``net``: (upgraded NetParameter, the steps
    applied).  Problems Caffe aborts on raise ValueError."""
    out, steps = caffe_pb2.NetParameter(), []
    out.CopyFrom(net)
    if needs_v0_upgrade(out):
        _v0_to_v1(out, steps)
    if out.layers:
        steps.append("V1 layers -> layer")
        layers = [upgrade_v1_layer(upgrade_v1_data(v1)) for v1 in out.layers]
        out.ClearField("layers")
        out.layer.extend(layers)
    if out.input:
        _input_to_layer(out, steps)
    if [lp.name for lp in out.layer if upgrade_batch_norm_params(lp, changed_only=True)]:
        steps.append("BatchNorm statistics params -> lr_mult: 0 decay_mult: 0")
    for lp in out.layer:
        steps += upgrade_dialects(lp)
    return out, steps


def _v0_to_v1(net, steps: list) -> None:
    """UpgradeV0Net: keeps name, input, input_dim and force_backward, as Caffe does."""
    upgraded = upgrade_v0_layers(net)
    errors = [m for _, _, problems in upgraded for code, m in problems if code.startswith("E")]
    if errors:
        raise ValueError("; ".join(errors))
    keep = caffe_pb2.NetParameter(name=net.name, input=net.input, input_dim=net.input_dim)
    if net.HasField("force_backward"):
        keep.force_backward = net.force_backward
    keep.layers.extend(v1 for v1, _, _ in upgraded if v1 is not None)
    steps.append("V0 layers -> V1 layers (padding layers folded)")
    steps += [m for _, _, problems in upgraded for code, m in problems if code.startswith("W")]
    net.CopyFrom(keep)


def _input_to_layer(net, steps: list) -> None:
    """UpgradeNetInput: input fields -> an Input layer named "input", first in the net
    (a bare ``input`` without shapes, as in old .caffemodel files, is just dropped)."""
    if net.input_shape or net.input_dim:
        if not net.input_shape and len(net.input_dim) != 4 * len(net.input):
            raise ValueError(f"input_dim has {len(net.input_dim)} values for {len(net.input)} inputs; "
                             "give 4 (N, C, H, W) per input")
        shapes = [list(s.dim) for s in net.input_shape] or [
            net.input_dim[4 * i:4 * i + 4] for i in range(len(net.input))]
        if len(shapes) not in (1, len(net.input)):   # one shape for all is the Input layer's rule
            raise ValueError(f"{len(shapes)} input shapes for {len(net.input)} inputs")
        lp = caffe_pb2.LayerParameter(name="input", type="Input", top=net.input)
        for dims in shapes:
            lp.input_param.shape.add().dim.extend(dims)
        layers = [lp] + list(net.layer)
        net.ClearField("layer")
        net.layer.extend(layers)
        steps.append("input fields -> Input layer")
    for f in ("input", "input_shape", "input_dim"):
        net.ClearField(f)


def upgrade_dialects(lp) -> list[str]:
    """Unambiguous fork dialects rewritten in BVLC terms: ``ceil_mode`` -> ``round_mode``."""
    p = lp.pooling_param
    if not (lp.HasField("pooling_param") and p.HasField("ceil_mode")):
        return []
    mode = "CEIL" if p.ceil_mode else "FLOOR"
    if p.HasField("round_mode") and p.round_mode != caffe_pb2.PoolingParameter.RoundMode.Value(mode):
        raise ValueError(f"layer '{lp.name}': ceil_mode: {str(p.ceil_mode).lower()} contradicts round_mode")
    p.round_mode = caffe_pb2.PoolingParameter.RoundMode.Value(mode)
    p.ClearField("ceil_mode")
    return [f"layer '{lp.name}': fork dialect ceil_mode -> round_mode: {mode}"]


SOLVER_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
                "ADADELTA": "AdaDelta", "ADAM": "Adam"}


def upgrade_solver(param) -> tuple[object, list[str]]:
    """Caffe's UpgradeSolverAsNeeded on a copy: the ``solver_type`` enum -> ``type`` string;
    an inline net (``net_param`` etc.) is upgraded too.  Both fields set is Caffe's error."""
    out, steps = caffe_pb2.SolverParameter(), []
    out.CopyFrom(param)
    if out.HasField("solver_type"):
        if out.HasField("type"):
            raise ValueError("the solver gives both solver_type (the old enum) and type; Caffe "
                             "refuses both, keep only type")
        out.type = SOLVER_TYPES[caffe_pb2.SolverParameter.SolverType.Name(out.solver_type)]
        out.ClearField("solver_type")
        steps.append(f"solver_type -> type: \"{out.type}\"")
    for f in ("net_param", "train_net_param"):
        if out.HasField(f):
            net, sub = upgrade_net(getattr(out, f))
            getattr(out, f).CopyFrom(net)
            steps += sub
    for i, net in enumerate(out.test_net_param):
        upgraded, sub = upgrade_net(net)
        out.test_net_param[i].CopyFrom(upgraded)
        steps += sub
    return out, steps
