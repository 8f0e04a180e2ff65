"""Compiled training (``compile: true``, issue 14) against eager, on the schedule oracles' nets.

The conv net of ``test_schedules`` (CONV: the per-layer VJP oracle of MW-BP) and its RELAY
net (RELAY3: stop_at, max_depth, a skip connection, propagate_down: false) train three
iterations eager and compiled from one seed on the same float32 batches; the parameter
updates must agree to 1e-6 relative.  The stale-weights mutant (a forward that reads copies
of the weights, so the backward passes over its retained graph use the weights from before
the updates between them: what inductor's layout optimization did to MULTIWAY) must fail that same check, compiled and
eager, so the check would catch a compiled backward that sees pre-update weights.

torch.compile is slow on a shared CPU: the nets are tiny, every MULTIWAY variant reuses the
same three segment graphs (inductor's FX graph cache), and the whole file runs in well
under a minute once that cache is warm.
"""
import pytest
import torch

from netspec.proto import caffe_pb2
from netspec.schedule import Backward, Update, build_schedule
from torch._dynamo.utils import counters

from netspec.solve.compiled import compiled_executor_class
from netspec.solve.executor import Executor
from netspec.solve.updates import CaffeUpdate

from test_compile import checked
from test_schedules import CONV, RELAY3, solver

TOL = 1e-6
Compiled = compiled_executor_class(Executor)


class CopiedWeights(torch.nn.Module):
    """The mutant: a forward that reads copies of the weights (as inductor's layout
    optimization did), so the backward passes over its graph use the weights as they were
    before the updates between them, while the gradients still reach the parameters."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        copies = {k: p.clone() for k, p in self.inner.named_parameters()}
        return torch.func.functional_call(self.inner, copies, args, kwargs)


def mutate(ex):
    """Give an executor the mutant: every compiled segment, or every eager module."""
    if hasattr(ex, "runners"):
        for runner in ex.runners.values():
            for i, part in enumerate(runner.parts):
                runner.parts[i] = CopiedWeights(part)
    else:
        for compiled in ex.modules.values():
            compiled.module = CopiedWeights(compiled.module)
            compiled.module.INPUTS = compiled.module.inner.INPUTS
    return ex


def make(cls, text: str, param, device: str = "cpu", dtype=torch.float32, channels_last: bool = False):
    net = checked(text)
    sched = build_schedule(net, param)
    specs = {f"{n.name}/{i}": (n.impl.lr_mult(i), n.impl.decay_mult(i))
             for n in net.graph.layers() for i in range(len(n.impl.blobs))}
    slots = {s.slot for s in sched.steps if isinstance(s, Update)}
    return cls(net, sched, {s: CaffeUpdate(param, specs) for s in slots}, seed=3, dtype=dtype,
               device=device, channels_last=channels_last, scale_head_gradients=param.multiway_param.scale_head_gradients)


def data(n: int = 3):
    g = torch.Generator().manual_seed(1)
    return [{"data": torch.randn(4, 2, 6, 6, generator=g),
             "label": torch.randint(0, 3, (4,), generator=g).float()} for _ in range(n)]


def update_diff(ex, ref, start) -> float:
    """||du_ex - du_ref|| / ||du_ref|| over every parameter (du: change from ``start``)."""
    num = sum(float(((ex.params[k] - ref.params[k]).detach() ** 2).sum()) for k in start)
    den = sum(float(((ref.params[k].detach() - start[k]) ** 2).sum()) for k in start)
    return (num / den) ** 0.5


def train_pair(text, param, cls=Compiled, mutant=False):
    eager, other = make(Executor, text, param), make(cls, text, param)
    if mutant:
        mutate(other)
    start = {k: v.detach().clone() for k, v in eager.params.items()}
    for k, v in other.params.items():
        assert torch.equal(v.detach(), start[k]), k           # one seed, one start
    for it, b in enumerate(data()):
        eager.iteration([b], it, {})
        other.iteration([b], it, {})
    return eager, other, start


MW = {"MW-BP": {}, "reverse": {"order": caffe_pb2.MultiwayParameter.DEEP_TO_SHALLOW},
      "naive": {"shared_forward": False},
      "naive reverse": {"shared_forward": False, "order": caffe_pb2.MultiwayParameter.DEEP_TO_SHALLOW}}


@pytest.mark.parametrize("variant", list(MW))
def test_compiled_multiway_matches_eager(variant):
    graphs = counters["stats"]["unique_graphs"]
    eager, comp, start = train_pair(CONV, solver("MULTIWAY", **MW[variant]))
    # cut where the exit meets the trunk: each loss's backward runs only its own segments
    assert [s.signature[0] for s in comp.segments] == [{"loss", "loss_aux"}, {"loss_aux"}, {"loss"}]
    assert counters["stats"]["unique_graphs"] - graphs == len(comp.segments)    # really compiled, whole
    assert update_diff(comp, eager, start) <= TOL


def test_compiled_relay_matches_eager():
    eager, comp, start = train_pair(RELAY3, solver("RELAY"))
    # every version of the stop_at blob c2 sits between two segments, where the gate hooks act
    for seg in comp.segments:
        made = set()
        for node in seg.layers:
            assert not any(b.name == "c2" and b in made for b in node.bottoms), seg.names
            made |= set(node.tops)
    assert len(comp.segments) > len({s.signature for s in comp.segments})     # c2 forced extra cuts
    assert update_diff(comp, eager, start) <= TOL


def test_a_backward_that_sees_pre_update_weights_fails_the_check():
    for cls in (Compiled, Executor):
        eager, mutant, start = train_pair(CONV, solver("MULTIWAY"), cls, mutant=True)
        assert update_diff(mutant, eager, start) > 100 * TOL, cls.__name__      # measured: 7e-3


def test_compiled_channels_last_multiway_is_exact_in_float64():
    """channels_last stores the weights themselves in that layout (live tensors, no copies in
    the graph): compiled MW-BP then agrees with eager to float64 rounding."""
    param = solver("MULTIWAY")
    eager, comp = (make(cls, CONV, param, dtype=torch.float64, channels_last=True) for cls in (Executor, Compiled))
    assert comp.params["conv1/0"].is_contiguous(memory_format=torch.channels_last)
    start = {k: v.detach().clone() for k, v in eager.params.items()}
    for it, b in enumerate(data()):
        b = {k: v.double() for k, v in b.items()}
        eager.iteration([b], it, {})
        comp.iteration([b], it, {})
    assert update_diff(comp, eager, start) <= 1e-12          # measured: 2e-16


def test_one_backward_compiles_as_one_segment():
    # JOINT (as STANDARD): one backward trains every layer, so nothing is cut
    eager, comp, start = train_pair(CONV, solver("JOINT"))
    assert sum(isinstance(s, Backward) for s in comp.schedule.steps) == 1
    assert len(comp.segments) == 1
    assert update_diff(comp, eager, start) <= TOL


@pytest.mark.cuda
def test_compiled_multiway_matches_eager_on_cuda():
    """The same check on the GPU (TF32 off, so float32 means float32)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        param = solver("MULTIWAY")
        eager, comp = make(Executor, CONV, param, "cuda"), make(Compiled, CONV, param, "cuda")
        start = {k: v.detach().clone() for k, v in eager.params.items()}
        for it, b in enumerate(data()):
            b = {k: v.cuda() for k, v in b.items()}
            eager.iteration([b], it, {})
            comp.iteration([b], it, {})
        assert update_diff(comp, eager, start) <= TOL
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def test_compile_flag_and_solver_field_select_the_compiled_executor(tmp_path, capsys):
    """``compile: true`` and ``netspec train --compile`` build the segmented executor (torch.compile
    is lazy: nothing compiles until an iteration runs, so max_iter 0 costs no compilation)."""
    from netspec.cli.main import main
    from netspec.solve.compiled import CompiledSegments
    from netspec.solve.solver import Solver
    from test_solver import write_solver
    path = write_solver(tmp_path, "MULTIWAY", max_iter=0)
    assert not isinstance(Solver(path, log=lambda _: None).executor, CompiledSegments)      # eager default
    assert isinstance(Solver(write_solver(tmp_path, "RELAY", "compile: true\n", max_iter=0),
                             log=lambda _: None).executor, CompiledSegments)
    assert main(["train", "--solver", str(path), "--compile"]) == 0
    out = capsys.readouterr().out
    # the digits net's 3 exits cut its trunk in 4: 3 trunk segments, 3 exit heads, and the
    # last trunk segment with the main head (the main loss alone trains both)
    assert "torch.compile: 7 segment(s)" in out and "backward of: exit1_loss" in out
