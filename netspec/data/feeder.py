"""The feeder: batches for every data layer of a checked net, as the solver needs them.

Semantics (Caffe's, made deterministic):

* A data layer never runs dry.  An *epoch* is one pass over its records; when it
  ends the next begins, and a batch straddling the boundary takes its tail from
  the next epoch.  ``Feeder.records()`` gives each layer's epoch length.
* Order: ``sampling_param { mode: SEQUENTIAL | SHUFFLE | CLASS_AWARE seed: N }``
  when the layer has one; otherwise the layer's own ``shuffle`` flag (ImageData:
  a new permutation every epoch; HDF5Data: the file order and each file's rows
  are permuted every epoch, as Caffe does); otherwise file order.  SHUFFLE
  permutes all records every epoch; CLASS_AWARE is Relay BP sec. 5.1 sampling.
* Seeds: the order of layer k is seeded by ``sampling_param.seed`` or else by
  (feeder seed, k); random crops and mirrors by (feeder seed, k, record draw
  number), so a run is the same whatever ``num_workers`` is.
* The test net's feeder keeps its position between test rounds, as Caffe's
  test-net data layers do.
* Reading runs in a ``torch.utils.data.DataLoader``: ``num_workers`` processes
  (default: none for in-memory sources, HDF5Data and MemoryData; two for
  sources that decode images) and pinned memory when CUDA is available.
"""
from __future__ import annotations

import os
import signal
from functools import partial
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..diagnostics import NetspecError
from ..proto import caffe_pb2
from . import samplers
from .labels import LabelRule, label_rules
from .site import LayerSite
from .sources import SOURCES, MemorySource
from .transforms import Transformer, effective_transform

UNREADABLE = {"WindowData": "crop the windows into an ImageData list or an HDF5 file"}
DECODING = {"ImageData", "Data", "TorchvisionData"}      # worth worker processes


class _Failed:
    """A NetspecError raised in a worker, carried back as a value: DataLoader would
    otherwise re-raise it as a bare string without its diagnostics."""

    def __init__(self, error: NetspecError):
        self.diagnostics = error.diagnostics


class BatchReader(Dataset):
    """Reads, checks and transforms one batch, given (draw, record indices)."""

    def __init__(self, source, transform: Transformer, rules: list[LabelRule], seed: tuple):
        self.source, self.transform, self.rules, self.seed = source, transform, rules, seed

    def __getitem__(self, plan) -> dict:
        try:
            return self.read(*plan)
        except NetspecError as e:
            return _Failed(e)

    def read(self, draw: int, indices: list[int]) -> dict:
        per_top = self.source.read_batch(indices)
        for rule in self.rules:
            rule.check(np.stack(per_top[rule.top]), indices, self.source.describe, self.source.site)
        if not self.transform.identity:
            per_top[0] = [self.transform(x, np.random.default_rng((*self.seed, draw + k)),
                                         self.source.describe(i))
                          for k, (x, i) in enumerate(zip(per_top[0], indices))]
        return {top: torch.from_numpy(self._stack(records, indices))
                for top, records in zip(self.source.tops, per_top)}

    def _stack(self, records: list, indices: list[int]) -> np.ndarray:
        first = np.shape(records[0])
        for r, i in zip(records, indices):
            if np.shape(r) != first:
                raise self.source.error(f"{self.source.describe(i)} has shape {np.shape(r)} but "
                                        f"{self.source.describe(indices[0])} has {first}: a batch "
                                        "needs records of one shape",
                                        help=["resize them (new_height/new_width) or crop (crop_size)"])
        return np.stack(records).astype(np.float32, copy=False)


def _order(kind, data, seed):
    return kind(data, np.random.default_rng(seed))


def _leave_signals_to_the_trainer(_worker_id: int) -> None:
    """Ctrl-C (and a group-wide SIGTERM) reach reader workers too; the training process
    stops after the iteration with a snapshot, so its workers must not die first.  A worker
    still exits with its parent (DataLoader's watchdog)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class LayerStream:
    """One data layer's endless batches."""

    def __init__(self, net, node, index: int, phase: int, seed: int,
                 num_workers: Optional[int], pin_memory: bool, shard: tuple[int, int] = (0, 1)):
        self.site = LayerSite.of(net, node)
        self.node, self.index, self.seed, self.shard = node, index, seed, shard
        self.source = SOURCES[node.type](node.lp, phase, self.site)
        self.transform = Transformer(effective_transform(node.lp, self.source.p), phase, self.site)
        self.rules = label_rules(net, node)
        self.num_workers = num_workers if num_workers is not None else self._default_workers()
        self.pin_memory = pin_memory
        self._batches: Optional[Iterator] = None
        if self.source.batch_size <= 0:
            raise self.site.error("E0501", "batch_size must be positive",
                                  (self.source.param, "batch_size"))

    def _default_workers(self) -> int:
        return min(2, max(0, (os.cpu_count() or 1) - 1)) if self.node.type in DECODING else 0

    def mode(self) -> str:
        lp = self.node.lp
        if lp.HasField("sampling_param"):
            return caffe_pb2.SamplingParameter.Mode.Name(lp.sampling_param.mode)
        return "LAYER_SHUFFLE" if self.source.shuffle else "SEQUENTIAL"

    def order_seed(self):
        sp = self.node.lp.sampling_param
        return sp.seed if sp.HasField("seed") else (self.seed, self.index)

    def make_order(self):
        """A factory of fresh index streams for this layer's order.  It holds plain
        data, not the stream: a cycle through the DataLoader would leave its worker
        processes to the cyclic garbage collector, which stops them slowly."""
        mode, n, seed = self.mode(), len(self.source), self.order_seed()
        if mode == "CLASS_AWARE":
            return partial(_order, samplers.class_aware, self._class_labels(), seed)
        groups = self.source.groups() if mode == "LAYER_SHUFFLE" else None
        if groups:
            return partial(_order, samplers.grouped_shuffle, groups, seed)
        kind = samplers.shuffled if mode == "LAYER_SHUFFLE" else samplers.ORDERS[mode]
        return partial(_order, kind, n, seed)

    def _class_labels(self) -> np.ndarray:
        labels = self.source.labels()
        where = ("name",)
        if labels is None:
            raise self.site.error("E0501", "class-aware sampling needs a label top", where)
        bad = np.flatnonzero(np.asarray(labels) != np.round(labels))
        if len(bad):
            raise self.site.error("E0701", f"class-aware sampling needs integer labels, but "
                                  f"{self.source.describe(int(bad[0]))} has label {labels[bad[0]]:g}", where)
        return np.asarray(labels).astype(np.int64)

    def loader(self) -> DataLoader:
        reader = BatchReader(self.source, self.transform, self.rules, (self.seed, self.index, 1))
        plan = samplers.BatchPlan(self.make_order(), self.source.batch_size, self.shard)
        return DataLoader(reader, batch_size=None, sampler=plan, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, generator=self._generator(),
                          worker_init_fn=_leave_signals_to_the_trainer if self.num_workers else None)

    def _generator(self) -> torch.Generator:
        """The loader's own generator: without one, every new iterator draws its base seed from
        torch's global RNG, so a test pass (a fresh TEST feeder) would shift the training net's
        Dropout masks.  In Caffe testing leaves the training trajectory alone."""
        seed = np.random.SeedSequence((self.seed, self.index, 2)).generate_state(1)[0]
        return torch.Generator().manual_seed(int(seed))

    def next(self) -> dict:
        if self._batches is None:
            self._batches = iter(self.loader())
        batch = next(self._batches)
        if isinstance(batch, _Failed):
            raise NetspecError(batch.diagnostics)
        return batch

    def restart(self) -> None:
        """Start again from the first batch (the next call re-creates the loader)."""
        self._batches = None


class Feeder:
    """Batches for all data layers of ``net`` (a CheckedNet): ``next(feeder)`` is a dict
    top blob name -> torch.Tensor (float32), ready to be passed to the compiled
    module's forward.  See the module docstring for epoch and shuffle semantics.

    ``phase`` defaults to the net's own; it decides random (TRAIN) or centre (TEST)
    crops.  ``num_workers`` None picks per layer; 0 reads in this process.
    ``shard=(rank, world)`` gives this rank its slice of every global batch
    (``samplers.BatchPlan``); ``batch_size`` stays the global batch.
    """

    def __init__(self, net, phase=None, seed: int = 0, *, num_workers: Optional[int] = None,
                 pin_memory: Optional[bool] = None, shard: tuple[int, int] = (0, 1)):
        phase = net.state.phase if phase is None else phase
        phase = caffe_pb2.Phase.Value(phase.upper()) if isinstance(phase, str) else phase
        pin = torch.cuda.is_available() if pin_memory is None else pin_memory
        nodes = net.graph.layers()
        for node in nodes:
            if node.type in UNREADABLE:
                raise LayerSite.of(net, node).error("E0501", f"netspec cannot read {node.type} layers",
                                                    help=[UNREADABLE[node.type]])
        self.shard = shard
        self.streams = {node.name: LayerStream(net, node, k, phase, seed, num_workers, pin, shard)
                        for k, node in enumerate(nodes) if node.type in SOURCES}

    @property
    def tops(self) -> list[str]:
        """The blob names each batch holds."""
        return [t for s in self.streams.values() for t in s.source.tops]

    def records(self) -> dict[str, int]:
        """Records per epoch, per data layer."""
        return {name: len(s.source) for name, s in self.streams.items()}

    def batch_sizes(self) -> dict[str, int]:
        """Global batch sizes (what the prototxt says), per data layer."""
        return {name: s.source.batch_size for name, s in self.streams.items()}

    def shard_fractions(self) -> dict[str, float]:
        """The part of each global batch this rank reads, per data layer (1.0 unsharded)."""
        out = {}
        for name, s in self.streams.items():
            lo, hi = samplers.shard_bounds(s.source.batch_size, self.shard)
            out[name] = (hi - lo) / s.source.batch_size
        return out

    def set_memory_data(self, layer: str, data, labels=None) -> None:
        """Give a MemoryData layer its records; its stream restarts at record 0 (Caffe's Reset)."""
        stream = self.streams.get(layer)
        if stream is None or not isinstance(stream.source, MemorySource):
            memory = [n for n, s in self.streams.items() if isinstance(s.source, MemorySource)]
            raise ValueError(f"'{layer}' is not a MemoryData layer of this net (those are: {memory})")
        stream.source.set_arrays(data, labels)
        stream.restart()

    def __iter__(self) -> "Feeder":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        for stream in self.streams.values():
            batch.update(stream.next())
        return batch

    def close(self) -> None:
        """Stop worker processes (they also stop when the feeder is garbage-collected)."""
        for stream in self.streams.values():
            stream.restart()
