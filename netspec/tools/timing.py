"""``netspec time``: Caffe's ``caffe time`` for a compiled net, per layer and in total.

How each figure is measured (honest about what a generated module allows):

* **Totals** time the whole compiled module: ``module(**inputs)`` for forward,
  one ``autograd.backward`` of the weighted losses (every float output when the
  net has no loss) for backward, averaged over ``iterations`` after ``warmup``.
* **Per layer**, the generated ``forward`` is executed statement by statement
  (each statement is one Caffe layer: ``Generated.line_of_layer``), timing the
  statements of each layer.  For backward, every layer runs on detached copies
  of its bottoms, so ``autograd.grad`` of its tops (with the gradient its
  consumers sent, loss_weight for loss tops) into those bottoms and its own
  parameters walks exactly that layer: Caffe's per-layer ``Backward``.  Layers
  that no gradient reaches show no backward time, as in Caffe.  The per-layer
  sum exceeds the totals slightly (isolation costs one extra tensor per blob).
* CPU times are ``time.perf_counter`` wall clock; with ``gpu=True`` every
  interval is a pair of CUDA events, summed after one synchronize per pass.
* Under a solver, one full scheduled iteration (forward, the schedule's
  backward steps and updates, via ``netspec.solve.executor.Executor``) is timed
  for every BP mode on the same synthetic batch.
"""
from __future__ import annotations

import ast
import time
from dataclasses import dataclass, field

import torch

from ..check import CheckedNet
from ..compile.module import Compiled, compile_net
from ..diagnostics import Diagnostic, NetspecError

GLUE = "(glue)"             # statements that belong to no layer


@dataclass
class LayerTime:
    layer: str
    type: str
    forward_ms: float = 0.0
    backward_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.forward_ms + self.backward_ms


@dataclass
class Timing:
    """Average milliseconds per iteration, as ``caffe time`` reports them."""

    net: str
    device: str
    iterations: int
    layers: list[LayerTime]
    forward_ms: float
    backward_ms: float
    schedules: dict[str, float] = field(default_factory=dict)   # BP mode -> ms per iteration

    @property
    def forward_backward_ms(self) -> float:
        return self.forward_ms + self.backward_ms


# -- clocks ---------------------------------------------------------------------------------

class Clock:
    """Collects intervals; CPU wall clock, or CUDA events resolved at ``flush``."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.pending: list = []

    def start(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def stop(self, key, started, into: dict) -> None:
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            self.pending.append((key, started, e, into))
        else:
            into[key] = into.get(key, 0.0) + (time.perf_counter() - started) * 1000

    def flush(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            for key, a, b, into in self.pending:
                into[key] = into.get(key, 0.0) + a.elapsed_time(b)
            self.pending.clear()


# -- synthetic inputs -----------------------------------------------------------------------

def label_like(net: CheckedNet, blob: str) -> bool:
    """A blob read by a loss/accuracy layer other than as its first bottom: class ids."""
    for node in net.graph.layers():
        for i, b in enumerate(node.bottoms):
            if b.name == blob and i > 0 and (node.is_loss or node.type == "Accuracy"):
                return True
    return False


def synthetic_inputs(compiled: Compiled, device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random data for every input blob (zeros for labels, a valid class id)."""
    net, g = compiled.net, torch.Generator().manual_seed(seed)
    shapes = {str(b): s for b, s in net.shapes.items()} | {b.name: s for b, s in net.shapes.items()
                                                           if b.version == 0}
    out = {}
    for name in compiled.generated.inputs:
        shape = tuple(shapes[name])
        t = torch.zeros(shape) if label_like(net, name) else torch.randn(shape, generator=g)
        out[name] = t.to(device)
    return out


# -- statement-by-statement execution ----------------------------------------------------------

@dataclass
class Statement:
    layer: str
    code: object
    reads: list[str]
    writes: list[str]


def forward_def(compiled: Compiled) -> ast.FunctionDef:
    """The syntax tree of the generated module's ``forward``."""
    tree = ast.parse(compiled.generated.source)
    klass = next(n for n in tree.body
                 if isinstance(n, ast.ClassDef) and n.name == compiled.generated.class_name)
    return next(n for n in klass.body if isinstance(n, ast.FunctionDef) and n.name == "forward")


def statements(compiled: Compiled) -> tuple[list[Statement], list[str], dict]:
    """The forward's statements compiled one by one, its argument names and its globals."""
    gen = compiled.generated
    cls = type(compiled.module)
    fwd = forward_def(compiled)
    args = [a.arg for a in fwd.args.args[1:]] + [a.arg for a in fwd.args.kwonlyargs]
    out = []
    for stmt in fwd.body:
        if isinstance(stmt, ast.Return):
            continue
        names = {n.id: type(n.ctx) for n in ast.walk(stmt) if isinstance(n, ast.Name)}
        code = compile(ast.Module([stmt], []), cls.__netspec_filename__, "exec")
        out.append(Statement(gen.line_of_layer.get(stmt.lineno, GLUE), code,
                             [n for n, c in names.items() if c is ast.Load],
                             [n for n, c in names.items() if c is ast.Store]))
    return out, args, cls.forward.__globals__


def layer_params(compiled: Compiled, layer: str) -> list[torch.Tensor]:
    attr = compiled.generated.attrs.get(layer)
    sub = getattr(compiled.module, attr, None) if attr else None
    if not isinstance(sub, torch.nn.Module):
        return []
    return [p for p in sub.parameters() if p.requires_grad]


def layer_groups(stmts: list[Statement]) -> list[tuple[str, list[Statement]]]:
    """Consecutive statements of one layer, in execution order."""
    groups: list[tuple[str, list[Statement]]] = []
    for s in stmts:
        if groups and groups[-1][0] == s.layer:
            groups[-1][1].append(s)
        else:
            groups.append((s.layer, [s]))
    return groups


def is_float(t) -> bool:
    return isinstance(t, torch.Tensor) and t.is_floating_point()


def isolated_forward(compiled: Compiled, inputs: dict, clock: Clock | None = None,
                     into: dict | None = None) -> list:
    """One forward, layer by layer, each layer on detached copies of its bottoms so that its
    backward can run alone: [(layer, bottoms {var: t}, tops {var: t})] in execution order.
    With ``clock``, each layer's forward time is added to ``into``."""
    stmts, _, glob = statements_cached(compiled)
    env = {"self": compiled.module, **inputs}
    record = []
    for layer, group in layer_groups(stmts):
        writes = [w for s in group for w in s.writes]
        reads = [r for s in group for r in s.reads if r in env and r != "self" and r not in writes]
        bottoms = {r: env[r].detach().requires_grad_(True) if is_float(env[r]) else env[r]
                   for r in dict.fromkeys(reads)}
        env.update(bottoms)
        started = clock.start() if clock else None
        for s in group:
            exec(s.code, glob, env)
        if clock:
            clock.stop(layer, started, into)
        record.append((layer, bottoms, {w: env[w] for w in writes}))
    return record


def isolated_backward(compiled: Compiled, record: list, seeds: dict[str, float],
                      stop=frozenset(), retain_graph: bool = False, clock: Clock | None = None,
                      into: dict | None = None):
    """Each recorded layer's backward, last layer first: yields (layer, {bottom var: diff},
    params, [param diff]); bottom diffs flow on to the layers that produced them.

    ``seeds``: forward variable -> loss weight (the gradient a loss top starts with);
    ``stop``: variables whose gradient is zeroed (``gradient_scope.stop_at``);
    ``retain_graph``: keep the record usable for another backward.  With ``clock``, each
    layer's backward time is added to ``into``."""
    grads: dict[str, torch.Tensor] = {}
    for layer, bottoms, tops in reversed(record):
        outs, gs = [], []
        for var, t in tops.items():
            g = grads.pop(var, None)
            if g is None and var in seeds and is_float(t):
                g = torch.full_like(t, seeds[var])
            if g is not None and var in stop:
                g = torch.zeros_like(g)
            if g is not None and is_float(t) and t.requires_grad:
                outs.append(t)
                gs.append(g)
        wrt = [(n, b) for n, b in bottoms.items() if is_float(b)]
        params = layer_params(compiled, layer)
        if not outs or not (wrt or params):
            continue
        started = clock.start() if clock else None
        got = torch.autograd.grad(outs, [b for _, b in wrt] + params, gs, allow_unused=True,
                                  retain_graph=retain_graph)
        if clock:
            clock.stop(layer, started, into)
        diffs = {}
        for (name, _), g in zip(wrt, got):
            if g is not None:
                grads[name] = grads[name] + g if name in grads else g
                diffs[name] = g
        yield layer, diffs, params, list(got[len(wrt):])


def layer_pass(compiled: Compiled, inputs: dict, clock: Clock, fwd: dict, bwd: dict,
               param_grads: dict | None = None) -> None:
    """One forward and one backward, layer by layer, adding each layer's time
    (``param_grads``: also collect parameter -> gradient, to check the chain rule)."""
    record = isolated_forward(compiled, inputs, clock, fwd)
    for _, _, params, pgrads in isolated_backward(compiled, record, loss_weights(compiled),
                                                  clock=clock, into=bwd):
        if param_grads is not None:
            for p, g in zip(params, pgrads):
                if g is not None:
                    param_grads[p] = param_grads[p] + g if p in param_grads else g


def loss_weights(compiled: Compiled) -> dict[str, float]:
    """Forward variable -> gradient seed: loss_weight for loss tops; for a loss-free net,
    1 for every variable no later statement reads (the net's outputs), like ``objective``."""
    out = {}
    for loss in compiled.net.losses:
        for blob, w in loss.tops:
            name = _var_name(compiled, blob)
            if name:
                out[name] = w
    if compiled.net.losses:
        return out
    stmts, _, _ = statements_cached(compiled)
    read = {r for s in stmts for r in s.reads}
    return {w: 1.0 for s in stmts for w in s.writes if w not in read}


def _var_name(compiled: Compiled, blob) -> str | None:
    """The forward's variable holding ``blob``: the one its producer's statement assigns last."""
    producer = compiled.net.graph.producer.get(blob)
    stmts, _, _ = statements_cached(compiled)
    writes = [w for s in stmts if s.layer == producer for w in s.writes]
    return writes[-1] if writes else None


def statements_cached(compiled: Compiled):
    """``statements(compiled)``, computed once per generated class.  The cache lives on the
    class, which ``load_generated`` makes afresh for every compile, so it dies with the module;
    a module-level dict keyed by ``id(module)`` outlived its module and handed its statements
    to a later net that CPython placed at the same address."""
    cls = type(compiled.module)
    cached = cls.__dict__.get("__netspec_statements__")
    if cached is None:
        cached = statements(compiled)
        cls.__netspec_statements__ = cached
    return cached


# -- whole-module totals -------------------------------------------------------------------

def objective(compiled: Compiled, out: dict) -> torch.Tensor:
    """Weighted loss tops, or the sum of every differentiable output for a loss-free net."""
    net = compiled.net
    terms = [w * out[t.name].sum() for l in net.losses for t, w in l.tops if t.name in out]
    if not terms:
        terms = [v.sum() for v in out.values() if is_float(v) and v.requires_grad]
    return sum(terms) if terms else None


def module_pass(compiled: Compiled, inputs: dict, clock: Clock, into: dict) -> None:
    started = clock.start()
    out = compiled.module(**inputs)
    clock.stop("forward", started, into)
    loss = objective(compiled, out)
    if loss is None:
        return
    started = clock.start()
    loss.backward()
    clock.stop("backward", started, into)
    compiled.module.zero_grad(set_to_none=True)


# -- the command's work ---------------------------------------------------------------------

def pick_device(gpu: bool | str) -> torch.device:
    """CPU, or CUDA when ``gpu`` is true (True, or a device name such as 'cuda:1')."""
    if not gpu or gpu == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise NetspecError([Diagnostic("E0801", "--gpu asks for CUDA but no CUDA device is available",
                                       help=["run without --gpu to time on the CPU"])])
    return torch.device(gpu if isinstance(gpu, str) else "cuda")


def time_net(net: CheckedNet, iterations: int = 50, warmup: int = 5, gpu: bool | str = False,
             solver=None, seed: int = 0) -> Timing:
    """Average per-layer and total forward/backward milliseconds over ``iterations``."""
    device = pick_device(gpu)
    compiled = compile_net(net, seed=seed)
    compiled.module.to(device)
    inputs = synthetic_inputs(compiled, device, seed)
    clock = Clock(device)
    for _ in range(warmup):
        module_pass(compiled, inputs, clock, {})
        layer_pass(compiled, inputs, clock, {}, {})
    clock.flush()
    totals, fwd, bwd = {}, {}, {}
    for _ in range(iterations):
        module_pass(compiled, inputs, clock, totals)
    clock.flush()
    for _ in range(iterations):
        layer_pass(compiled, inputs, clock, fwd, bwd)
    clock.flush()
    n = max(iterations, 1)
    types = {node.name: node.type for node in net.graph.layers()}
    layers = [LayerTime(l, types.get(l, "-"), fwd.get(l, 0.0) / n, bwd.get(l, 0.0) / n)
              for l in dict.fromkeys(list(fwd))]
    timing = Timing(net.name, str(device), iterations, layers,
                    totals.get("forward", 0.0) / n, totals.get("backward", 0.0) / n)
    if solver is not None and net.losses:
        timing.schedules = time_schedules(net, solver, inputs, device, iterations, warmup, seed)
    return timing


def time_schedules(net: CheckedNet, solver, inputs: dict, device, iterations: int, warmup: int,
                   seed: int = 0) -> dict[str, float]:
    """Milliseconds of one full scheduled iteration (forward, backward steps, updates) per BP mode."""
    from ..proto import caffe_pb2
    from ..schedule import MODES, Update, build_schedule
    from ..solve.executor import Executor
    from ..solve.updates import CaffeUpdate
    specs = {f"{n.name}/{i}": (n.impl.lr_mult(i), n.impl.decay_mult(i))
             for n in net.graph.layers() for i in range(len(n.impl.blobs))}
    out = {}
    for mode in MODES:
        param = caffe_pb2.SolverParameter()
        param.CopyFrom(solver)
        param.bp_mode = caffe_pb2.SolverParameter.BPMode.Value(mode)
        schedule = build_schedule(net, param)
        slots = {s.slot for s in schedule.steps if isinstance(s, Update)}
        ex = Executor(net, schedule, {s: CaffeUpdate(param, specs) for s in slots}, seed=seed, device=device)
        batch = {k: v for k, v in inputs.items() if k in ex.main.generated.inputs}
        clock, into = Clock(device), {}
        for it in range(warmup + iterations):
            started = clock.start()
            ex.iteration([batch], it, {})
            clock.stop("iter" if it >= warmup else "warm", started, into)
        clock.flush()
        out[mode] = into.get("iter", 0.0) / max(iterations, 1)
    return out


# -- reports -------------------------------------------------------------------------------

def format_table(t: Timing) -> str:
    """The text report, ``caffe time`` style."""
    # as wide as the longest name and type (a cut name can read as another layer's)
    name_w = max([24] + [len(l.layer) for l in t.layers])
    type_w = max([18] + [len(l.type) for l in t.layers])
    rule = "-" * (name_w + type_w + 34)
    lines = [f"net '{t.net}' on {t.device}, average over {t.iterations} iterations (ms)", "",
             f"{'layer':<{name_w}} {'type':<{type_w}} {'forward':>10} {'backward':>10} {'fwd+bwd':>10}", rule]
    for l in t.layers:
        lines.append(f"{l.layer:<{name_w}} {l.type:<{type_w}} {l.forward_ms:>10.3f} {l.backward_ms:>10.3f} "
                     f"{l.total_ms:>10.3f}")
    lines.append(rule)
    sf, sb = sum(l.forward_ms for l in t.layers), sum(l.backward_ms for l in t.layers)
    lines.append(f"{'sum of layers':<{name_w + type_w + 1}} {sf:>10.3f} {sb:>10.3f} {sf + sb:>10.3f}")
    lines += [f"Average Forward pass: {t.forward_ms:.3f} ms",
              f"Average Backward pass: {t.backward_ms:.3f} ms",
              f"Average Forward-Backward: {t.forward_backward_ms:.3f} ms"]
    if t.schedules:
        lines += ["", "one scheduled training iteration (forward, backward steps, updates):"]
        lines += [f"  {mode:<9} {ms:>10.3f} ms" for mode, ms in t.schedules.items()]
    return "\n".join(lines) + "\n"


def format_markdown(t: Timing) -> str:
    """The same report as a Markdown table (for docs/)."""
    rows = ["| layer | type | forward ms | backward ms | fwd+bwd ms |", "|---|---|---:|---:|---:|"]
    rows += [f"| {l.layer} | {l.type} | {l.forward_ms:.3f} | {l.backward_ms:.3f} | {l.total_ms:.3f} |"
             for l in t.layers]
    sf, sb = sum(l.forward_ms for l in t.layers), sum(l.backward_ms for l in t.layers)
    rows.append(f"| **sum of layers** | | {sf:.3f} | {sb:.3f} | {sf + sb:.3f} |")
    rows.append(f"| **whole module** | | {t.forward_ms:.3f} | {t.backward_ms:.3f} | "
                f"{t.forward_backward_ms:.3f} |")
    if t.schedules:
        rows += ["", "| BP mode | one scheduled iteration (ms) |", "|---|---:|"]
        rows += [f"| {m} | {ms:.3f} |" for m, ms in t.schedules.items()]
    return "\n".join(rows) + "\n"
