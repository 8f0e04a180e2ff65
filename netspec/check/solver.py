"""Check pass for solver files: Caffe's SolverParameter rules, plus the nets it names.

Net paths are resolved as Caffe does, against the working directory; when not
found there, netspec also tries the solver's directory and its parents (Caffe's
example solvers name paths relative to the Caffe root).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..diagnostics import Diagnostics, did_you_mean
from ..lower import NetSource, NetState
from ..proto import caffe_pb2
from ..schema import SourceMap

LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")
SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
_V1_TYPES = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}


@dataclass
class SolverSpec:
    """A checked solver file with its train net and test nets (and their states)."""

    param: object
    smap: SourceMap
    path: str
    train: NetSource | None = None
    train_state: NetState = field(default_factory=NetState)
    tests: list[tuple[NetSource, NetState]] = field(default_factory=list)
    missing_nets_ok: bool = False

    @property
    def type(self) -> str:
        if self.param.HasField("solver_type") and not self.param.HasField("type"):
            return _V1_TYPES[self.param.solver_type]
        return self.param.type


def resolve_path(name: str, solver_path: str) -> Path | None:
    """Find a file a solver names: cwd first (Caffe), then beside the solver and upwards."""
    p = Path(name)
    if p.is_absolute() or p.exists():
        return p if p.exists() else None
    base = Path(solver_path).resolve().parent
    for d in [base, *base.parents]:
        if (d / p).exists():
            return d / p
    return None


def state_of(ns, phase: int) -> NetState:
    if ns is None:
        return NetState(phase)
    return NetState(ns.phase if ns.HasField("phase") else phase, ns.level, tuple(ns.stage))


def load_solver(param, smap: SourceMap, path: str, diags: Diagnostics, load_net,
                missing_nets_ok: bool = False) -> SolverSpec:
    """Validate ``param`` and load the nets it names with ``load_net(path, diags)``.

    ``missing_nets_ok`` (``netspec check``) reports absent net files as warnings, so a
    solver whose nets are generated elsewhere still checks; training needs them.
    """
    spec = SolverSpec(param, smap, path)
    spec.missing_nets_ok = missing_nets_ok
    _check_values(spec, diags)
    _train_net(spec, diags, load_net)
    _test_nets(spec, diags, load_net)
    return spec


def _net_from_file(spec, field_path, name, diags, load_net) -> NetSource | None:
    found = resolve_path(name, spec.path)
    if found is None:
        report = diags.warning if spec.missing_nets_ok else diags.error
        report("W0601" if spec.missing_nets_ok else "E0601", f"the net file '{name}' does not exist",
               spec.smap.span(field_path), help=["paths are relative to the working directory, as in Caffe"],
               notes=["the nets it would name are not checked"] if spec.missing_nets_ok else [])
        return None
    kind, src = load_net(found, diags)
    return src if kind == "net" else None


def _inline(spec, field_path, msg) -> NetSource:
    return NetSource(msg, spec.smap, field_path, spec.path)


def _train_net(spec: SolverSpec, diags, load_net) -> None:
    p = spec.param
    given = [f for f in ("train_net_param", "train_net", "net_param", "net") if p.HasField(f)]
    if len(given) != 1:
        msg = ("the solver names no train net" if not given else
               "the solver names more than one train net: " + ", ".join(given))
        diags.error("E0600", msg, spec.smap.span((given[1],)) if len(given) > 1 else spec.smap.root,
                    help=["give exactly one of net, net_param, train_net, train_net_param"])
        if not given:
            return
    f = given[0]
    spec.train = (_inline(spec, (f,), getattr(p, f)) if f.endswith("_param")
                  else _net_from_file(spec, (f,), getattr(p, f), diags, load_net))
    spec.train_state = state_of(p.train_state if p.HasField("train_state") else None, caffe_pb2.TRAIN)


def _test_nets(spec: SolverSpec, diags, load_net) -> None:
    p = spec.param
    nets = [_inline(spec, ("test_net_param", i), m) for i, m in enumerate(p.test_net_param)]
    nets += [_net_from_file(spec, ("test_net", i), n, diags, load_net) for i, n in enumerate(p.test_net)]
    generic = p.HasField("net") or p.HasField("net_param")
    if generic and len(p.test_iter) > len(nets):
        nets += [spec.train] * (len(p.test_iter) - len(nets))
    if len(p.test_iter) != len(nets):
        where = spec.smap.span(("test_iter", 0)) if p.test_iter else spec.smap.root
        diags.error("E0600", f"{len(p.test_iter)} test_iter values for {len(nets)} test nets", where,
                    help=["give one test_iter per test net" if nets else
                          "test_iter needs a test net (test_net, test_net_param, net or net_param)"])
    if p.test_state and len(p.test_state) != len(nets):
        diags.error("E0600", f"{len(p.test_state)} test_state entries for {len(nets)} test nets",
                    spec.smap.span(("test_state", 0)), help=["give test_state once per test net, or not at all"])
    for i, net in enumerate(nets):
        if net is not None:
            ns = p.test_state[i] if i < len(p.test_state) else None
            spec.tests.append((net, state_of(ns, caffe_pb2.TEST)))


def _check_values(spec: SolverSpec, diags: Diagnostics) -> None:
    p, at = spec.param, spec.smap.span

    def bad(field_name, msg, help_=()):
        diags.error("E0600", msg, at((field_name,)), help=list(help_))

    if p.base_lr < 0:
        bad("base_lr", f"base_lr must be non-negative, got {p.base_lr:.7g}")
    policy = p.lr_policy or "fixed"
    if p.HasField("lr_policy") and policy not in LR_POLICIES:
        bad("lr_policy", f"unknown lr_policy '{p.lr_policy}'",
            did_you_mean(p.lr_policy, LR_POLICIES) + ["valid: " + ", ".join(LR_POLICIES)])
    if policy == "step" and p.stepsize <= 0:
        bad("lr_policy", "lr_policy 'step' needs a positive stepsize", ["add `stepsize: N`"])
    if policy == "multistep" and list(p.stepvalue) != sorted(p.stepvalue):
        bad("stepvalue", "stepvalue entries must increase")
    if policy == "poly" and p.max_iter <= 0:
        bad("lr_policy", "lr_policy 'poly' needs a positive max_iter")
    if p.HasField("solver_type") and p.HasField("type"):     # Caffe's UpgradeSolverType CHECK
        bad("solver_type", "the solver gives both solver_type (the V1 enum) and type; Caffe refuses that",
            ["keep only `type`"])
    elif p.HasField("solver_type"):
        diags.warning("W0501", f"solver_type is the deprecated V1 enum; read as type: \"{spec.type}\"",
                      at(("solver_type",)), help=["`netspec upgrade FILE` prints the current form"])
    if spec.type not in SOLVER_TYPES:
        bad("type", f"unknown solver type '{spec.type}'",
            did_you_mean(spec.type, SOLVER_TYPES) + ["valid: " + ", ".join(SOLVER_TYPES)])
    if spec.type in ("AdaGrad", "RMSProp") and p.momentum != 0:
        bad("momentum", f"{spec.type} does not use momentum (Caffe requires momentum 0), got {p.momentum:.7g}")
    if not 0 <= p.momentum < 1 and spec.type not in ("AdaGrad", "RMSProp"):
        bad("momentum", f"momentum must lie in [0, 1), got {p.momentum:.7g}")
    if p.regularization_type not in ("L1", "L2"):
        bad("regularization_type", f"unknown regularization_type '{p.regularization_type}'",
            ["valid: L1, L2"])
    for name, minimum in (("iter_size", 1), ("average_loss", 1), ("max_iter", 0), ("display", 0),
                          ("snapshot", 0), ("test_interval", 0)):
        if getattr(p, name) < minimum:
            bad(name, f"{name} must be at least {minimum}, got {getattr(p, name)}")
    if p.test_iter and p.test_interval <= 0 and p.HasField("test_interval"):
        bad("test_interval", "test_interval must be positive when test nets are given")
    if p.weight_decay < 0:
        bad("weight_decay", f"weight_decay must be non-negative, got {p.weight_decay:.7g}")
    if p.HasField("primary_loss") and not p.primary_loss:
        bad("primary_loss", "primary_loss is empty")
    mp = p.multiway_param
    if mp.segment_lr_scaling and mp.segment_lr == caffe_pb2.MultiwayParameter.LAMBDA:
        diags.error("E0600", "multiway_param gives segment_lr_scaling: true (LOSS_COUNT) and "
                    "segment_lr: LAMBDA", at(("multiway_param", "segment_lr")),
                    help=["keep one rule: segment_lr: LAMBDA, LOSS_COUNT or NONE"])
