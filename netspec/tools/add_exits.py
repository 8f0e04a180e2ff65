"""Add auxiliary exits (deep supervision) to a net, keeping its text byte for byte.

Where the exits go (``netspec.tools.trunk`` defines the trunk, its depth L and the
attachment points):

* ``after=[...]``: after the named blobs or layers;
* ``count=K``: MW-BP's placement (Guo et al. 2020, sec. 4.1): an exit every
  tau = ceil(L / (K + 1)) weight layers, each at the first attachment point at or past
  weight layer i * tau.  The paper advises tau >= 5; below that a warning (W0800);
* ``auto``: CNDS's rule (Wang et al. 2015, sec. 3.2) on ``netspec probe``'s measurement.

What an exit is (``head``): ``mwbp`` global average pooling + a classifier (MW-BP Fig. 1),
``cnds`` a 1x1 convolution (128) + ReLU, fc (1024) + ReLU + dropout, a classifier (CNDS
Fig. 1), or a template file whose ``${bottom}`` is the attachment blob (also ``${name}``,
``${label}``, ``${num_output}``, ``${loss_weight}``, ``${loss_type}``).  The classifier copies
the net's final classifier (num_output, fillers), the loss copies the primary loss (type,
label bottoms, loss_param) with weight ``weight``, and every exit gets a TEST-phase Accuracy.

The new layers are spliced into the original text after the layer writing the attachment
blob's last in-place version (so they read that version); nothing else changes.
"""
from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from ..check import check_net, load
from ..diagnostics import Diagnostic, NetspecError, did_you_mean
from ..fileio import write_atomic
from ..lower import NetSource, NetState
from ..parse import parse_text
from ..proto import caffe_pb2
from ..schema import to_message
from .probe import THRESHOLD
from .trunk import Point, Trunk, trunk_of

HEADS = ("mwbp", "cnds")
WEIGHT = 0.3                 # GoogLeNet's and CNDS's auxiliary weight; MULTIWAY_POWER replaces it
MIN_TAU = 5                  # MW-BP sec. 4.1: "tau >= 5"
CLASSIFYING = {"SoftmaxWithLoss", "MultinomialLogisticLoss", "InfogainLoss", "HingeLoss"}
SOLVER_MODES = ("STANDARD", "JOINT", "RELAY", "MULTIWAY")


def _fail(message: str, help_=(), span=None) -> NetspecError:
    return NetspecError([Diagnostic("E0804", message, span, help=list(help_))])


# -- where ------------------------------------------------------------------------------

def place_after(trunk: Trunk, names: list[str]) -> list[Point]:
    """The attachment points of the named blobs or layers (each must be one)."""
    points = []
    for name in names:
        p = trunk.point_of(name)
        if p is None:
            known = [q.blob for q in trunk.points]
            raise _fail(f"'{name}' is not a point of the trunk where an exit can hang",
                        did_you_mean(name, known) +
                        [f"attachment points (blobs every path to '{trunk.primary}' passes through): "
                         + ", ".join(known)])
        points.append(p)
    return sorted(set(points), key=lambda p: p.depth)


def place_count(trunk: Trunk, k: int) -> tuple[list[Point], int, list[Diagnostic]]:
    """MW-BP's placement of ``k`` exits: (points, tau, warnings)."""
    if k < 1:
        raise _fail(f"--count must be at least 1, got {k}")
    tau = math.ceil(trunk.L / (k + 1))
    warnings = []
    most = math.ceil(trunk.L / (MIN_TAU - 1)) - 2      # the largest K with ceil(L / (K + 1)) >= 5
    if tau < MIN_TAU:
        warnings.append(Diagnostic("W0800", f"{k} exits on a trunk of {trunk.L} weight layers put one every "
                                   f"tau = {tau} layers; MW-BP advises tau >= {MIN_TAU}", severity="warning",
                                   help=[f"--count {most} or fewer keeps tau >= {MIN_TAU}" if most else
                                         f"the trunk is too short for tau >= {MIN_TAU}"]))
    points = []
    for i in range(1, k + 1):
        p = trunk.point_at_or_after(i * tau)
        if p is None or p in points:
            warnings.append(Diagnostic("W0800", f"no attachment point at or past weight layer {i * tau}; "
                                       f"exit {i} of {k} is left out", severity="warning"))
            continue
        points.append(p)
    return points, tau, warnings


def place_auto(trunk: Trunk, solver_path: str, iterations: int, input_shapes=None, device=None,
               threshold: float = THRESHOLD):
    """CNDS's rule: probe the solver's net and branch where the primary gradient vanishes."""
    from ..solve.solver import Solver
    from .probe import probe
    result = probe(Solver(solver_path, device=device, input_shapes=input_shapes, log=lambda line: None),
                   at=(0, iterations), threshold=threshold)
    place = result.placement()
    if not place.layers:
        raise _fail(f"CNDS's rule places no branch: {place.reason}",
                    ["`netspec probe --solver S` shows the gradients; --count K or --after B place exits"])
    points = []
    for layer in place.layers:
        depth = trunk.depth.get(layer)
        p = trunk.point_of(layer) or (trunk.point_at_or_after(depth) if depth else None)
        if p is None:
            raise _fail(f"CNDS's rule branches after '{layer}', which is not on the trunk of the net")
        points.append(p)
    return sorted(set(points), key=lambda p: p.depth), result


# -- what -------------------------------------------------------------------------------

@dataclass
class Context:
    """What every head copies from the net: the classifier and the primary loss."""

    num_output: int
    classifier_fill: str                 # weight/bias fillers of the final classifier, text
    loss_type: str
    labels: list[str]
    loss_param: str
    weight: float

    @classmethod
    def of(cls, trunk: Trunk, weight: float) -> "Context":
        g = trunk.net.graph
        clf, loss = g.layer(trunk.classifier).lp, g.layer(trunk.primary)
        param = clf.inner_product_param if clf.type == "InnerProduct" else clf.convolution_param
        if not param.num_output:
            raise _fail(f"the final classifier '{trunk.classifier}' ({clf.type}) has no num_output to copy")
        fill = " ".join(f"{f} {{ {text_format.MessageToString(getattr(param, f), as_one_line=True)} }}"
                        for f in ("weight_filler", "bias_filler") if param.HasField(f))
        lp = loss.lp.loss_param
        return cls(param.num_output, fill, loss.type, [b.name for b in loss.bottoms[1:]],
                   text_format.MessageToString(lp, as_one_line=True) if lp.ByteSize() else "", weight)


def _layer(name: str, type_: str, bottoms, tops, *extra: str) -> str:
    lines = [f'  name: "{name}"', f'  type: "{type_}"'] + [f'  bottom: "{b}"' for b in bottoms] + \
            [f'  top: "{t}"' for t in tops] + [f"  {e}" for e in extra if e]
    return "layer {\n" + "\n".join(lines) + "\n}\n"


def _classifier(name: str, bottom: str, ctx: Context) -> str:
    return _layer(name, "InnerProduct", [bottom], [name],
                  f"inner_product_param {{ num_output: {ctx.num_output} {ctx.classifier_fill} }}".replace("  ", " "))


def _loss_and_accuracy(prefix: str, scores: str, ctx: Context) -> str:
    loss_param = f"loss_param {{ {ctx.loss_param} }}" if ctx.loss_param else ""
    out = _layer(f"{prefix}_loss", ctx.loss_type, [scores] + ctx.labels, [f"{prefix}_loss"],
                 f"loss_weight: {ctx.weight:g}", loss_param)
    if ctx.loss_type in CLASSIFYING and ctx.labels:
        out += _layer(f"{prefix}_accuracy", "Accuracy", [scores, ctx.labels[0]], [f"{prefix}_accuracy"],
                      "include { phase: TEST }")
    return out


def head_mwbp(prefix: str, blob: str, spatial: bool, ctx: Context) -> str:
    """MW-BP Fig. 1: global average pooling, a classifier, the loss."""
    out, x = "", blob
    if spatial:
        out += _layer(f"{prefix}_pool", "Pooling", [blob], [f"{prefix}_pool"],
                      "pooling_param { pool: AVE global_pooling: true }")
        x = f"{prefix}_pool"
    return out + _classifier(f"{prefix}_fc", x, ctx) + _loss_and_accuracy(prefix, f"{prefix}_fc", ctx)


def head_cnds(prefix: str, blob: str, spatial: bool, ctx: Context) -> str:
    """CNDS Fig. 1: 1x1 convolution (128) + ReLU, fc (1024) + ReLU + dropout, a classifier, the loss."""
    out, x = "", blob
    if spatial:
        out += _layer(f"{prefix}_conv", "Convolution", [blob], [f"{prefix}_conv"],
                      "convolution_param { num_output: 128 kernel_size: 1 "
                      'weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" } }')
        out += _layer(f"{prefix}_relu_conv", "ReLU", [f"{prefix}_conv"], [f"{prefix}_conv"])
        x = f"{prefix}_conv"
    out += _layer(f"{prefix}_fc1", "InnerProduct", [x], [f"{prefix}_fc1"],
                  'inner_product_param { num_output: 1024 weight_filler { type: "gaussian" std: 0.005 } '
                  'bias_filler { type: "constant" value: 0.1 } }')
    out += _layer(f"{prefix}_relu_fc1", "ReLU", [f"{prefix}_fc1"], [f"{prefix}_fc1"])
    out += _layer(f"{prefix}_drop_fc1", "Dropout", [f"{prefix}_fc1"], [f"{prefix}_fc1"],
                  "dropout_param { dropout_ratio: 0.5 }")
    return out + _classifier(f"{prefix}_fc", f"{prefix}_fc1", ctx) + \
        _loss_and_accuracy(prefix, f"{prefix}_fc", ctx)


def head_template(template: str, path: str, prefix: str, blob: str, ctx: Context) -> str:
    """A user template: ``${bottom}`` is the attachment blob; an Accuracy is added when it has none."""
    values = {"bottom": blob, "name": prefix, "label": ctx.labels[0] if ctx.labels else "",
              "num_output": str(ctx.num_output), "loss_weight": f"{ctx.weight:g}", "loss_type": ctx.loss_type}
    try:
        text = string.Template(template).substitute(values)
    except (KeyError, ValueError) as e:
        raise _fail(f"head template '{path}' uses an unknown or malformed placeholder: {e}",
                    ["placeholders: " + ", ".join(f"${{{k}}}" for k in values)]) from None
    text = text if text.endswith("\n") else text + "\n"
    layers = [f.value for f in parse_text(text, f"{path} (for {prefix})").fields if f.name == "layer"]
    loss = next((m for m in layers if _scalar(m, "type").endswith("Loss") or m.get("loss_weight")), None)
    if loss is None:
        raise _fail(f"head template '{path}' has no loss layer", ["a *Loss layer, or a layer with loss_weight"])
    if ctx.labels and not any(_scalar(m, "type") == "Accuracy" for m in layers):
        scores = _scalar(loss, "bottom")
        text += _layer(f"{prefix}_accuracy", "Accuracy", [scores, ctx.labels[0]], [f"{prefix}_accuracy"],
                       "include { phase: TEST }")
    return text


def _scalar(msg, name: str) -> str:
    found = msg.get(name)
    return str(found[0].value.value) if found and hasattr(found[0].value, "value") else ""


# -- splicing ---------------------------------------------------------------------------

def _offset(text: str, line: int, col: int) -> int:
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    return starts[line - 1] + col - 1


def insertion_offset(text: str, src: NetSource, trunk: Trunk, writer: str) -> int:
    """Where text goes to follow layer ``writer``: the start of the line after its closing brace,
    or right after the brace when something else follows it on that line."""
    span = src.span(trunk.net.graph.layer(writer).path)
    if span is None or span.path != src.path:
        raise _fail(f"cannot locate layer '{writer}' in the text of '{src.path}'",
                    ["add-exits edits the file that defines the layers (not an upgraded V0/V1 net)"])
    end = _offset(text, span.end_line, span.end_col)
    nl = text.find("\n", end)
    rest = text[end:len(text) if nl < 0 else nl]
    if rest.strip() and not rest.strip().startswith("#"):
        return end
    return len(text) if nl < 0 else nl + 1


def splice(text: str, blocks: list[tuple[int, str]]) -> str:
    """Insert each (offset, block) into ``text``; nothing else changes."""
    for at, block in sorted(blocks, key=lambda b: b[0], reverse=True):
        line_start = at == 0 or text[at - 1] == "\n"
        block = block if line_start else "\n" + block.rstrip("\n")
        if at == len(text) and not line_start:
            block += "\n"
        text = text[:at] + block + text[at:]
    return text


# -- the whole operation ----------------------------------------------------------------

@dataclass
class Result:
    """What ``add_exits`` did: the new text, the exits (prefix -> point) and any warnings."""

    text: str
    exits: dict[str, Point]
    trunk: Trunk
    tau: int | None = None
    warnings: list[Diagnostic] = field(default_factory=list)
    solvers: list[Path] = field(default_factory=list)
    probe: object = None


def _spatial(trunk: Trunk, point: Point) -> bool:
    g = trunk.net.graph
    shape = next((s for b, s in trunk.net.shapes.items() if b.name == point.blob and s), None)
    if shape is not None:
        return len(shape) == 4
    first = g.layer(next(g.producer[b] for b in g.producer if b.name == point.blob and b.version == 0))
    return first.type not in ("InnerProduct", "Embed")


def build_exits(text: str, src: NetSource, trunk: Trunk, points: list[Point], head: str,
                ctx: Context) -> tuple[str, dict[str, Point]]:
    """The new text with one exit per point, each named ``exitN`` with N unused in the net."""
    g = trunk.net.graph
    taken = {n.name for n in g.layers()} | {b.name for b in g.producer}
    template = None if head in HEADS else _read_template(head)
    blocks, exits, n = [], {}, 0
    for point in points:
        while True:
            n += 1
            prefix = f"exit{n}"
            block = _head(head, template, prefix, point, trunk, ctx)
            if not (_names_in(block) & taken):
                break
        taken |= _names_in(block)
        note = f"# {prefix}: added by `netspec add-exits` ({head if template is None else Path(head).name} " \
               f"head on blob {point.blob}, after weight layer {point.depth} of {trunk.L})\n"
        blocks.append((insertion_offset(text, src, trunk, point.writer), note + block))
        exits[prefix] = point
    return splice(text, blocks), exits


def _head(head, template, prefix, point, trunk, ctx) -> str:
    if head == "mwbp":
        return head_mwbp(prefix, point.blob, _spatial(trunk, point), ctx)
    if head == "cnds":
        return head_cnds(prefix, point.blob, _spatial(trunk, point), ctx)
    return head_template(template, head, prefix, point.blob, ctx)


def _names_in(block: str) -> set[str]:
    return set(re.findall(r'\b(?:name|top):\s*"([^"]*)"', block))


def _read_template(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _fail(f"cannot read head template '{path}': {getattr(e, 'strerror', None) or e}",
                    [f"--head is {', '.join(HEADS)} or a template file"]) from None


def check_text(text: str, path: str, input_shapes=None) -> None:
    """The new net must parse and check in both phases (raises the diagnostics otherwise)."""
    from ..diagnostics import Diagnostics
    diags = Diagnostics()
    msg, smap = to_message(parse_text(text, path), caffe_pb2.NetParameter, diags)
    diags.check()
    src = NetSource(msg, smap, (), path)
    for phase in ("TRAIN", "TEST"):
        check_net(src, NetState.of(phase), input_shapes)


def add_exits(net_path: str, out: str | None = None, *, after: list[str] | None = None,
              count: int | None = None, auto: bool = False, solver: str | None = None,
              head: str = "mwbp", weight: float = WEIGHT, solvers: bool = False,
              iterations: int = 50, input_shapes: dict | None = None, primary: str = "",
              device: str | None = None, threshold: float = THRESHOLD) -> Result:
    """Add exits to the net at ``net_path``; write it to ``out`` (and solvers) when given."""
    text = Path(net_path).read_bytes().decode("utf-8")
    kind, src = load(net_path)
    if kind != "net":
        raise _fail(f"'{net_path}' is a solver file; add-exits reads a net", ["name the net .prototxt"])
    if src.net.layers:
        raise _fail(f"'{net_path}' is a V1 net (`layers` entries); add-exits writes current `layer` entries",
                    [f"upgrade it first: netspec upgrade {net_path} -o NEW.prototxt"])
    net = check_net(src, NetState.of("TRAIN"), input_shapes)
    if not net.losses:
        raise _fail(f"net '{net.name}' has no loss; each exit copies the primary loss",
                    ["give add-exits the training net (train_val.prototxt), not the deploy net"])
    trunk = trunk_of(net, primary)
    tau, warnings, probed = None, [], None
    if after:
        points = place_after(trunk, after)
    elif count is not None:
        points, tau, warnings = place_count(trunk, count)
    elif auto:
        if not solver:
            raise _fail("--auto needs --solver S: the solver whose training the probe runs")
        points, probed = place_auto(trunk, solver, iterations, input_shapes, device, threshold)
    else:
        raise _fail("say where the exits go: --after B1,B2, --count K or --auto --solver S")
    if not points:
        raise _fail("no exit could be placed", [f"the trunk has {trunk.L} weight layers"])
    new_text, exits = build_exits(text, src, trunk, points, head, Context.of(trunk, weight))
    target = str(out) if out else f"{net_path} (with exits)"
    check_text(new_text, target, input_shapes)
    result = Result(new_text, exits, trunk, tau, warnings, probe=probed)
    if out:
        write_atomic(out, new_text)
        if solvers:
            result.solvers = write_solvers(Path(out), trunk.primary, solver)
    return result


# -- solvers ----------------------------------------------------------------------------

REPLACED = {"net", "net_param", "train_net", "train_net_param", "test_net", "test_net_param",
            "bp_mode", "primary_loss", "loss_weight_schedule", "snapshot_prefix"}
DEFAULT_SOLVER = """\
base_lr: 0.01
lr_policy: "step"
gamma: 0.1
stepsize: 10000
momentum: 0.9
weight_decay: 0.0005
max_iter: 30000
display: 100
random_seed: 1
solver_mode: CPU
"""


def write_solvers(net: Path, primary: str, base: str | None = None) -> list[Path]:
    """One solver per BP mode beside ``net``; every mode with exits weights them by MULTIWAY_POWER."""
    text = _without_fields(Path(base).read_text(encoding="utf-8")) if base else DEFAULT_SOLVER
    text = text if text.endswith("\n") or not text else text + "\n"
    written = []
    for mode in SOLVER_MODES:
        weighting = "" if mode == "STANDARD" else \
            "loss_weight_schedule { type: MULTIWAY_POWER nu: 2 }   # MW-BP eq. 5, the same for every mode\n"
        body = (f"# written by `netspec add-exits --solvers`: {mode} BP on {net.name}\n"
                f'net: "{net.name}"\nbp_mode: {mode}\nprimary_loss: "{primary}"\n{weighting}'
                f'snapshot_prefix: "{net.stem}_{mode.lower()}"\n')
        path = net.with_name(f"{net.stem}_solver_{mode.lower()}.prototxt")
        write_atomic(path, text + body)
        written.append(path)
    return written


def _without_fields(text: str) -> str:
    """``text`` without its top-level fields that name the net, the mode or the weighting."""
    tree = parse_text(text, "<base solver>")
    cuts = []
    for f in tree.fields:
        if f.name in REPLACED:
            a, b = _offset(text, f.span.line, f.span.col), _offset(text, f.span.end_line, f.span.end_col)
            ls, nl = text.rfind("\n", 0, a) + 1, text.find("\n", b)
            le = len(text) if nl < 0 else nl + 1
            rest = text[b:le].strip()
            whole = not text[ls:a].strip() and (not rest or rest.startswith("#"))
            cuts.append((ls, le) if whole else (a, b))
    for a, b in sorted(cuts, reverse=True):
        text = text[:a] + text[b:]
    return text
