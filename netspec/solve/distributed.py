"""Data-parallel training on torch.distributed, for every BP mode.

``torchrun --nproc_per_node N -m netspec train --solver S`` starts N ranks; each
reads its own slice of every global batch (``Feeder(shard=...)``: the prototxt's
``batch_size`` is the *global* batch), computes gradients on it and averages them
with the other ranks before each update, so N ranks train as one process with
the same global batch would (see ``docs/distributed.md``).

* STANDARD and JOINT (one forward, one backward, one update) wrap the training
  module in ``DistributedDataParallel``; the backward runs through
  ``torch.autograd.backward(inputs=...)`` so DDP's reducer sees it.  With ``iter_size``
  the micro-batches before the last run under ``no_sync``: one all-reduce per iteration.
* RELAY and MULTIWAY run several restricted backward passes per forward
  (``torch.autograd.grad``), and MULTIWAY an update between them, which DDP's
  one-backward-per-forward reducer cannot follow.  ``GradReducer`` averages each
  backward's gradients in flat buckets with asynchronous ``all_reduce`` and the
  executor waits for them only before the update that consumes them.  As in DDP,
  each bucket is launched from the parameters' gradient hooks as soon as it is
  full, while the rest of that backward still computes (``BucketFiller``); the
  bucket layout follows the order gradients arrived in on rank 0 during the first
  iteration.  ``overlap=False`` (or ``NETSPEC_DIST_OVERLAP=0``) reduces after each
  backward instead; both give bit-identical averages.  With ``iter_size`` (RELAY) the
  micro-batches before the last keep their sums local: one round per backward step and
  iteration, as under DDP.
* ``--sync-bn`` makes Caffe BatchNorm layers use the global batch statistics.
* Rank 0 logs and writes snapshots (atomically, then every rank passes a
  barrier); test phases and logged losses are averaged over all ranks.
* A collective that fails (a rank died) or waits past the timeout becomes
  diagnostic E0900 instead of a traceback or a hang.
"""
from __future__ import annotations

import gc
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch.nn.parallel import DistributedDataParallel

from ..diagnostics import Diagnostic, NetspecError
from ..runtime.vision import CaffeBatchNorm
from ..schedule import Backward
from .executor import Executor, StepResult
from .solver import Solver, pick_device, read_solver

DDP_MODES = ("STANDARD", "JOINT")        # one forward, one backward: DDP's own reducer fits
DEFAULT_TIMEOUT_S = 300.0
BUCKET_MB = 25.0                         # DDP's default bucket_cap_mb
FIRST_BUCKET_MB = 1.0                    # DDP's first bucket: small, so it starts early


def overlap_default() -> bool:
    """$NETSPEC_DIST_OVERLAP (default on): launch all-reduces from gradient hooks."""
    return os.environ.get("NETSPEC_DIST_OVERLAP", "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job: rank of world, its device and backend."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str
    timeout_s: float

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world


def launched() -> bool:
    """True when torchrun (or anything setting its env vars) started more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def timeout_seconds(flag: float | None) -> float:
    """--dist-timeout, else $NETSPEC_DIST_TIMEOUT, else 300 s."""
    if flag is not None:
        return flag
    return float(os.environ.get("NETSPEC_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))


def init_from_env(solver_path: str, gpu: str | None, timeout_s: float) -> DistContext:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    NCCL on CUDA (rank on cuda:LOCAL_RANK), gloo on the CPU; the device choice is the
    solver's (solver_mode, or --gpu) exactly as for one process.
    """
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    cuda = pick_device(read_solver(solver_path).param, gpu).type == "cuda"
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    backend = "nccl" if cuda else "gloo"
    with failures_as_diagnostics(rank, timeout_s):
        dist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout_s))
    return DistContext(rank, world, local, device, backend, timeout_s)


def shutdown() -> None:
    """Leave the process group; call it once the solvers are out of scope.

    A process group that outlives ``destroy_process_group`` (a DDP wrapper in a reference
    cycle still holds it) is destroyed during interpreter teardown, when gloo's threads can
    no longer take the GIL: the rank then aborts with "terminate called without an active
    exception" after a successful run.  Collecting the cycles first lets the group die here.
    """
    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def failures_as_diagnostics(rank: int, timeout_s: float):
    """Turn a failed or timed-out collective into diagnostic E0900 (no traceback, no hang:
    the process group's timeout bounds every wait)."""
    try:
        yield
    except (dist.DistError, RuntimeError) as exc:
        if not _is_comm_error(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NetspecError([Diagnostic(
            "E0900", f"rank {rank}: lost contact with the other ranks (one died, hung or "
            f"was stopped; timeout {timeout_s:g} s): {first}",
            help=["torchrun's report names the rank that failed first",
                  "restart with `netspec train ... --auto-resume` (or torchrun --max-restarts) "
                  "to continue from the last snapshot"])]) from None


def _is_comm_error(exc: BaseException) -> bool:
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return any(s in text for s in ("gloo", "nccl", "connection", "timed out", "timeout", "peer"))


# -- gradient reduction --------------------------------------------------------------
@dataclass
class _Bucket:
    keys: list
    shapes: list
    flat: torch.Tensor
    work: object


class GradReducer:
    """Averages gradient dicts over the ranks in flat buckets with asynchronous all_reduce.

    ``launch`` starts the collectives and returns at once; ``wait`` blocks until they
    finish and returns the averaged gradients.  ``waited_s`` totals the time spent
    blocked in ``wait`` (communication not hidden behind computation).
    """

    def __init__(self, world: int, bucket_mb: float = BUCKET_MB):
        self.world, self.bucket_bytes = world, int(bucket_mb * 2**20)
        self.waited_s = 0.0
        self.launched = 0      # buckets all-reduced so far
        self.early = 0         # ... of which from a gradient hook, before that backward's last gradient

    def plan(self, order: list, like: dict) -> list[list]:
        """Bucket ``order`` (keys, in the order gradients arrive) as DDP does: the first
        bucket at most ``FIRST_BUCKET_MB``, the others ``bucket_mb``, one dtype each."""
        cap = min(self.bucket_bytes, int(FIRST_BUCKET_MB * 2**20))
        buckets, group, size = [], [], 0
        for key in order:
            t = like[key]
            if group and (size + t.numel() * t.element_size() > cap or t.dtype != like[group[0]].dtype):
                buckets.append(group)
                group, size, cap = [], 0, self.bucket_bytes
            group.append(key)
            size += t.numel() * t.element_size()
        return buckets + [group] if group else buckets

    def launch(self, grads: dict) -> list[_Bucket]:
        buckets, group, size = [], [], 0
        for key, g in grads.items():
            if group and (size + g.numel() * g.element_size() > self.bucket_bytes
                          or g.dtype != grads[group[0]].dtype):
                buckets.append(self._start(group, grads))
                group, size = [], 0
            group.append(key)
            size += g.numel() * g.element_size()
        if group:
            buckets.append(self._start(group, grads))
        return buckets

    def _start(self, keys: list, grads: dict) -> _Bucket:
        flat = torch.cat([grads[k].reshape(-1) for k in keys])
        return self.start(keys, [grads[k].shape for k in keys], flat)

    def start(self, keys: list, shapes: list, flat: torch.Tensor) -> _Bucket:
        """All-reduce ``flat`` (the bucket's local gradient sums) / world, asynchronously."""
        self.launched += 1
        flat.div_(self.world)
        return _Bucket(keys, shapes, flat, dist.all_reduce(flat, async_op=True))

    def wait(self, buckets: list[_Bucket]) -> dict:
        start = time.perf_counter()
        out = {}
        for b in buckets:
            b.work.wait()
            for key, shape, part in zip(b.keys, b.shapes, b.flat.split([s.numel() for s in b.shapes])):
                out[key] = part.view(shape)
        self.waited_s += time.perf_counter() - start
        return out


class BucketFiller:
    """One restricted backward's buckets, each launched as soon as its last gradient
    arrives (DDP's bucket-ready rule: buckets start in plan order, so every rank issues
    the same collectives in the same order).

    ``ready`` is called from the parameters' gradient hooks during the backward with the
    gradient autograd hands back; head parameters are divided by gamma here exactly as
    ``Executor._backward`` divides them, and a full bucket is concatenated and divided by
    W as ``GradReducer.launch`` does, so it holds the very values the non-overlapped path
    would send.  A hook only stores a reference: the copy is one ``cat`` per bucket.
    """

    def __init__(self, reducer: GradReducer, plan: list[list], head: set, gamma: float,
                 held: dict | None = None):
        self.reducer, self.plan, self.head, self.gamma = reducer, plan, head, gamma
        self.held = held or {}       # iter_size: the earlier micro-batches' sums, added first
        self.bucket_of = {k: b for b, keys in enumerate(plan) for k in keys}
        self.left = [len(keys) for keys in plan]
        self.got: dict = {}
        self.buckets: list[_Bucket] = []

    def ready(self, key, grad: torch.Tensor) -> None:
        """``key``'s gradient, as autograd produced it (called from its tensor hook)."""
        if key in self.bucket_of:
            g = grad / self.gamma if key in self.head else grad
            self._put(key, self.held[key] + g if key in self.held else g, early=True)

    def finish(self, local: dict) -> list[_Bucket]:
        """After the backward: the gradients no hook delivered (parameters the loss does not
        reach: zeros in ``local``, as ``Executor._backward`` made them) complete their
        buckets, and every bucket not yet launched is."""
        for keys in self.plan:
            for key in keys:
                if key not in self.got:
                    self._put(key, local[key], early=False)
        return self.buckets

    def _put(self, key, g: torch.Tensor, early: bool) -> None:
        if key in self.got:
            raise RuntimeError(f"the gradient of {key} arrived twice in one backward")
        self.got[key] = g
        self.left[self.bucket_of[key]] -= 1
        while len(self.buckets) < len(self.plan) and not self.left[len(self.buckets)]:
            keys = self.plan[len(self.buckets)]
            flat = torch.cat([self.got[k].reshape(-1) for k in keys])
            self.buckets.append(self.reducer.start(keys, [self.got[k].shape for k in keys], flat))
            self.reducer.early += early and any(self.left[len(self.buckets):])   # more to come


# -- SyncBatchNorm for Caffe's BatchNorm ---------------------------------------------
class SyncCaffeBatchNorm(CaffeBatchNorm):
    """Caffe BatchNorm whose batch statistics are those of the global batch.

    Two differentiable all-reduces (sum of x, then sum of squared deviations) give the
    same mean and variance as one process with the whole batch; the running statistics
    then update identically on every rank, once per forward.
    """

    def forward(self, x, weight=None, bias=None):
        """``weight``/``bias``: a following Scale layer's, when the compiler fuses the pair."""
        if self.use_global_stats or not dist.is_initialized() or _local_statistics:
            return super().forward(x, weight, bias)
        return self._elementwise(x, weight, bias)

    def _batch_moments(self, x, dims, shape):
        m = x.numel() // (x.shape[1] if x.dim() > 1 else 1) * dist.get_world_size()
        mean = dist_fn.all_reduce(x.sum(dims)) / m
        var = dist_fn.all_reduce(((x - mean.view(shape)) ** 2).sum(dims)) / m
        return mean, var, m


_local_statistics = False


@contextmanager
def local_batch_statistics():
    """Synchronised BatchNorm layers use this rank's own batch statistics inside the block: the
    non-finite guard's replay stops at its first finding, which may come sooner on one rank than
    on another, so a collective inside it could wait for a rank that has already stopped."""
    global _local_statistics
    before, _local_statistics = _local_statistics, True
    try:
        yield
    finally:
        _local_statistics = before


def convert_sync_batchnorm(module: torch.nn.Module) -> int:
    """Make every Caffe BatchNorm of ``module`` synchronised; returns how many.

    The generated module inlines its own copy of the runtime class, so layers are
    matched by class name, and converted by changing their class: their buffers stay
    the very tensors the test nets and forward-only sub-modules share.
    """
    count = 0
    for m in module.modules():
        if type(m).__name__ == "CaffeBatchNorm" and not isinstance(m, SyncCaffeBatchNorm):
            m.__class__ = SyncCaffeBatchNorm
            count += 1
    return count


# -- the executor ------------------------------------------------------------------------
class DistributedExecutor(Executor):
    """The schedule executor with gradients averaged over the ranks before every update.

    ``overlap`` (default ``$NETSPEC_DIST_OVERLAP``, on): RELAY/MULTIWAY launch each bucket's
    all-reduce from the gradient hooks while the restricted backward runs; off, after it.
    """

    def __init__(self, ctx: DistContext, *args, sync_bn: bool = False, bucket_mb: float = BUCKET_MB,
                 overlap: bool | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ctx, self.sync_bn, self.bucket_mb = ctx, sync_bn, bucket_mb
        if sync_bn:
            for compiled in self.modules.values():
                convert_sync_batchnorm(compiled.module)
        self.ddp = self._wrap_ddp() if self.schedule.mode in DDP_MODES else None
        if self.ddp is None:
            self._broadcast_state(self.main.module, parameters=True)
        self.reducer = GradReducer(ctx.world, bucket_mb)
        self.pending: list = []
        self._held: dict = {}        # backward step -> the earlier micro-batches' local gradient sums
        self.overlap = (overlap_default() if overlap is None else overlap) and self.ddp is None
        self.plans: dict = {}                 # backward step -> its bucket plan (keys per bucket)
        self._filling: BucketFiller | None = None
        self._arrivals: list | None = None
        if self.overlap:
            for key, p in self.params.items():
                if p.requires_grad:
                    p.register_hook(partial(self._grad_ready, key))

    def _grad_ready(self, key, grad) -> None:
        """Tensor hook: fires for each parameter as autograd produces its gradient, under
        ``torch.autograd.grad`` too (the hook runs before the gradient is captured)."""
        if self._filling is not None:
            self._filling.ready(key, grad)
        elif self._arrivals is not None:
            self._arrivals.append(key)

    def _wrap_ddp(self) -> DistributedDataParallel:
        module = self.main.module
        trained = {id(self.params[k]) for s in self.schedule.steps if isinstance(s, Backward)
                   for k in s.params}
        unused = any(p.requires_grad and id(p) not in trained for p in module.parameters())
        ddp = DistributedDataParallel(module, device_ids=[self.ctx.device.index] if self.ctx.device.type
                                      == "cuda" else None, find_unused_parameters=unused,
                                      forward_sync_buffers=not self.sync_bn, bucket_cap_mb=self.bucket_mb)
        ddp.INPUTS = module.INPUTS         # run_module picks the input blobs by these names
        return ddp

    def _broadcast_state(self, module, parameters: bool) -> None:
        """Rank 0's parameters (once) and buffers (every forward, as DDP does without
        SyncBN): the ranks start equal and their BatchNorm statistics stay rank 0's."""
        tensors = [p.data for p in module.parameters()] if parameters else []
        tensors += [b for b in module.buffers()]
        if tensors:
            flat = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])
            dist.broadcast(flat, 0)
            with torch.no_grad():
                for t, part in zip(tensors, flat.split([t.numel() for t in tensors])):
                    t.copy_(part.view(t.shape))

    _micro_left = 1            # forwards left in this iteration (iter_size micro-batches)
    _accumulating = False      # this micro-batch's gradients stay local (DDP's no_sync)

    def forward(self, module, batch: dict) -> dict:
        # iter_size: one all-reduce per iteration.  Micro-batches before the last keep their
        # gradients local (under DDP: no_sync, in .grad; RELAY: ``_held`` per backward step) and
        # the last one's backward reduces the accumulated sum, as DDP's gradient accumulation
        # does.  Only single-update schedules take iter_size > 1, each one forward per batch.
        self._accumulating = self._micro_left > 1
        self._micro_left -= 1
        if self.ddp is not None and module is self.main.module:
            if self._accumulating:
                with self.ddp.no_sync():
                    return super().forward(self.ddp, batch)
            module = self.ddp
        elif not self.sync_bn:
            self._broadcast_state(module, parameters=False)
        return super().forward(module, batch)

    def _gradients(self, objective, params, retain: bool) -> tuple:
        if self.ddp is None:
            return super()._gradients(objective, params, retain)
        # DDP's reducer hooks the parameters' gradient accumulators, which only backward() runs.
        torch.autograd.backward(objective, inputs=params, retain_graph=retain)
        if self._accumulating:       # kept in .grad for the last micro-batch's all-reduce
            return tuple(None for _ in params)
        got = tuple(p.grad for p in params)
        for p in params:
            p.grad = None
        return got

    def _backward(self, step, out, grads, weights, retain: bool) -> None:
        if self.ddp is not None:
            return super()._backward(step, out, grads, weights, retain)
        key = (step.losses, step.params)
        if self._accumulating:             # an early micro-batch: sum locally, reduce later
            return super()._backward(step, out, self._held.setdefault(key, {}), weights, retain)
        local = self._held.pop(key, {})
        plan = self.plans.get(key) if self.overlap else None
        if plan is None:          # reduce after the backward (and, overlapping, learn the order)
            self._arrivals = [] if self.overlap else None
            try:
                super()._backward(step, out, local, weights, retain)
            finally:
                arrived, self._arrivals = self._arrivals, None
            if self.overlap:
                self.plans[key] = self._agree_plan(step, arrived)
            self.pending.append(self.reducer.launch(local))    # in flight during the next backward
            return
        head, gamma = self._head_scaling(step, weights)
        self._filling = BucketFiller(self.reducer, plan, head, gamma, held=dict(local))
        try:
            super()._backward(step, out, local, weights, retain)
        finally:
            filling, self._filling = self._filling, None
        self.pending.append(filling.finish(local))

    def _agree_plan(self, step, arrived: list) -> list[list]:
        """Buckets in rank 0's arrival order (DDP rebuilds its buckets the same way after the
        first iteration), so every rank launches the same collectives in the same order;
        parameters no gradient reached go last."""
        order = list(dict.fromkeys(k for k in arrived if k in step.params))
        order += [k for k in step.params if k not in order]
        box = [order]
        dist.broadcast_object_list(box, 0)
        return self.reducer.plan(box[0], {k: self.params[k] for k in step.params})

    def _update(self, step, grads, it: int, repeat: int) -> None:
        for buckets in self.pending:
            for key, g in self.reducer.wait(buckets).items():
                grads[key] = grads[key] + g if key in grads else g
        self.pending = []
        super()._update(step, grads, it, repeat)

    def iteration(self, batches, it: int, weights) -> StepResult:
        """One iteration; the reported losses are averaged over the ranks (the global batch's)."""
        self._micro_left, self._held = len(batches), {}
        result = super().iteration(batches, it, weights)
        names = sorted(result.losses)
        values = torch.tensor([result.losses[n] for n in names], dtype=torch.float64,
                              device=self.ctx.device)
        dist.all_reduce(values)
        return StepResult({n: float(v) / self.ctx.world for n, v in zip(names, values.tolist())},
                          result.outputs)


# -- the solver ----------------------------------------------------------------------
class DistributedSolver(Solver):
    """``Solver`` on one rank of a data-parallel job (``ctx`` from ``init_from_env``)."""

    def __init__(self, ctx: DistContext, path, *, sync_bn: bool = False, bucket_mb: float = BUCKET_MB,
                 overlap: bool | None = None, log=None, jsonl=None, **kwargs):
        """``overlap``: see ``DistributedExecutor``; ``kwargs`` are ``Solver``'s (``dtype`` ...)."""
        self.ctx = ctx
        self.shard = ctx.shard
        self.executor_class = partial(DistributedExecutor, ctx, sync_bn=sync_bn, bucket_mb=bucket_mb,
                                      overlap=overlap)
        quiet = ctx.rank != 0
        device = str(ctx.device.index) if ctx.device.type == "cuda" else "cpu"
        super().__init__(path, device=device, log=(lambda _: None) if quiet else log,
                         jsonl=None if quiet else jsonl, **kwargs)
        self._check_batches()

    def _choose_seed(self, p) -> int:
        """Rank 0's seed for everyone: equal data order (disjoint shards) and equal fillers."""
        box = [super()._choose_seed(p)]
        dist.broadcast_object_list(box, 0)
        return box[0]

    def _check_batches(self) -> None:
        if self.feed is None:
            return
        for layer, size in self.feed.batch_sizes().items():
            if size % self.ctx.world:
                raise NetspecError([Diagnostic(
                    "E0600", f"data layer '{layer}' has batch_size {size}, which {self.ctx.world} "
                    "ranks cannot share evenly (batch_size is the global batch)",
                    help=[f"use a batch_size divisible by {self.ctx.world}, or another --nproc_per_node"])])

    def _locate(self, batch: dict, steps: list, factors: dict):
        """Every rank replays its own slice (local BatchNorm statistics: no collective inside the
        replay), then the ranks agree on the lowest rank's finding, naming that rank: a NaN in one
        rank's data reaches every rank through the averaged gradients."""
        with local_batch_statistics():
            mine = super()._locate(batch, steps, factors)
        found = [None] * self.ctx.world
        dist.all_gather_object(found, mine)
        rank = next((r for r, f in enumerate(found) if f is not None), None)
        if rank is None or self.ctx.world == 1:
            return found[0]
        return replace(found[rank], what=f"{found[rank].what} on rank {rank}'s slice of the batch")

    def _global_means(self, means: dict, feed) -> dict:
        """Each rank averaged its slice of every test batch; weight by slice size and sum."""
        share = min(feed.shard_fractions().values()) if feed is not None else 1.0 / self.ctx.world
        names = sorted(means)
        values = torch.tensor([means[n] * share for n in names], dtype=torch.float64,
                              device=self.ctx.device)
        dist.all_reduce(values)
        return dict(zip(names, values.tolist()))

    def snapshot(self, path=None) -> Path:
        """Rank 0 writes (atomically); every rank waits until the file is in place."""
        path = super().snapshot(path) if self.ctx.rank == 0 else Path(path or self.snapshot_path())
        dist.barrier()
        return path

    def latest_snapshot(self) -> Path | None:
        """The newest snapshot of snapshot_prefix, as rank 0 sees it (every rank agrees)."""
        box = [super().latest_snapshot() if self.ctx.rank == 0 else None]
        dist.broadcast_object_list(box, 0)
        return box[0]


# -- the command line ------------------------------------------------------------------
def gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def restarted() -> bool:
    """True in a job torchrun's elastic agent restarted after a failure (--max-restarts)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def run_rank(args, train) -> int:
    """``netspec train`` on one torchrun rank: join the job, build the solver, ``train(args,
    solver)``; a failed collective ends this rank with E0900 instead of hanging."""
    timeout = timeout_seconds(args.dist_timeout)
    ctx = init_from_env(args.solver, args.gpu, timeout)
    with failures_as_diagnostics(ctx.rank, timeout):
        code = train(args, _rank_solver(ctx, args))
    shutdown()        # only after success: a broken group may not tear down cleanly
    return code


def _rank_solver(ctx: DistContext, args) -> DistributedSolver:
    dtype = getattr(torch, args.dtype) if getattr(args, "dtype", None) else None   # --dtype float64
    return DistributedSolver(ctx, args.solver, sync_bn=args.sync_bn, bucket_mb=args.bucket_mb,
                             jsonl=args.log, input_shapes=dict(args.input_shape), dtype=dtype,
                             flush_denormal=True, compile=getattr(args, "compile", None))


def spawn_all_gpus(argv: list[str]) -> int:
    """``netspec train --gpu all`` outside torchrun with several GPUs: one rank per GPU,
    through torchrun's own launcher (elastic agent, standalone rendezvous)."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    n = torch.cuda.device_count()
    try:
        torchrun.run(torchrun.parse_args(["--standalone", f"--nproc_per_node={n}", "-m", "netspec", *argv]))
    except ChildFailedError as e:       # each rank printed its own diagnostic already
        raise NetspecError([Diagnostic("E0900", f"{len(e.failures)} of {n} ranks failed "
                                       f"(first: rank {min(e.failures)})")]) from None
    return 0
