"""Caffe's Solver on netspec: read a solver file, execute its backward schedule, test, snapshot.

``Solver(path).step(n)`` is the notebook API; ``netspec train`` drives it from the CLI.
"""
from __future__ import annotations

import json
import random
import re
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
from ..proto import caffe_pb2
from ..schedule import Update, build_schedule
from .executor import Executor, share_parameters
from .loss_weights import LossWeights
from .lr_policy import learning_rate
from .updates import CaffeUpdate

SNAPSHOT_VERSION = 1


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
                 flush_denormal: bool = True):
        self.spec = read_solver(path, input_shapes)
        self.param = p = self.spec.param
        self.seed = self._choose_seed(p)
        _seed_everything(self.seed)
        self.flush_denormal = flush_denormal
        self.device = pick_device(p, device)
        self.log = log or (lambda line: print(line, flush=True))
        self.jsonl = open(jsonl, "a") if jsonl else None
        self.net = check_net(self.spec.train, self.spec.train_state, input_shapes)
        self.schedule = build_schedule(self.net, p)
        self.executor = self.executor_class(self.net, self.schedule, self._updaters(), seed=self.seed,
                                 device=self.device,
                                 scale_head_gradients=p.multiway_param.scale_head_gradients,
                                 amp=amp_dtype(p, self.device), channels_last=p.channels_last)
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
        """One update rule per state slot; MULTIWAY's lr/Lambda option divides segment lr_mult."""
        specs = self._specs()
        slots = [s for s in self.schedule.steps if isinstance(s, Update)]
        if not self.param.multiway_param.segment_lr_scaling:
            return {s.slot: CaffeUpdate(self.param, specs) for s in slots}
        owners = {}
        for s in slots:
            for key in s.params:
                owners[key] = owners.get(key, 0) + 1
        return {s.slot: CaffeUpdate(self.param, {k: (lr / owners.get(k, 1), d) for k, (lr, d) in specs.items()})
                for s in slots}

    def _test_net(self, src, state, input_shapes) -> tuple[CheckedNet, Compiled]:
        net = check_net(src, state, input_shapes)
        compiled = compile_net(net, seed=self.seed)
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

    def next_batches(self) -> list[dict]:
        if self.feed is None:
            raise NetspecError([Diagnostic("E0600", "the train net has no data layer; feed it with "
                                           "Solver.step(n, batches=...)")])
        return [self._to_device(next(self.feed)) for _ in range(max(1, self.param.iter_size))]

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def step(self, n: int = 1, batches=None) -> list[dict]:
        """Run ``n`` iterations (Caffe's Solver::Step); returns their log records."""
        with fast_float_mode(self.flush_denormal):
            return self._steps(n, batches)

    def _steps(self, n: int, batches) -> list[dict]:
        records = []
        for _ in range(n):
            if self._test_due():
                self.test_all()
            records.append(self._one(batches))
            self.iter += 1
            if self.param.snapshot and self.iter % self.param.snapshot == 0:
                self.snapshot()
        return records

    def _test_due(self) -> bool:
        p = self.param
        if not self.tests or p.test_interval <= 0 or self.iter % p.test_interval:
            return False
        return self.iter > 0 or p.test_initialization

    def _one(self, batches) -> dict:
        start = time.perf_counter()
        batches = [self._to_device(b) for b in batches] if batches is not None else self.next_batches()
        factors = self.weights.factors(self.iter)
        result = self.executor.iteration(batches, self.iter, factors)
        weights = {l: self.weights.base[l] * factors.get(l, 1.0) for l in result.losses}
        values = {l: v / self.weights.base[l] if self.weights.base[l] else v
                  for l, v in result.losses.items()}       # the loss tops, unweighted
        loss = sum(values[l] * weights[l] for l in values)
        self.smoothed.append(loss)
        rec = {"iter": self.iter, "loss": loss, "smoothed_loss": float(np.mean(self.smoothed)),
               "lr": learning_rate(self.param, self.iter), "losses": values, "weights": weights,
               "seconds": time.perf_counter() - start}
        self.history.append(rec)
        self._emit("train", rec)
        for listener in self.listeners:
            listener(rec)
        if self.param.display and self.iter % self.param.display == 0:
            self._display(rec)
        return rec

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
        """Train to max_iter (Caffe's Solver::Solve); Ctrl-C snapshots and stops."""
        if resume:
            self.restore(resume)
        self.log(f"Solving {self.net.name} with {self.schedule.mode} BP on {self.device}")
        self.log(str(self.schedule))
        try:
            self.step(max(0, self.param.max_iter - self.iter))
        except KeyboardInterrupt:
            self.log("Interrupted: writing a snapshot")
            self.snapshot()
            raise
        if self.param.snapshot_after_train and (not self.param.snapshot or self.iter % self.param.snapshot):
            self.snapshot()
        if self.tests and self.param.test_interval and self.iter % self.param.test_interval == 0:
            self.test_all()
        self.log("Optimization Done.")

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
        ``.caffemodel`` + ``.solverstate`` pair instead (netspec.interop.snapshot); returns
        the solver state file."""
        if _caffe_format(self.param):
            from ..interop.snapshot import write_caffe_snapshot
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
        from ..interop.snapshot import is_caffe_solverstate, restore_caffe_snapshot
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


def read_snapshot(path: str | Path) -> dict:
    """Load a netspec snapshot, with a clear error for a missing or corrupt file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise NetspecError([Diagnostic("E0700", f"snapshot '{path}' does not exist")]) from None
    except Exception as e:  # torch raises many types for a damaged file
        raise NetspecError([Diagnostic("E0700", f"'{path}' is not a readable netspec snapshot: "
                                       f"{str(e).splitlines()[0] if str(e) else type(e).__name__}",
                                       help=["the file may be truncated; use an earlier snapshot"])]) from None
    if not isinstance(state, dict) or state.get("version") != SNAPSHOT_VERSION:
        raise NetspecError([Diagnostic("E0700", f"'{path}' is not a netspec snapshot (version "
                                       f"{SNAPSHOT_VERSION})")])
    return state


def load_weights(module: torch.nn.Module, weights: dict, source: str) -> list[str]:
    """Copy snapshot weights into ``module`` in place (keeps parameter identity and aliases).

    Keys present in both must have equal shapes; returns the module keys left unfilled.
    """
    own = dict(module.state_dict(keep_vars=True))
    bad = [f"'{k}': snapshot {tuple(v.shape)} vs net {tuple(own[k].shape)}"
           for k, v in weights.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise NetspecError([Diagnostic("E0700", f"{source}: shapes differ for " + "; ".join(bad))])
    with torch.no_grad():
        for k, v in weights.items():
            if k in own:
                own[k].data.copy_(v.to(own[k].device, own[k].dtype))
    return [k for k in own if k not in weights]


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

