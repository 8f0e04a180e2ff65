"""``netspec export``: any exit of a trained net (or the whole TEST net) as a standalone model.

The deploy net holds only what the chosen exits need: an ``Input`` layer per data blob the
trunk reads (the data layer's shape, batch ``batch``), the layers up to each exit's
classifier top, and a ``Softmax`` (``Sigmoid`` for SigmoidCrossEntropyLoss) on it named
``prob`` (``<classifier top>_prob`` when several exits are exported); no data layers,
losses, accuracies or other branches.  Its blobs are copied by layer name from the trained
net.  Formats:

* ``prototxt``: the deploy ``.prototxt`` and its ``.caffemodel`` (as Caffe 1.0's
  ``Net::ToProto`` writes it; BatchNorm and Scale unfolded, as Caffe expects);
* ``python``: the inference build's standalone source (depends only on torch) and its
  ``state_dict`` (``.pt``); ``Net().load_state_dict(torch.load(...))``;
* ``onnx``: ``torch.onnx.export`` of the inference build, checked by ``onnx.checker`` and
  run in onnxruntime against torch (``pip install -e '.[onnx]'``);
* ``pt2``: ``torch.export`` of the inference build, saved with ``torch.export.save``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from google.protobuf import text_format

from ..check import CheckedNet, check_net
from ..diagnostics import Diagnostic, NetspecError
from ..fileio import write_atomic
from ..graph import Blob
from ..lower import NetState
from ..proto import caffe_pb2

FORMATS = ("prototxt", "python", "onnx", "pt2")
_PROB = {"SoftmaxWithLoss": "Softmax", "SigmoidCrossEntropyLoss": "Sigmoid"}


@dataclass
class ExitSpec:
    """A loss of the trained net and the classifier top its probability is computed from."""

    loss: str
    top: Blob
    kind: str | None                 # "Softmax", "Sigmoid", or None: the top itself is exported
    axis: int = 1
    loss_tops: tuple = ()


def net_exits(net: CheckedNet) -> list[ExitSpec]:
    """Every loss of ``net`` as an exit, in net order."""
    out = []
    for loss in net.losses:
        node = net.graph.layer(loss.layer)
        axis = node.lp.softmax_param.axis if node.lp.HasField("softmax_param") else 1
        out.append(ExitSpec(loss.layer, node.bottoms[0], _PROB.get(node.type), axis,
                            tuple(b.name for b in node.tops)))
    return out


def pick_exits(net: CheckedNet, name: str | None) -> list[ExitSpec]:
    """The exit named by a loss layer, its top or its classifier top; every exit when ``name`` is None."""
    found = net_exits(net)
    if not found:
        raise NetspecError([Diagnostic("E0800", f"net '{net.name}' has no loss: no exit to export",
                                       help=["export the train_val net the weights were trained with"])])
    if name is None:
        return found
    hits = [e for e in found if name in (e.loss, e.top.name) + e.loss_tops]
    if not hits:
        choices = ", ".join(f"{e.loss} ({e.top.name})" for e in found)
        raise NetspecError([Diagnostic("E0800", f"'{name}' is neither a loss nor a classifier top of "
                                       f"net '{net.name}'", help=[f"exits: {choices}"])])
    return hits[:1]


def deploy_layers(net: CheckedNet, exits: list[ExitSpec]) -> list:
    """The trunk and heads the exits need, in net order (LayerNodes; data layers excluded)."""
    needed: set[str] = set()
    for e in exits:
        producer = net.graph.producer[e.top]
        needed |= net.graph.ancestors(producer) | {producer}
    return [n for n in net.graph.layers() if n.name in needed and not n.impl.is_data]


def deploy_net_parameter(net: CheckedNet, exits: list[ExitSpec], batch: int = 1):
    """The deploy NetParameter for ``exits``: Input layers, the needed layers, prob layers."""
    layers = deploy_layers(net, exits)
    inputs = _inputs(net, layers)
    suffix = "" if len(exits) > 1 or exits[0].loss == net.losses[-1].layer else f"_{exits[0].loss}"
    out = caffe_pb2.NetParameter(name=f"{net.name or 'net'}{suffix}")
    lp = out.layer.add(name="input", type="Input")
    for blob, shape in inputs:
        lp.top.append(blob.name)
        lp.input_param.shape.add(dim=[batch] + list(shape[1:]))
    for node in layers:
        out.layer.add().CopyFrom(_deploy_layer(node.lp))
    for e in exits:
        if e.kind is not None:
            prob = out.layer.add(name=_prob_name(e, exits), type=e.kind, bottom=[e.top.name],
                                 top=[_prob_name(e, exits)])
            if e.kind == "Softmax" and e.axis != 1:
                prob.softmax_param.axis = e.axis
    return out


def _prob_name(e: ExitSpec, exits: list[ExitSpec]) -> str:
    return "prob" if len(exits) == 1 else f"{e.top.name}_prob"


def output_names(exits: list[ExitSpec]) -> list[str]:
    """The exported net's outputs, one per exit."""
    return [_prob_name(e, exits) if e.kind else e.top.name for e in exits]


def _inputs(net: CheckedNet, layers) -> list[tuple[Blob, tuple]]:
    """The data-layer blobs the kept layers read, with their shapes."""
    read = {b for n in layers for b in n.bottoms}
    out = []
    for node in net.graph.layers():
        if node.impl.is_data:
            for b in node.tops:
                if b in read:
                    if net.shapes.get(b) is None:
                        raise NetspecError([Diagnostic("E0500", f"the shape of input '{b.name}' is unknown",
                                                       help=[f"give it with --input-shape {b.name}=N,C,H,W"])])
                    out.append((b, tuple(net.shapes[b])))
    return out


def _deploy_layer(lp):
    """A layer as a deploy file holds it: no phase rules, loss weights or netspec scopes."""
    lp = type(lp).FromString(lp.SerializeToString())
    for f in ("include", "exclude", "loss_weight", "propagate_down", "blobs"):
        lp.ClearField(f)
    for f in ("phase", "gradient_scope"):
        if f in lp.DESCRIPTOR.fields_by_name and lp.HasField(f):
            lp.ClearField(f)
    return lp


# -- building and writing --------------------------------------------------------------------
@dataclass
class Exported:
    """The deploy net, compiled (inference build) with the trained blobs."""

    param: object                   # caffe_pb2.NetParameter
    net: CheckedNet
    compiled: object                # netspec.compile.module.Compiled
    outputs: list[str]


def build_export(trained, exit_name: str | None, batch: int = 1) -> Exported:
    """The deploy net of ``trained`` (a :class:`netspec.Net`) for one exit or all of them."""
    from ..compile.module import compile_net, refold
    from .caffemodel import copy_blobs
    from .export import blob_tensor
    exits = pick_exits(trained.net, exit_name)
    param = deploy_net_parameter(trained.net, exits, batch)
    net = check_net(_source(param, trained.net), NetState.of("TEST"))
    compiled = compile_net(net, seed=0, inference=True)
    table = {}
    for node in deploy_layers(trained.net, exits):
        if node.impl.blobs:
            table[node.name] = [blob_tensor(trained.compiled, node.name, i).detach().cpu().numpy()
                                for i in range(len(node.impl.blobs))]
    copy_blobs(compiled, table, source="the trained net", strict=True)
    refold(compiled.module)
    compiled.module.eval()
    return Exported(param, net, compiled, output_names(exits))


def _source(param, trained_net: CheckedNet):
    """The deploy NetParameter through netspec's front end (parsed from its text, so that
    diagnostics have spans)."""
    from ..diagnostics import Diagnostics
    from ..lower import NetSource
    from ..parse.parser import parse_text
    from ..schema import to_message
    path = str(Path(str(trained_net.source.path)).with_suffix(".deploy.prototxt"))
    diags = Diagnostics()
    msg, smap = to_message(parse_text(text_format.MessageToString(param), path), caffe_pb2.NetParameter, diags)
    diags.check()
    return NetSource(msg, smap, (), path)


def write_prototxt(exp: Exported, out: Path) -> list[Path]:
    """``out`` (.prototxt) and ``out`` with suffix .caffemodel."""
    from .export import write_caffemodel
    text = "# exported by netspec export\n" + text_format.MessageToString(exp.param)
    model = out.with_suffix(".caffemodel")
    return [write_atomic(out, text), write_caffemodel(exp.compiled, model)]


def write_python(exp: Exported, out: Path) -> list[Path]:
    """``out`` (.py, the inference build's source) and ``out`` with suffix .pt (its state_dict)."""
    import io
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in exp.compiled.module.state_dict().items()}, buf)
    return [write_atomic(out, exp.compiled.generated.source), write_atomic(out.with_suffix(".pt"), buf.getvalue())]


class _Positional(torch.nn.Module):
    """The compiled module with positional inputs and a tuple of the exported outputs."""

    def __init__(self, module, inputs: list[str], outputs: list[str]):
        super().__init__()
        self.module, self.inputs, self.outputs = module, inputs, outputs

    def forward(self, *args):
        out = self.module(**dict(zip(self.inputs, args)))
        return tuple(out[k] for k in self.outputs)


def example_inputs(exp: Exported, seed: int = 0) -> tuple:
    g = torch.Generator().manual_seed(seed)
    shapes = {b.name: s for b, s in exp.net.shapes.items() if b.version == 0}
    return tuple(torch.randn(shapes[n], generator=g) for n in exp.compiled.generated.inputs)


def positional(exp: Exported) -> torch.nn.Module:
    return _Positional(exp.compiled.module, list(exp.compiled.generated.inputs), exp.outputs).eval()


def write_pt2(exp: Exported, out: Path) -> list[Path]:
    """``torch.export`` of the inference build, saved with ``torch.export.save`` (atomically)."""
    import io
    with torch.no_grad():
        program = torch.export.export(positional(exp), example_inputs(exp))
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return [write_atomic(out, buf.getvalue())]


def write_onnx(exp: Exported, out: Path, tolerance: float = 1e-5) -> list[Path]:
    """``torch.onnx.export``; the file must pass ``onnx.checker`` and onnxruntime must compute
    what torch computes (``tolerance`` relative to the largest output), or nothing is written."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise NetspecError([Diagnostic("E0803", "--to onnx needs the onnx and onnxruntime packages",
                                       help=["pip install -e '.[onnx]'"])]) from None
    import tempfile
    model, args = positional(exp), example_inputs(exp)
    names = list(exp.compiled.generated.inputs)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(model, args, str(path), input_names=names, output_names=exp.outputs,
                              dynamo=True, external_data=False, verbose=False)
        onnx.checker.check_model(str(path))
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(exp.outputs, {n: a.numpy() for n, a in zip(names, args)})
        with torch.no_grad():
            want = model(*args)
        for name, g, w in zip(exp.outputs, got, want):
            err = float((torch.from_numpy(g) - w).abs().max())
            if err > tolerance * max(float(w.abs().max()), 1e-30):
                raise NetspecError([Diagnostic("E0700", f"onnxruntime's '{name}' differs from torch's by {err:.3g}")])
        return [write_atomic(out, path.read_bytes())]


WRITERS = {"prototxt": write_prototxt, "python": write_python, "onnx": write_onnx, "pt2": write_pt2}
