"""The Caffe protobuf schema: drift, wire and text compatibility.

* drift: netspec/proto/caffe_pb2.py must be exactly what protoc makes of
  proto/caffe.proto (regenerate with ``python tools/gen_proto.py``);
* wire: every .caffemodel / .binaryproto written by BVLC Caffe in
  ../shared/caffe-oracle parses, with no unknown field, re-serialises to the
  same bytes, and holds the arrays the oracle lists;
* text: every .prototxt in ../shared/caffe-zoo and ../shared/caffe-oracle
  parses (solvers as SolverParameter, the rest as NetParameter);
* the schema: spot checks of BVLC field numbers / types / defaults, and the
  netspec extension fields live in 7000-7999 only.
"""
from __future__ import annotations

import ast
import difflib
import re
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, text_format
from google.protobuf.descriptor import FieldDescriptor as FD

from netspec.proto import caffe_pb2

REPO = Path(__file__).resolve().parents[1]
PROTO = REPO / "proto" / "caffe.proto"
SHARED = Path(__file__).resolve().parents[2] / "shared"
ORACLE = SHARED / "caffe-oracle"
ZOO = SHARED / "caffe-zoo"

BANNER = "// ===== netspec extensions (field numbers 7000-7999) ====="
EXT_LO, EXT_HI = 7000, 7999

# message -> {field: number} of every netspec extension field.
EXTENSION_FIELDS = {
    "LayerParameter": {
        "gradient_scope": 7001,
        "torchvision_param": 7002,
        "sampling_param": 7003,
    },
    "PoolingParameter": {"ceil_mode": 7001},
    "SolverParameter": {
        "bp_mode": 7001,
        "primary_loss": 7002,
        "multiway_param": 7003,
        "loss_weight_schedule": 7004,
        "iters_per_epoch": 7005,
        "amp": 7006,
        "channels_last": 7007,
        "compile": 7020,                 # issue 14: per-segment torch.compile
        "nonfinite": 7008,               # issue 15: STOP | SKIP | CONTINUE on NaN/inf
    },
}
# Messages that exist only in netspec (not in Caffe).
NETSPEC_MESSAGES = {
    "GradientScope",
    "TorchvisionParameter",
    "SamplingParameter",
    "MultiwayParameter",
    "LossWeightSchedule",
}


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(root.rglob(pattern)) if root.is_dir() else []


def _rel(path: Path) -> str:
    return str(path.relative_to(SHARED))


# ---------------------------------------------------------------------------
# drift: committed caffe_pb2.py == protoc(proto/caffe.proto)
# ---------------------------------------------------------------------------

def _normalized(fdp: descriptor_pb2.FileDescriptorProto):
    """Canonical form for comparison (json_name, float defaults), in place."""
    def clean(msgs):
        for m in msgs:
            for f in m.field:
                f.ClearField("json_name")
            clean(m.nested_type)

    def canonical_defaults(msgs):
        # upb re-serialises float defaults as the nearest float32 ("0.99" ->
        # "0.99000001"); compare them as numbers of the field's own type.
        for m in msgs:
            for f in m.field:
                if not f.HasField("default_value"):
                    continue
                if f.type == f.TYPE_FLOAT:
                    f.default_value = "%.9g" % np.float32(f.default_value)
                elif f.type == f.TYPE_DOUBLE:
                    f.default_value = "%.17g" % float(f.default_value)
            canonical_defaults(m.nested_type)

    clean(fdp.message_type)
    canonical_defaults(fdp.message_type)
    fdp.ClearField("source_code_info")
    return fdp


def _committed_file_proto() -> descriptor_pb2.FileDescriptorProto:
    return _normalized(descriptor_pb2.FileDescriptorProto.FromString(
        caffe_pb2.DESCRIPTOR.serialized_pb))


def _embedded_serialized_file(pb2_source: str) -> bytes:
    """The bytes a generated *_pb2.py hands to AddSerializedFile."""
    for node in ast.walk(ast.parse(pb2_source)):
        if (isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "AddSerializedFile"):
            return ast.literal_eval(node.args[0])
    raise AssertionError("no AddSerializedFile(...) call in generated code")


def _diff(a: descriptor_pb2.FileDescriptorProto,
          b: descriptor_pb2.FileDescriptorProto) -> str:
    lines = difflib.unified_diff(
        text_format.MessageToString(a).splitlines(),
        text_format.MessageToString(b).splitlines(),
        "committed netspec/proto/caffe_pb2.py", "protoc proto/caffe.proto",
        lineterm="", n=2)
    return "\n".join(list(lines)[:80])


@pytest.fixture(scope="module")
def fresh_compile(tmp_path_factory):
    protoc = pytest.importorskip("grpc_tools.protoc")
    out = tmp_path_factory.mktemp("protoc")
    desc = out / "caffe.desc"
    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO.parent}",
        f"--python_out={out}",
        f"--descriptor_set_out={desc}",
        str(PROTO),
    ])
    assert rc == 0, "protoc failed on proto/caffe.proto"
    fds = descriptor_pb2.FileDescriptorSet.FromString(desc.read_bytes())
    assert [f.name for f in fds.file] == ["caffe.proto"]
    return _normalized(fds.file[0]), (out / "caffe_pb2.py").read_text()


def test_generated_code_matches_schema(fresh_compile):
    fresh, _ = fresh_compile
    committed = _committed_file_proto()
    assert committed == fresh, (
        "netspec/proto/caffe_pb2.py is stale: run `python tools/gen_proto.py` "
        "after editing proto/caffe.proto\n" + _diff(committed, fresh))


def test_fresh_python_out_embeds_same_descriptor(fresh_compile):
    fresh, pb2_source = fresh_compile
    embedded = _normalized(descriptor_pb2.FileDescriptorProto.FromString(
        _embedded_serialized_file(pb2_source)))
    assert embedded == fresh
    committed_src = (REPO / "netspec" / "proto" / "caffe_pb2.py").read_text()
    committed = _normalized(descriptor_pb2.FileDescriptorProto.FromString(
        _embedded_serialized_file(committed_src)))
    assert committed == fresh


def test_schema_header():
    fdp = _committed_file_proto()
    assert fdp.name == "caffe.proto"
    assert fdp.package == "caffe"
    assert fdp.syntax in ("", "proto2")
    assert not fdp.dependency


# ---------------------------------------------------------------------------
# schema spot checks (BVLC Caffe 1.0, master 9b89154)
# ---------------------------------------------------------------------------

def _field(msg: str, name: str):
    desc = caffe_pb2.DESCRIPTOR.message_types_by_name
    parts = msg.split(".")
    d = desc[parts[0]]
    for p in parts[1:]:
        d = d.nested_types_by_name[p]
    return d.fields_by_name[name]


OPT, REP, REQ = "optional", "repeated", "required"

# (message, field, number, type, label, default or None)
SPOT = [
    ("BlobShape", "dim", 1, FD.TYPE_INT64, REP, None),
    ("BlobProto", "shape", 7, FD.TYPE_MESSAGE, OPT, None),
    ("BlobProto", "data", 5, FD.TYPE_FLOAT, REP, None),
    ("BlobProto", "diff", 6, FD.TYPE_FLOAT, REP, None),
    ("BlobProto", "double_data", 8, FD.TYPE_DOUBLE, REP, None),
    ("BlobProto", "double_diff", 9, FD.TYPE_DOUBLE, REP, None),
    ("BlobProto", "num", 1, FD.TYPE_INT32, OPT, 0),
    ("BlobProto", "width", 4, FD.TYPE_INT32, OPT, 0),
    ("BlobProtoVector", "blobs", 1, FD.TYPE_MESSAGE, REP, None),
    ("Datum", "label", 5, FD.TYPE_INT32, OPT, None),
    ("Datum", "data", 4, FD.TYPE_BYTES, OPT, None),
    ("Datum", "encoded", 7, FD.TYPE_BOOL, OPT, False),
    ("FillerParameter", "type", 1, FD.TYPE_STRING, OPT, "constant"),
    ("FillerParameter", "sparse", 7, FD.TYPE_INT32, OPT, -1),
    ("FillerParameter", "variance_norm", 8, FD.TYPE_ENUM, OPT, 0),
    ("NetParameter", "name", 1, FD.TYPE_STRING, OPT, None),
    ("NetParameter", "input", 3, FD.TYPE_STRING, REP, None),
    ("NetParameter", "input_shape", 8, FD.TYPE_MESSAGE, REP, None),
    ("NetParameter", "input_dim", 4, FD.TYPE_INT32, REP, None),
    ("NetParameter", "force_backward", 5, FD.TYPE_BOOL, OPT, False),
    ("NetParameter", "state", 6, FD.TYPE_MESSAGE, OPT, None),
    ("NetParameter", "layer", 100, FD.TYPE_MESSAGE, REP, None),
    ("NetParameter", "layers", 2, FD.TYPE_MESSAGE, REP, None),
    ("SolverParameter", "net", 24, FD.TYPE_STRING, OPT, None),
    ("SolverParameter", "test_iter", 3, FD.TYPE_INT32, REP, None),
    ("SolverParameter", "test_initialization", 32, FD.TYPE_BOOL, OPT, True),
    ("SolverParameter", "base_lr", 5, FD.TYPE_FLOAT, OPT, None),
    ("SolverParameter", "max_iter", 7, FD.TYPE_INT32, OPT, None),
    ("SolverParameter", "iter_size", 36, FD.TYPE_INT32, OPT, 1),
    ("SolverParameter", "lr_policy", 8, FD.TYPE_STRING, OPT, None),
    ("SolverParameter", "stepvalue", 34, FD.TYPE_INT32, REP, None),
    ("SolverParameter", "clip_gradients", 35, FD.TYPE_FLOAT, OPT, -1.0),
    ("SolverParameter", "regularization_type", 29, FD.TYPE_STRING, OPT, "L2"),
    ("SolverParameter", "snapshot_format", 37, FD.TYPE_ENUM, OPT, 1),
    ("SolverParameter", "solver_mode", 17, FD.TYPE_ENUM, OPT, 1),
    ("SolverParameter", "random_seed", 20, FD.TYPE_INT64, OPT, -1),
    ("SolverParameter", "type", 40, FD.TYPE_STRING, OPT, "SGD"),
    ("SolverParameter", "delta", 31, FD.TYPE_FLOAT, OPT, None),
    ("SolverParameter", "momentum2", 39, FD.TYPE_FLOAT, OPT, None),
    ("SolverParameter", "rms_decay", 38, FD.TYPE_FLOAT, OPT, None),
    ("SolverParameter", "solver_type", 30, FD.TYPE_ENUM, OPT, 0),
    ("SolverParameter", "layer_wise_reduce", 41, FD.TYPE_BOOL, OPT, True),
    ("SolverParameter", "weights", 42, FD.TYPE_STRING, REP, None),
    ("SolverState", "iter", 1, FD.TYPE_INT32, OPT, None),
    ("SolverState", "history", 3, FD.TYPE_MESSAGE, REP, None),
    ("NetState", "phase", 1, FD.TYPE_ENUM, OPT, 1),
    ("NetStateRule", "not_stage", 5, FD.TYPE_STRING, REP, None),
    ("ParamSpec", "share_mode", 2, FD.TYPE_ENUM, OPT, None),
    ("ParamSpec", "lr_mult", 3, FD.TYPE_FLOAT, OPT, 1.0),
    ("ParamSpec", "decay_mult", 4, FD.TYPE_FLOAT, OPT, 1.0),
    ("LayerParameter", "phase", 10, FD.TYPE_ENUM, OPT, None),
    ("LayerParameter", "loss_weight", 5, FD.TYPE_FLOAT, REP, None),
    ("LayerParameter", "param", 6, FD.TYPE_MESSAGE, REP, None),
    ("LayerParameter", "blobs", 7, FD.TYPE_MESSAGE, REP, None),
    ("LayerParameter", "propagate_down", 11, FD.TYPE_BOOL, REP, None),
    ("LayerParameter", "include", 8, FD.TYPE_MESSAGE, REP, None),
    ("LayerParameter", "exclude", 9, FD.TYPE_MESSAGE, REP, None),
    ("LayerParameter", "transform_param", 100, FD.TYPE_MESSAGE, OPT, None),
    ("LayerParameter", "loss_param", 101, FD.TYPE_MESSAGE, OPT, None),
    ("LayerParameter", "convolution_param", 106, FD.TYPE_MESSAGE, OPT, None),
    ("LayerParameter", "pooling_param", 121, FD.TYPE_MESSAGE, OPT, None),
    ("LayerParameter", "batch_norm_param", 139, FD.TYPE_MESSAGE, OPT, None),
    ("LayerParameter", "input_param", 143, FD.TYPE_MESSAGE, OPT, None),
    ("LayerParameter", "recurrent_param", 146, FD.TYPE_MESSAGE, OPT, None),
    ("LayerParameter", "swish_param", 147, FD.TYPE_MESSAGE, OPT, None),
    ("LayerParameter", "clip_param", 148, FD.TYPE_MESSAGE, OPT, None),
    ("LayerParameter", "window_data_param", 129, FD.TYPE_MESSAGE, OPT, None),
    ("TransformationParameter", "crop_size", 3, FD.TYPE_UINT32, OPT, 0),
    ("TransformationParameter", "mean_value", 5, FD.TYPE_FLOAT, REP, None),
    ("LossParameter", "normalization", 3, FD.TYPE_ENUM, OPT, 1),
    ("LossParameter", "normalize", 2, FD.TYPE_BOOL, OPT, None),
    ("ClipParameter", "min", 1, FD.TYPE_FLOAT, REQ, None),
    ("ClipParameter", "max", 2, FD.TYPE_FLOAT, REQ, None),
    ("SwishParameter", "beta", 1, FD.TYPE_FLOAT, OPT, 1.0),
    ("ConvolutionParameter", "num_output", 1, FD.TYPE_UINT32, OPT, None),
    ("ConvolutionParameter", "pad", 3, FD.TYPE_UINT32, REP, None),
    ("ConvolutionParameter", "kernel_size", 4, FD.TYPE_UINT32, REP, None),
    ("ConvolutionParameter", "stride", 6, FD.TYPE_UINT32, REP, None),
    ("ConvolutionParameter", "dilation", 18, FD.TYPE_UINT32, REP, None),
    ("ConvolutionParameter", "group", 5, FD.TYPE_UINT32, OPT, 1),
    ("ConvolutionParameter", "axis", 16, FD.TYPE_INT32, OPT, 1),
    ("ConvolutionParameter", "force_nd_im2col", 17, FD.TYPE_BOOL, OPT, False),
    ("CropParameter", "axis", 1, FD.TYPE_INT32, OPT, 2),
    ("DataParameter", "prefetch", 10, FD.TYPE_UINT32, OPT, 4),
    ("DataParameter", "backend", 8, FD.TYPE_ENUM, OPT, 0),
    ("HingeLossParameter", "norm", 1, FD.TYPE_ENUM, OPT, 1),
    ("InfogainLossParameter", "source", 1, FD.TYPE_STRING, OPT, None),
    ("InfogainLossParameter", "axis", 2, FD.TYPE_INT32, OPT, 1),
    ("InnerProductParameter", "transpose", 6, FD.TYPE_BOOL, OPT, False),
    ("LRNParameter", "local_size", 1, FD.TYPE_UINT32, OPT, 5),
    ("LRNParameter", "k", 5, FD.TYPE_FLOAT, OPT, 1.0),
    ("PoolingParameter", "pool", 1, FD.TYPE_ENUM, OPT, 0),
    ("PoolingParameter", "pad", 4, FD.TYPE_UINT32, OPT, 0),
    ("PoolingParameter", "kernel_size", 2, FD.TYPE_UINT32, OPT, None),
    ("PoolingParameter", "stride", 3, FD.TYPE_UINT32, OPT, 1),
    ("PoolingParameter", "global_pooling", 12, FD.TYPE_BOOL, OPT, False),
    ("PoolingParameter", "round_mode", 13, FD.TYPE_ENUM, OPT, 0),
    ("ReductionParameter", "operation", 1, FD.TYPE_ENUM, OPT, 1),
    ("ReshapeParameter", "num_axes", 3, FD.TYPE_INT32, OPT, -1),
    ("SliceParameter", "axis", 3, FD.TYPE_INT32, OPT, 1),
    ("TileParameter", "tiles", 2, FD.TYPE_INT32, OPT, None),
    ("WindowDataParameter", "crop_mode", 11, FD.TYPE_STRING, OPT, "warp"),
    ("SPPParameter", "engine", 6, FD.TYPE_ENUM, OPT, 0),
    ("PReLUParameter", "channel_shared", 2, FD.TYPE_BOOL, OPT, False),
    ("V1LayerParameter", "type", 5, FD.TYPE_ENUM, OPT, None),
    ("V1LayerParameter", "include", 32, FD.TYPE_MESSAGE, REP, None),
    ("V1LayerParameter", "param", 1001, FD.TYPE_STRING, REP, None),
    ("V1LayerParameter", "blob_share_mode", 1002, FD.TYPE_ENUM, REP, None),
    ("V1LayerParameter", "blobs_lr", 7, FD.TYPE_FLOAT, REP, None),
    ("V1LayerParameter", "loss_param", 42, FD.TYPE_MESSAGE, OPT, None),
    ("V1LayerParameter", "layer", 1, FD.TYPE_MESSAGE, OPT, None),
    ("V0LayerParameter", "kernelsize", 8, FD.TYPE_UINT32, OPT, None),
    ("V0LayerParameter", "k", 22, FD.TYPE_FLOAT, OPT, 1.0),
    ("V0LayerParameter", "blobs", 50, FD.TYPE_MESSAGE, REP, None),
    ("V0LayerParameter", "det_context_pad", 58, FD.TYPE_UINT32, OPT, 0),
    ("V0LayerParameter", "concat_dim", 65, FD.TYPE_UINT32, OPT, 1),
    ("V0LayerParameter", "hdf5_output_param", 1001, FD.TYPE_MESSAGE, OPT,
     None),
]



def _label(f) -> str:
    """optional / repeated / required (FieldDescriptor.label left protobuf 7)."""
    if getattr(f, "is_repeated", None) is not None:
        return REP if f.is_repeated else REQ if f.is_required else OPT
    return {FD.LABEL_OPTIONAL: OPT, FD.LABEL_REPEATED: REP,
            FD.LABEL_REQUIRED: REQ}[f.label]


@pytest.mark.parametrize("msg,name,number,ftype,label,default", SPOT,
                         ids=[f"{m}.{n}" for m, n, *_ in SPOT])
def test_bvlc_field(msg, name, number, ftype, label, default):
    f = _field(msg, name)
    assert f.number == number
    assert f.type == ftype
    assert _label(f) == label
    if default is not None:
        assert f.has_default_value
        if isinstance(default, float):
            assert f.default_value == pytest.approx(default)
        else:
            assert f.default_value == default


def test_packed_fields():
    packed = {("BlobShape", "dim"), ("BlobProto", "data"), ("BlobProto", "diff"),
              ("BlobProto", "double_data"), ("BlobProto", "double_diff")}
    fdp = _committed_file_proto()
    seen = set()
    for m in fdp.message_type:
        for f in m.field:
            if f.options.packed:
                seen.add((m.name, f.name))
    assert seen == packed


def test_bvlc_enums():
    P = caffe_pb2
    assert (P.TRAIN, P.TEST) == (0, 1)
    assert P.PoolingParameter.RoundMode.Value("CEIL") == 0
    assert P.PoolingParameter.RoundMode.Value("FLOOR") == 1
    assert dict(P.LossParameter.NormalizationMode.items()) == {
        "FULL": 0, "VALID": 1, "BATCH_SIZE": 2, "NONE": 3}
    assert dict(P.ReductionParameter.ReductionOp.items()) == {
        "SUM": 1, "ASUM": 2, "SUMSQ": 3, "MEAN": 4}
    assert dict(P.HingeLossParameter.Norm.items()) == {"L1": 1, "L2": 2}
    assert dict(P.SolverParameter.SolverType.items()) == {
        "SGD": 0, "NESTEROV": 1, "ADAGRAD": 2, "RMSPROP": 3, "ADADELTA": 4,
        "ADAM": 5}
    lt = P.V1LayerParameter.LayerType
    assert len(lt.items()) == 40
    assert (lt.Value("CONVOLUTION"), lt.Value("DECONVOLUTION"),
            lt.Value("SOFTMAX_LOSS"), lt.Value("ABSVAL"),
            lt.Value("THRESHOLD")) == (4, 39, 21, 35, 31)


def test_caffe_field_numbers_stay_below_extension_range():
    """Outside the listed extension fields, nothing uses 7000-7999 (or above)."""
    for m in _committed_file_proto().message_type:
        if m.name in NETSPEC_MESSAGES:
            continue
        ext = EXTENSION_FIELDS.get(m.name, {})
        for f in m.field:
            if f.name in ext:
                continue
            assert f.number < EXT_LO, f"{m.name}.{f.name} = {f.number}"


# ---------------------------------------------------------------------------
# netspec extensions
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("msg", sorted(EXTENSION_FIELDS))
def test_extension_fields(msg):
    desc = caffe_pb2.DESCRIPTOR.message_types_by_name[msg]
    in_range = {f.name: f.number for f in desc.fields
                if EXT_LO <= f.number <= EXT_HI}
    assert in_range == EXTENSION_FIELDS[msg]
    assert all(_label(f) != REQ for f in desc.fields
               if f.name in EXTENSION_FIELDS[msg])


def test_extension_banner_in_each_extended_message():
    text = PROTO.read_text()
    for msg in EXTENSION_FIELDS:
        start = re.search(rf"^message {msg} \{{", text, re.M)
        assert start, msg
        depth, i = 0, start.end() - 1
        for i in range(start.end() - 1, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                break
        body = text[start.end():i]
        assert BANNER in body, f"no extension banner in message {msg}"
        tail = body.split(BANNER, 1)[1]
        for name, number in EXTENSION_FIELDS[msg].items():
            assert re.search(rf"\b{name} = {number}\b", tail), (msg, name)


def test_extension_types_and_defaults():
    P = caffe_pb2
    s = P.SolverParameter()
    assert s.bp_mode == P.SolverParameter.STANDARD
    assert dict(P.SolverParameter.BPMode.items()) == {
        "STANDARD": 0, "JOINT": 1, "RELAY": 2, "MULTIWAY": 3}
    assert _field("SolverParameter", "iters_per_epoch").type == FD.TYPE_INT64
    assert s.amp == "" and s.channels_last is False
    mw = P.MultiwayParameter()
    assert mw.order == P.MultiwayParameter.SHALLOW_TO_DEEP
    assert mw.shared_forward is True
    assert mw.scale_head_gradients is False and mw.segment_lr_scaling is False
    lw = P.LossWeightSchedule()
    assert lw.type == P.LossWeightSchedule.CONSTANT
    assert lw.nu == pytest.approx(2.0) and lw.min_gamma == pytest.approx(0.01)
    assert lw.unit == P.LossWeightSchedule.EPOCH
    assert dict(P.LossWeightSchedule.Type.items()) == {
        "CONSTANT": 0, "CNDS_DECAY": 1, "MULTIWAY_POWER": 2, "ADAPTIVE_I": 3,
        "ADAPTIVE_II": 4}
    tv = P.TorchvisionParameter()
    assert tv.train is True and tv.shuffle is False
    sp = P.SamplingParameter()
    assert sp.mode == P.SamplingParameter.SEQUENTIAL
    assert P.SamplingParameter.Mode.Value("CLASS_AWARE") == 2
    assert _label(_field("GradientScope", "stop_at")) == REP
    assert _field("PoolingParameter", "ceil_mode").type == FD.TYPE_BOOL
    assert not P.PoolingParameter().HasField("ceil_mode")


def test_extensions_text_round_trip():
    src = """
    name: "ext"
    layer {
      name: "data" type: "Torchvision" top: "data" top: "label"
      torchvision_param { dataset: "CIFAR10" root: "/data" batch_size: 8 }
      sampling_param { mode: CLASS_AWARE seed: 3 }
    }
    layer {
      name: "pool" type: "Pooling" bottom: "data" top: "pool"
      pooling_param { pool: MAX kernel_size: 2 stride: 2 ceil_mode: false }
    }
    layer {
      name: "loss" type: "SoftmaxWithLoss" bottom: "pool" bottom: "label"
      top: "loss"
      gradient_scope { stop_at: "data" max_depth: 2 }
    }
    """
    net = text_format.Parse(src, caffe_pb2.NetParameter())
    assert net.layer[0].sampling_param.mode == caffe_pb2.SamplingParameter.CLASS_AWARE
    assert net.layer[1].pooling_param.HasField("ceil_mode")
    assert list(net.layer[2].gradient_scope.stop_at) == ["data"]
    again = caffe_pb2.NetParameter.FromString(net.SerializeToString())
    assert again == net
    solver = text_format.Parse(
        'net: "n.prototxt" bp_mode: MULTIWAY primary_loss: "loss" '
        'multiway_param { order: DEEP_TO_SHALLOW shared_forward: false } '
        'loss_weight_schedule { type: CNDS_DECAY epochs: 10 unit: ITERATION } '
        'iters_per_epoch: 391 amp: "bf16" channels_last: true',
        caffe_pb2.SolverParameter())
    assert solver.bp_mode == caffe_pb2.SolverParameter.MULTIWAY
    assert solver.iters_per_epoch == 391


# ---------------------------------------------------------------------------
# wire compatibility with BVLC Caffe's binary files
# ---------------------------------------------------------------------------

CAFFEMODELS = [p for p in _files(ORACLE, "*.caffemodel")
               if p.name in ("weights.caffemodel", "init.caffemodel")]
BINARYPROTOS = _files(ORACLE, "H.binaryproto")


def _unknown_fields(msg, path="") -> list[str]:
    """Paths of every unknown field in msg and its sub-messages."""
    from google.protobuf.unknown_fields import UnknownFieldSet

    out = [f"{path}#{u.field_number}" for u in UnknownFieldSet(msg)]
    for fd, value in msg.ListFields():
        if fd.type != FD.TYPE_MESSAGE:
            continue
        items = value if _label(fd) == REP else [value]
        for i, sub in enumerate(items):
            out += _unknown_fields(sub, f"{path}.{fd.name}[{i}]")
    return out


def _blob_array(blob) -> np.ndarray:
    """Blob data with Caffe's Blob::FromProto shape rule."""
    legacy = ("num", "channels", "height", "width")
    if any(blob.HasField(k) for k in legacy):
        shape = tuple(getattr(blob, k) for k in legacy)
    else:
        # A 0-d blob is written with no shape message at all.
        shape = tuple(blob.shape.dim)
    data = blob.double_data if len(blob.double_data) else blob.data
    return np.asarray(data, dtype=np.float32).reshape(shape)


def _skip_if_no_oracle(paths):
    if not paths:
        pytest.skip(f"no Caffe oracle data at {ORACLE}")


def test_oracle_present_or_skipped():
    _skip_if_no_oracle(CAFFEMODELS)
    assert len(CAFFEMODELS) >= 10


@pytest.mark.parametrize("path", CAFFEMODELS, ids=[_rel(p) for p in CAFFEMODELS])
def test_caffemodel_wire(path):
    raw = path.read_bytes()
    net = caffe_pb2.NetParameter.FromString(raw)
    assert len(net.layer) > 0 and not len(net.layers)
    assert _unknown_fields(net) == []
    # Caffe (C++) and protobuf-python both serialise known fields in field
    # number order with the same packing: the bytes round-trip exactly.
    assert net.SerializeToString() == raw
    for layer in net.layer:
        for blob in layer.blobs:
            arr = _blob_array(blob)
            assert arr.size == len(blob.data) + len(blob.double_data)

    case = path.parent
    params = case / "params.npz"
    if path.name == "weights.caffemodel" and params.exists():
        expected = dict(np.load(params))
        got = {f"param/{layer.name}/{i}": _blob_array(b)
               for layer in net.layer for i, b in enumerate(layer.blobs)}
        assert sorted(got) == sorted(expected)
        for key, arr in expected.items():
            assert got[key].shape == arr.shape, key
            np.testing.assert_array_equal(got[key], arr, err_msg=key)

    trajectory = case / "trajectory.npz"
    if path.name == "init.caffemodel" and trajectory.exists():
        traj = np.load(trajectory)
        got = {f"param/{layer.name}/{i}": _blob_array(b)
               for layer in net.layer for i, b in enumerate(layer.blobs)}
        expected = {k: traj[k][0] for k in traj.files if k.startswith("param/")}
        assert sorted(got) == sorted(expected)
        for key, arr in expected.items():
            np.testing.assert_array_equal(got[key], arr, err_msg=key)


@pytest.mark.parametrize("path", BINARYPROTOS, ids=[_rel(p) for p in BINARYPROTOS])
def test_binaryproto_wire(path):
    raw = path.read_bytes()
    blob = caffe_pb2.BlobProto.FromString(raw)
    assert _unknown_fields(blob) == []
    assert blob.SerializeToString() == raw
    arr = _blob_array(blob)
    c = arr.shape[-1]
    assert arr.size == c * c and c > 1
    assert np.isfinite(arr).all()


# ---------------------------------------------------------------------------
# text compatibility with Caffe's .prototxt files
# ---------------------------------------------------------------------------

PROTOTXTS = _files(ZOO, "*.prototxt") + _files(ORACLE, "*.prototxt")


def test_prototxts_present_or_skipped():
    if not PROTOTXTS:
        pytest.skip(f"no Caffe prototxt files under {SHARED}")
    assert any("solver" in p.name for p in PROTOTXTS)


@pytest.mark.parametrize("path", PROTOTXTS, ids=[_rel(p) for p in PROTOTXTS])
def test_prototxt_text(path):
    text = path.read_text()
    if "solver" in path.name:
        msg = text_format.Parse(text, caffe_pb2.SolverParameter())
    else:
        msg = text_format.Parse(text, caffe_pb2.NetParameter())
        assert len(msg.layer) + len(msg.layers) > 0
    # Printing and re-parsing is lossless.
    again = text_format.Parse(text_format.MessageToString(msg), type(msg)())
    assert again == msg
