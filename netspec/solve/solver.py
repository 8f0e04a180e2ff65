"""Caffe's Solver on netspec: read a solver file, execute its backward schedule, test, snapshot.

``Solver(path).step(n)`` is the notebook API; ``netspec train`` drives it from the CLI.
"""
from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..check import CheckedNet, check_net, load
from ..check.solver import SolverSpec, load_solver
from ..compile.module import Compiled, compile_net, run_module
from ..diagnostics import Diagnostic, Diagnostics, NetspecError
from ..fileio import atomic_writer
from ..interop.weights import SNAPSHOT_VERSION, load_weights, read_snapshot  # noqa: F401  (API)
from ..proto import caffe_pb2
from ..schedule import Update, build_schedule
from .compiled import executor_class
from .executor import Executor, share_parameters
from .guard import (CONTINUE, SKIP, Guard, GuardedUpdate, NonFinite, backward_steps, debug_lines, locate,
                    nonfinite_error)
from .loss_weights import LossWeights
from .lr_policy import learning_rate
from .updates import CaffeUpdate


def read_solver(path: str | Path, input_shapes: dict | None = None) -> SolverSpec:
    """Parse and check a solver file and the nets it names (errors raise NetspecError)."""
    diags = Diagnostics()
    kind, obj = load(path, diags)
    if kind != "solver":
        diags.error("E0600", f"'{path}' is a net, not a solver file", None,
                    help=["netspec train --solver SOLVER.prototxt; the solver names the net"])
    diags.check()
    spec = load_solver(obj[0], obj[1], str(path), diags, lambda p, d: load(p, d))
    diags.check()
    return spec


def pick_device(param, override: str | None = None) -> torch.device:
    """CPU or CUDA from solver_mode/device_id (``override``: 'cpu', or a GPU id from --gpu)."""
    if override is not None:
        want_gpu, index = override != "cpu", (0 if override in ("all", "cpu") else int(override))
    else:
        want_gpu, index = param.solver_mode == caffe_pb2.SolverParameter.GPU, param.device_id
    if not want_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if override is not None:                    # --gpu N said so, not the solver file
            raise NetspecError([Diagnostic("E0600", f"--gpu {override} asks for CUDA but no CUDA device "
                                           "is available", help=["run on the CPU with --gpu cpu"])])
        raise NetspecError([Diagnostic(
            "E0600", "the solver asks for the GPU (solver_mode: GPU, Caffe's default) but no CUDA "
            "device is available", help=["set `solver_mode: CPU` in the solver file, or pass --gpu cpu"])])
    return torch.device(f"cuda:{index}")


AMP = {"": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_dtype(param, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` ("", "bf16" or "fp16"; fp16 only on CUDA).

    Autocast runs the forward in reduced precision; gradients and updates stay float32.
    fp16 is used without loss scaling, so prefer bf16.
    """
    if param.amp not in AMP:
        raise NetspecError([Diagnostic("E0600", f"unknown amp setting '{param.amp}'",
                                       help=['use amp: "bf16" or amp: "fp16" (CUDA only)'])])
    if param.amp == "fp16" and device.type != "cuda":
        raise NetspecError([Diagnostic("E0600", 'amp: "fp16" needs a CUDA device',
                                       help=['use amp: "bf16" on the CPU'])])
    return AMP[param.amp]


class Solver:
    """Trains the net a solver file names with the solver's BP mode, update rule and schedule."""

    def __init__(self, path: str | Path, *, device: str | None = None, input_shapes: dict | None = None,
                 log=None, jsonl: str | Path | None = None, num_workers: int | None = None,
                 flush_denormal: bool = True, dtype: torch.dtype | None = None,
                 compile: bool | None = None):
        """``dtype`` (e.g. ``torch.float64``) trains in that precision: weights, optimizer
        state and every batch; ``device`` overrides the solver's solver_mode ('cpu' or a
        GPU id); ``log`` receives each log line (default: print); ``compile`` overrides the
        solver file's ``compile`` (torch.compile per segment, ``netspec.solve.compiled``)."""
        self.spec = read_solver(path, input_shapes)
        self.param = p = self.spec.param
        self.seed = self._choose_seed(p)
        _seed_everything(self.seed)
        self.flush_denormal = flush_denormal
        self.device = pick_device(p, device)
        self.log = log or console_log
        self.jsonl = open(jsonl, "a") if jsonl else None
        self.dtype = dtype
        self.guard = Guard(p.nonfinite, p.debug_info, lambda line: self.log(line))
        self.net = check_net(self.spec.train, self.spec.train_state, input_shapes)
        self.schedule = build_schedule(self.net, p)
        if compile is not None:
            p.compile = compile
        self.executor = executor_class(self.executor_class, p.compile)(
                                 self.net, self.schedule, self._updaters(), seed=self.seed,
                                 device=self.device, dtype=dtype,
                                 scale_head_gradients=p.multiway_param.scale_head_gradients,
                                 amp=amp_dtype(p, self.device), channels_last=p.channels_last)
        self._watch_losses()
        self.tests = [self._test_net(src, state, input_shapes) for src, state in self.spec.tests]
        self._workers = num_workers
        self.feed = self._feeder(self.net, caffe_pb2.TRAIN, self.seed)
        self.weights = LossWeights(p, self.net, self.schedule.primary, self._iters_per_epoch())
        self.iter = 0
        self.smoothed: deque = deque(maxlen=max(1, p.average_loss))
        self.history: list[dict] = []
        self.listeners: list = []         # called with each iteration's record (progress bars)
        for w in p.weights:                 # Caffe's Solver::Init copies these by layer name
            self.copy_weights(_resolve_weights(w, self.spec.path))

    # -- construction -----------------------------------------------------------------
    executor_class = Executor       # netspec.solve.distributed swaps in its data-parallel executor
    shard = (0, 1)                  # (rank, world): this process's slice of every global batch

    def _choose_seed(self, p) -> int:
        return p.random_seed if p.random_seed >= 0 else random.randrange(2**31)

    def _specs(self) -> dict[str, tuple[float, float]]:
        return {f"{n.name}/{i}": (n.impl.lr_mult(i), n.impl.decay_mult(i))
                for n in self.net.graph.layers() for i in range(len(n.impl.blobs))}

    def _updaters(self) -> dict[str, CaffeUpdate]:
        """One update rule per state slot; MULTIWAY's segment_lr: LOSS_COUNT divides lr_mult here."""
        specs = self._specs()
        slots = [s for s in self.schedule.steps if isinstance(s, Update)]
        if self.schedule.segment_lr != "LOSS_COUNT":     # LAMBDA: the executor, per update
            return {s.slot: GuardedUpdate(CaffeUpdate(self.param, specs), s.slot, self.guard) for s in slots}
        owners = {}
        for s in slots:
            for key in s.params:
                owners[key] = owners.get(key, 0) + 1
        return {s.slot: GuardedUpdate(CaffeUpdate(self.param, {k: (lr / owners.get(k, 1), d)
                                                               for k, (lr, d) in specs.items()}),
                                      s.slot, self.guard)
                for s in slots}

    def _watch_losses(self) -> None:
        """Forward hooks that stop an iteration at a non-finite loss, before any backward.
        Data-parallel ranks rely on the (all-reduced, so agreed) gradient check instead:
        one rank leaving an iteration alone would leave the others waiting."""
        if self.param.nonfinite == CONTINUE or self.shard[1] > 1:
            return
        tops = {t.name for l in self.net.losses for t, _ in l.tops}
        for compiled in self.executor.modules.values():
            self.guard.watch(compiled.module, tops)

    def _test_net(self, src, state, input_shapes) -> tuple[CheckedNet, Compiled]:
        net = check_net(src, state, input_shapes)
        compiled = compile_net(net, seed=self.seed, dtype=self.dtype)
        compiled.module.to(self.device)
        share_parameters(self.executor.main, compiled)
        return net, compiled

    def _feeder(self, net, phase, seed):
        if not any(n.impl.is_data and not n.impl.generates and n.type != "Input" for n in net.graph.layers()):
            return None
        from ..data import Feeder
        return Feeder(net, phase, seed, num_workers=self._workers, shard=self.shard)

    def _iters_per_epoch(self) -> int:
        if self.param.iters_per_epoch or self.feed is None:
            return self.param.iters_per_epoch
        records, sizes = self.feed.records(), self.feed.batch_sizes()
        return max(1, max(records[k] // max(1, sizes[k]) for k in records) // max(1, self.param.iter_size))

    def copy_weights(self, path: str | Path) -> list[str]:
        """Initialise from ``path`` (``a.caffemodel[,b.caffemodel]`` by layer name, as Caffe's
        CopyTrainedLayersFrom, or a netspec snapshot); test nets get the same layers.
        Returns (and logs) the layers left with their fillers."""
        from ..interop.caffemodel import (copy_blobs, is_caffemodel, load_caffemodel, load_weights_file,
                                          preview_names, read_caffemodels)
        if is_caffemodel(str(path).split(",")[0]):
            tables = read_caffemodels(path)          # each file parsed once, for every net
            missing = load_caffemodel(self.executor.main, path, tables)
            for f, table in tables:
                for _, compiled in self.tests:
                    copy_blobs(compiled, table, source=f)
        else:
            missing = load_weights_file(self.executor.main, path)
        if missing:
            self.log(f"note: {path} leaves {len(missing)} layer(s) or blob(s) with their fillers: "
                     f"{preview_names(missing)}")
        return missing

    # -- training ---------------------------------------------------------------------
    @property
    def module(self) -> torch.nn.Module:
        """The training module (its parameters are the net's)."""
        return self.executor.main.module

    @property
    def params(self) -> dict[str, torch.nn.Parameter]:
        """The learnable blobs by Caffe name: ``"conv1/0"`` (weights), ``"conv1/1"`` (bias)."""
        return self.executor.params

    def keep_gradients(self, on: bool = True) -> None:
        """Keep each update's diffs (the summed gradients, before clipping, normalisation and
        weight decay) in ``gradients``; they are not stored in ``.grad``."""
        self.guard.kept = {} if on else None

    @property
    def gradients(self) -> dict[str, dict[str, torch.Tensor]]:
        """After ``keep_gradients()``: update slot -> {"layer/i": diff} of the latest
        iteration; the slot is "shared" for single-update schedules and the loss name
        for MULTIWAY's per-loss updates."""
        if self.guard.kept is None:
            raise RuntimeError("call solver.keep_gradients() before step() to keep the diffs")
        return self.guard.kept

    def next_batches(self) -> list[dict]:
        if self.feed is None and not self.module.INPUTS:
            # every data layer computes its own tops (DummyData, Python layers): nothing to feed
            return [{} for _ in range(max(1, self.param.iter_size))]
        if self.feed is None:
            raise NetspecError([Diagnostic("E0600", "the train net has no data layer; feed it with "
                                           "Solver.step(n, batches=...)")])
        return [self._to_device(next(self.feed)) for _ in range(max(1, self.param.iter_size))]

    def _to_device(self, batch: dict) -> dict:
        """A batch on the training device, floating blobs in the training dtype."""
        return {k: v.to(self.device, self.dtype if self.dtype and v.is_floating_point() else v.dtype,
                        non_blocking=True) for k, v in batch.items()}

    def step(self, n: int = 1, batches=None) -> list[dict]:
        """Run ``n`` iterations (Caffe's Solver::Step); returns their log records."""
        with fast_float_mode(self.flush_denormal):
            return self._steps(n, batches)

    stop_signal: int | None = None      # the SIGINT/SIGTERM that asked solve() to stop
    _mid_iteration = False

    def _steps(self, n: int, batches) -> list[dict]:
        records = []
        for _ in range(n):
            if self._test_due():
                self.test_all()
            self._mid_iteration = True
            records.append(self._one(batches))
            self.iter += 1
            self._mid_iteration = False
            if self.param.snapshot and self.iter % self.param.snapshot == 0:
                self.snapshot()
            if self.stop_signal is not None:
                raise KeyboardInterrupt(signal.Signals(self.stop_signal).name)
        return records

    def _test_due(self) -> bool:
        p = self.param
        if not self.tests or p.test_interval <= 0 or self.iter % p.test_interval:
            return False
        return self.iter > 0 or p.test_initialization

    def _one(self, batches) -> dict:
        start = time.perf_counter()
        self._follow_module()
        batches = [self._to_device(b) for b in batches] if batches is not None else self.next_batches()
        factors = self.weights.factors(self.iter)
        if self.param.debug_info:
            for line in debug_lines(self.executor.main, batches[0], backward_steps(self.schedule),
                                    factors, self.executor.amp, self.device.type):
                self.log(line)
        try:
            result = self.executor.iteration(batches, self.iter, factors)
        except NonFinite as e:
            return self._nonfinite(e, batches, factors, start)
        weights = {l: self.weights.base[l] * factors.get(l, 1.0) for l in result.losses}
        values = {l: v / self.weights.base[l] if self.weights.base[l] else v
                  for l, v in result.losses.items()}       # the loss tops, unweighted
        loss = sum(values[l] * weights[l] for l in values)
        if not np.isfinite(loss) and self.param.nonfinite == CONTINUE and not self._warned_nonfinite:
            self._warned_nonfinite = True
            self.log(f"warning: loss = {loss:g} at iteration {self.iter}; training continues "
                     "(nonfinite: CONTINUE)")
        return self._record(loss, values, weights, start)

    def _record(self, loss: float, values: dict, weights: dict, start: float, **extra) -> dict:
        if not extra.get("skipped"):      # a dropped iteration's nan stays out of the average
            self.smoothed.append(loss)
        rec = {"iter": self.iter, "loss": loss,
               "smoothed_loss": float(np.mean(self.smoothed)) if self.smoothed else loss,
               "lr": learning_rate(self.param, self.iter), "losses": values, "weights": weights,
               "seconds": time.perf_counter() - start, **extra}
        self.history.append(rec)
        self._emit("train", rec)
        for listener in self.listeners:
            listener(rec)
        if self.param.display and self.iter % self.param.display == 0:
            self._display(rec)
        return rec

    _warned_nonfinite = False

    def _nonfinite(self, e: NonFinite, batches: list[dict], factors: dict, start: float) -> dict:
        """SKIP: log, count the iteration, keep the weights; STOP: raise the located diagnostic."""
        losses = e.losses or {k: float(v.float().sum()) for k, v in self.guard.last_losses.items()}
        loss = sum(losses.values()) if losses else float("nan")
        if self.param.nonfinite == SKIP and e.stage == "forward":
            self.guard.skipped += 1
            self.log(f"Iteration {self.iter}: loss = {loss:g}; update dropped (nonfinite: SKIP)")
            return self._record(loss, {}, {}, start, skipped=True, loss_tops=losses)
        steps = backward_steps(self.schedule)
        if e.slot is not None:        # the backward steps feeding the update that failed
            steps = [s for s in steps if set(s.params) & set(self._slot_params(e.slot))] or steps
        finding = self._locate(batches[0], steps, factors)
        raise nonfinite_error(self.iter, losses, finding, e, self.net, self._nonfinite_help(e))

    def _locate(self, batch: dict, steps: list, factors: dict):
        """Replay ``batch`` layer by layer: where the first non-finite value arose, or None."""
        return locate(self.executor.main, batch, steps, factors, self.executor.amp, self.device.type)

    def _slot_params(self, slot: str) -> tuple:
        return next((s.params for s in self.schedule.steps if isinstance(s, Update) and s.slot == slot), ())

    def _nonfinite_help(self, e: NonFinite) -> list[str]:
        help_ = [f"lower base_lr (now {self.param.base_lr:g}) or set clip_gradients; "
                 "`debug_info: true` prints every layer's data and diff"]
        last = self.latest_snapshot()
        if last is not None:
            help_.append(f"the last good snapshot is kept: {self.resume_command(last)}")
        if e.stage == "update":
            help_.append("the update itself overflowed, so it could not be dropped (not even "
                         "with `nonfinite: SKIP`)")
        else:
            help_.append("`nonfinite: SKIP` drops such updates; `nonfinite: CONTINUE` trains on as Caffe does")
        return help_

    def resume_command(self, snapshot: str | Path) -> str:
        """The command line that resumes this run from ``snapshot``."""
        import shlex
        return f"netspec train --solver {shlex.quote(str(self.spec.path))} --snapshot {shlex.quote(str(snapshot))}"

    def _follow_module(self) -> None:
        """Follow a dtype/device conversion of the module made after construction
        (``solver.module.double()``, ``.to(device)``): the executor's update aliases, the
        other compiled modules, the test nets and the optimizer state move with it."""
        ex = self.executor
        if all(ex.data[k].data_ptr() == p.data_ptr() and ex.data[k].dtype == p.dtype
               for k, p in ex.params.items()):
            return
        kinds = {(p.dtype, p.device) for p in ex.params.values()}
        if len(kinds) > 1:
            raise NetspecError([Diagnostic("E0600", "the module's parameters were converted to mixed "
                                           "dtypes or devices: " + ", ".join(sorted(f"{d} on {v}" for d, v in kinds)),
                                           help=["convert the whole module: solver.module.to(device, dtype)"])])
        dtype, device = kinds.pop()
        ex.data = {k: p.data for k, p in ex.params.items()}
        for compiled in [c for c in ex.modules.values() if c is not ex.main] + [c for _, c in self.tests]:
            compiled.module.to(device=device, dtype=dtype)
            share_parameters(ex.main, compiled)
        ex.state = {slot: {k: {h: v.to(device, dtype) for h, v in hist.items()} for k, hist in st.items()}
                    for slot, st in ex.state.items()}
        self.device = ex.device = device
        self.dtype = dtype
        self.log(f"note: the module was converted after Solver(); training follows it ({dtype} on {device})")

    def _display(self, rec: dict) -> None:
        self.log(f"Iteration {rec['iter']} ({1 / max(rec['seconds'], 1e-9):.2f} iter/s), "
                 f"loss = {rec['smoothed_loss']:.6g}")
        for i, (name, value) in enumerate(rec["losses"].items()):
            w = rec["weights"][name]
            self.log(f"    Train net output #{i}: {name} = {value:.6g} (* {w:.4g} = {w * value:.6g} loss)")
        self.log(f"Iteration {rec['iter']}, lr = {rec['lr']:.6g}")

    def _emit(self, kind: str, rec: dict) -> None:
        if self.jsonl:
            self.jsonl.write(json.dumps({"kind": kind, **rec}) + "\n")
            self.jsonl.flush()

    def solve(self, resume: str | Path | None = None) -> None:
        """Train to max_iter (Caffe's Solver::Solve).

        SIGINT (Ctrl-C) or SIGTERM finishes the current iteration, writes a snapshot and
        raises KeyboardInterrupt (``stop_signal`` says which); a second signal interrupts
        at once.  A closed stdout (``netspec train | head``) never stops training."""
        if resume:
            self.restore(resume)
        self.stop_signal = None
        self.log(f"Solving {self.net.name} with {self.schedule.mode} BP on {self.device}")
        self.log(str(self.schedule))
        if hasattr(self.executor, "describe"):          # compile: true
            self.log(f"torch.compile: {len(self.executor.segments)} segment(s)\n{self.executor.describe()}")
        try:
            with self._stop_on_signals():
                self.step(max(0, self.param.max_iter - self.iter))
        except KeyboardInterrupt:
            self._interrupted()
            raise
        if self.param.snapshot_after_train and (not self.param.snapshot or self.iter % self.param.snapshot):
            self.snapshot()
        if self.tests and self.param.test_interval and self.iter % self.param.test_interval == 0:
            self.test_all()
        self.log("Optimization Done.")

    @contextmanager
    def _stop_on_signals(self):
        """SIGINT/SIGTERM ask for a stop at the next iteration boundary (the snapshot is then
        consistent); a second one raises KeyboardInterrupt at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def ask(signum, _frame):
            if self.stop_signal is not None:
                raise KeyboardInterrupt(signal.Signals(signum).name)
            self.stop_signal = signum
        previous = {sig: signal.signal(sig, ask) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _interrupted(self) -> None:
        """Write the snapshot and say how to resume; the log may be a dead pipe by now."""
        if self.stop_signal is None:
            self.stop_signal = signal.SIGINT
        name = signal.Signals(self.stop_signal).name
        if self._mid_iteration:
            last = self.latest_snapshot()
            msg = (f"{name}: interrupted inside iteration {self.iter}; no snapshot written"
                   + (f"; resume from the last one with: {self.resume_command(last)}" if last else ""))
        else:
            path = self.snapshot()
            msg = f"{name}: stopped at iteration {self.iter}; resume with: {self.resume_command(path)}"
        self.log(msg)
        if console_dead():                 # stdout is a closed pipe: stderr may still be read
            _safe_write(sys.stderr, msg)

    # -- testing ----------------------------------------------------------------------
    def test_all(self) -> list[dict]:
        return [self.test(i) for i in range(len(self.tests))]

    @torch.no_grad()
    def test(self, index: int = 0) -> dict:
        """Caffe's test phase: average every output of test net ``index`` over test_iter batches."""
        net, compiled = self.tests[index]
        feed = self._feeder(net, caffe_pb2.TEST, self.seed)
        sums: dict[str, float] = {}
        n = self.param.test_iter[index]
        for _ in range(n):
            out = run_module(compiled.module, self._to_device(next(feed)) if feed else {})
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.float().mean() if v.dim() else v)
        means = self._global_means({k: v / max(1, n) for k, v in sums.items()}, feed)
        self.log(f"Iteration {self.iter}, Testing net (#{index})")
        weights = {t.name: w for l in net.losses for t, w in l.tops}
        for i, (k, v) in enumerate(means.items()):
            extra = f" (* {weights[k]:g} = {weights[k] * v:.6g} loss)" if k in weights else ""
            self.log(f"    Test net output #{i}: {k} = {v:.6g}{extra}")
        rec = {"iter": self.iter, "net": index, "outputs": means}
        self._emit("test", rec)
        return rec

    def _global_means(self, means: dict, feed) -> dict:
        """Test outputs over the whole test set (one process: its own figures)."""
        return means

    # -- snapshots --------------------------------------------------------------------
    def snapshot_path(self) -> Path:
        prefix = self.param.snapshot_prefix or Path(self.spec.path).stem
        return Path(f"{prefix}_iter_{self.iter}.netspec")

    def snapshot(self, path: str | Path | None = None) -> Path:
        """Write weights and the full solver state atomically (temp file, then rename).

        ``snapshot_format: BINARYPROTO`` (or ``HDF5``) in the solver file writes Caffe's
        ``.caffemodel`` + ``.solverstate`` pair instead (netspec.solve.caffe_snapshot); returns
        the solver state file."""
        if _caffe_format(self.param):
            from .caffe_snapshot import write_caffe_snapshot
            stem = Path(path).with_suffix("") if path else self.snapshot_path().with_suffix("")
            model, state = write_caffe_snapshot(self, stem)
            self.log(f"Snapshotting to {model}")
            self.log(f"Snapshotting solver state to {state}")
            return state
        path = Path(path) if path else self.snapshot_path()
        state = {"version": SNAPSHOT_VERSION, "iter": self.iter, "net": self.net.name,
                 "weights": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
                 "optimizer": _to_cpu(self.executor.state), "smoothed": list(self.smoothed),
                 "rng": _rng_state(), "seed": self.seed, "mode": self.schedule.mode}
        with atomic_writer(path) as f:
            torch.save(state, f)
        self.log(f"Snapshotting to {path}")
        return path

    def latest_snapshot(self) -> Path | None:
        """The newest snapshot this solver's snapshot_prefix has written (--auto-resume)."""
        return latest_snapshot(self.snapshot_path())

    def restore(self, path: str | Path) -> None:
        """Resume from a snapshot: weights, iteration, optimizer state per loss, RNG, data position.

        A Caffe ``.solverstate[.h5]`` restores weights, iteration and history (no RNG state)."""
        from .caffe_snapshot import is_caffe_solverstate, restore_caffe_snapshot
        if is_caffe_solverstate(path):
            restore_caffe_snapshot(self, path)
        else:
            state = read_snapshot(path)
            if "optimizer" not in state:       # netspec.Net.save writes weights only
                raise NetspecError([Diagnostic("E0700", f"'{path}' holds weights only, no solver state "
                                               "to resume", help=["initialise from it with --weights"])])
            load_weights(self.module, state["weights"], str(path))
            self.executor.state = {k: _to_device(v, self.device) for k, v in state["optimizer"].items()}
            self.iter = state["iter"]
            self.smoothed.extend(state.get("smoothed", []))
            _set_rng_state(state["rng"])
        if self.feed is not None:                      # the data order is a function of the seed
            self.feed = self._feeder(self.net, caffe_pb2.TRAIN, self.seed)
            for _ in range(self.iter * max(1, self.param.iter_size)):
                next(self.feed)
        self.log(f"Restored from {path} at iteration {self.iter}")


_CONSOLE = {"dead": False}


def console_log(line: str) -> None:
    """The default log: a line on stdout.  When stdout is a closed pipe (``| head``, a
    ``| tee`` killed by Ctrl-C) the log goes quiet instead of killing training."""
    if not _CONSOLE["dead"] and not _safe_write(sys.stdout, line):
        _CONSOLE["dead"] = True


def console_dead() -> bool:
    return _CONSOLE["dead"]


def _safe_write(stream, line: str) -> bool:
    """Write and flush a line; False (and ``stream``'s descriptor pointed at /dev/null, so
    the interpreter's final flush cannot fail either) when the reader has gone."""
    try:
        stream.write(line + "\n")
        stream.flush()
        return True
    except (BrokenPipeError, ValueError):      # ValueError: the stream was closed
        pass
    except OSError as e:
        if e.errno != errno.EPIPE:
            raise
    try:
        fd = os.open(os.devnull, os.O_WRONLY)
        os.dup2(fd, stream.fileno())
        os.close(fd)
    except (OSError, ValueError):
        pass
    return False


def _caffe_format(param) -> bool:
    """Caffe's snapshot files only when the solver file names a snapshot_format (BINARYPROTO
    is Caffe's default, but netspec's own format is the default here)."""
    return param.HasField("snapshot_format")


def _resolve_weights(name: str, solver_path: str) -> str:
    """A solver's ``weights:`` entry (comma-separated files too), found as Caffe finds the net."""
    from ..check.solver import resolve_path
    return ",".join(str(resolve_path(f, solver_path) or f) for f in name.split(",") if f)


def latest_snapshot(example: Path) -> Path | None:
    """The snapshot with the highest iteration beside ``example`` (a ``prefix_iter_N`` path)."""
    stem = re.sub(r"_iter_\d+\.netspec$", "", example.name)
    pattern = re.compile(re.escape(stem) + r"_iter_(\d+)\.netspec$")
    found = [(int(m.group(1)), p) for p in example.parent.glob(f"{stem}_iter_*.netspec")
             if (m := pattern.match(p.name))]
    return max(found)[1] if found else None


def _flushing_denormals() -> bool:
    # torch has no getter; a denormal product reads back as zero exactly when flushing is on
    return (torch.tensor([1e-30], dtype=torch.float32) * 1e-10).item() == 0.0


@contextmanager
def fast_float_mode(enabled: bool = True):
    """Flush denormals to zero while the block runs, as Caffe's BLAS builds usually do: plain
    nets with tiny initialisations otherwise spend most of their time in the CPU's denormal
    slow path.  The flag is process-wide, so the caller's setting is restored afterwards."""
    before = _flushing_denormals()
    if enabled and not before:
        torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if enabled and not before:
            torch.set_flush_denormal(False)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    return obj


def _to_device(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj

