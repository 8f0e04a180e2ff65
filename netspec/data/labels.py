"""Label checks: a label top read by a classifier loss (or Accuracy) must hold
integer class indices in [0, classes), or the layer's ignore_label.  Caffe would
index out of bounds or silently truncate; netspec names the bad record instead."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from .site import LayerSite

# layer type -> (its class axis, its ignore_label), both from the LayerParameter
CLASSIFIERS: dict[str, Callable] = {
    "SoftmaxWithLoss": lambda lp: (lp.softmax_param.axis,
                                   lp.loss_param.ignore_label if lp.loss_param.HasField("ignore_label") else None),
    "Accuracy": lambda lp: (lp.accuracy_param.axis,
                            lp.accuracy_param.ignore_label if lp.accuracy_param.HasField("ignore_label") else None),
    "InfogainLoss": lambda lp: (lp.infogain_loss_param.axis,
                                lp.loss_param.ignore_label if lp.loss_param.HasField("ignore_label") else None),
    "MultinomialLogisticLoss": lambda lp: (1, None),
    "HingeLoss": lambda lp: (1, None),
}


@dataclass
class LabelRule:
    """What the layer ``consumer`` accepts in the data layer's top ``top``."""

    top: int
    consumer: str
    classes: Optional[int]
    ignore: Optional[int]

    def check(self, labels: np.ndarray, indices: Sequence[int], describe, site: LayerSite) -> None:
        """Raise a NetspecError naming the first record whose label breaks the rule."""
        flat = np.asarray(labels, np.float64).reshape(len(indices), -1)
        ok = np.isfinite(flat) & (flat == np.round(flat)) & (flat >= 0)
        if self.classes is not None:
            ok &= flat < self.classes
        if self.ignore is not None:
            ok |= flat == self.ignore
        bad = np.argwhere(~ok)
        if len(bad):
            r, c = bad[0]
            raise site.error("E0701", f"label {flat[r, c]:g} of {describe(indices[r])} is not a class index"
                             f" for layer '{self.consumer}'", ("top", self.top),
                             help=[self._valid()])

    def _valid(self) -> str:
        rng = f"an integer in [0, {self.classes - 1}]" if self.classes else "a non-negative integer"
        return f"labels must be {rng}" + (f" or the ignore_label {self.ignore}" if self.ignore is not None else "")


def label_rules(net, node) -> list[LabelRule]:
    """The rules every consumer of ``node``'s tops puts on them (bottom 1 of a classifier)."""
    rules = []
    for j, blob in enumerate(node.tops):
        for name in net.graph.consumers(blob):
            consumer = net.graph.layer(name)
            if consumer.type not in CLASSIFIERS:
                continue
            edges = {i: b for _, b, i in net.graph.in_edges(name)}
            if edges.get(1) != blob:
                continue
            axis, ignore = CLASSIFIERS[consumer.type](consumer.lp)
            scores = net.shapes.get(edges.get(0))
            classes = scores[axis % len(scores)] if scores else None
            rules.append(LabelRule(j, name, classes, ignore))
    return rules
