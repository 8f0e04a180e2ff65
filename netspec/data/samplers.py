"""Record orders: endless streams of record indices, deterministic for a seed.

Caffe's data layers never stop: when a pass over the records (an *epoch*) ends,
the next begins, and a batch that straddles the boundary takes its tail from
the new epoch.  The orders:

* ``sequential``: 0, 1, ..., n-1, 0, 1, ...  (Caffe's Data, MemoryData, unshuffled lists)
* ``shuffled``: a fresh permutation every epoch (ImageData ``shuffle: true``)
* ``grouped_shuffle``: HDF5Data ``shuffle: true``: the file order is permuted every
  epoch and the rows inside each file are permuted as the file is loaded
* ``class_aware``: Relay BP sec. 5.1: a class from a shuffled class list, then a
  record from that class's shuffled list; each list is reshuffled when exhausted.
  It has no epochs: every class is drawn equally often whatever the label counts.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


def sequential(n: int, rng=None) -> Iterator[int]:
    while True:
        yield from range(n)


def shuffled(n: int, rng: np.random.Generator) -> Iterator[int]:
    while True:
        yield from rng.permutation(n).tolist()


def grouped_shuffle(groups: Sequence[range], rng: np.random.Generator) -> Iterator[int]:
    while True:
        for g in rng.permutation(len(groups)).tolist():
            group = groups[g]
            yield from (group.start + rng.permutation(len(group))).tolist()


class _Cycle:
    """A list drawn from in order, reshuffled whenever it runs out."""

    def __init__(self, items: np.ndarray, rng: np.random.Generator):
        self.items, self.rng, self.pos = np.asarray(items), rng, len(items)

    def next(self):
        if self.pos == len(self.items):
            self.items, self.pos = self.rng.permutation(self.items), 0
        self.pos += 1
        return self.items[self.pos - 1].item()


def class_aware(labels: np.ndarray, rng: np.random.Generator) -> Iterator[int]:
    """Relay BP class-aware sampling over records with integer ``labels``."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    per_class = {c.item(): _Cycle(np.flatnonzero(labels == c), rng) for c in classes}
    class_list = _Cycle(classes, rng)
    while True:
        yield per_class[class_list.next()].next()


ORDERS = {"SEQUENTIAL": sequential, "SHUFFLE": shuffled}


def shard_bounds(batch_size: int, shard: tuple[int, int]) -> tuple[int, int]:
    """The slice [lo, hi) of a global batch that rank ``shard[0]`` of ``shard[1]`` reads."""
    rank, world = shard
    return rank * batch_size // world, (rank + 1) * batch_size // world


class BatchPlan:
    """Endless (draw, indices) batches over an order; ``draw`` counts records drawn
    before the batch, so per-record randomness can be seeded by (seed, draw + k)
    identically whichever worker reads the batch.

    ``shard=(rank, world)``: data-parallel training.  Every rank walks the same
    global order (same seed) and keeps its own contiguous slice of each global
    batch, so the ranks together see exactly the batches one process would, and a
    record's random crop/mirror is the one it would get in one process.
    """

    def __init__(self, make_order, batch_size: int, shard: tuple[int, int] = (0, 1)):
        self.make_order, self.batch_size = make_order, batch_size
        self.lo, self.hi = shard_bounds(batch_size, shard)

    def __iter__(self):
        order, draw = self.make_order(), 0
        while True:
            batch = [next(order) for _ in range(self.batch_size)]
            yield draw + self.lo, batch[self.lo:self.hi]
            draw += self.batch_size
