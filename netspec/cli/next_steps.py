"""What ``netspec train`` prints when training ends: the weights it wrote, a table per exit
(test accuracy, parameters, MACs per sample) and the commands to try next on those weights."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path


class ExitReport:
    """Keeps the last test of test net 0 while the solver trains; ``finish`` saves and prints."""

    def __init__(self, solver):
        self.solver, self.last = solver, None
        test = solver.test

        def keep(index: int = 0):
            rec = test(index)
            if index == 0:
                self.last = rec
            return rec
        solver.test = keep

    def finish(self, out=None) -> Path:
        """Write the final weights (unless the solver just did), print the table and next steps."""
        out = out or sys.stdout
        solver = self.solver
        if self.last is None and solver.tests:
            log, solver.log = solver.log, (lambda line: None)
            try:
                self.last = solver.test(0)
            finally:
                solver.log = log
        weights = _weights(solver)
        print("", file=out)
        print(format_exits(solver, (self.last or {}).get("outputs", {})), file=out)
        if weights is None:
            print("final weights: not saved (the solver says snapshot_after_train: false)", file=out)
            return None
        print(f"final weights: {weights}", file=out)
        print(next_commands(solver, weights), file=out)
        return weights


def _weights(solver) -> Path | None:
    """The final snapshot's weights file: the one the solver wrote, or None when the solver
    file asked for none (Caffe's snapshot_after_train: false is honoured)."""
    stem = str(solver.snapshot_path().with_suffix(""))
    # netspec's own snapshot, or Caffe's pair (BINARYPROTO / HDF5): the weights file of it
    for state, weights in ((".netspec", ".netspec"), (".solverstate", ".caffemodel"),
                           (".solverstate.h5", ".caffemodel.h5")):
        if Path(stem + state).exists():
            return Path(stem + weights)
    return None


def format_exits(solver, outputs: dict) -> str:
    """One row per exit of the test net (the train net without one): accuracy, parameters, MACs."""
    from ..tools.macs import exits, fmt_macs
    net = solver.tests[0][0] if solver.tests else solver.net
    accuracy = {}
    for loss in net.losses:
        logits = net.graph.layer(loss.layer).bottoms[0]
        for node in net.graph.layers():
            if node.type == "Accuracy" and node.bottoms[0] == logits and node.tops[0].name in outputs:
                accuracy[loss.layer] = outputs[node.tops[0].name]
    found = exits(net)
    w = max([20] + [len(e.name) for e in found])      # an exit is named by its loss layer: whole
    rows = [f"{'exit':<{w}} {'test accuracy':>13} {'parameters':>12} {'MACs/sample':>12}"]
    for e in found:
        acc = f"{100 * accuracy[e.name]:.2f}%" if e.name in accuracy else "-"
        rows.append(f"{e.name:<{w}} {acc:>13} {e.params:>12,} {fmt_macs(e.macs, 'MAC'):>12}")
    return "\n".join(rows)


def next_commands(solver, weights: Path) -> str:
    """The commands to try next, runnable as printed from the current directory."""
    net = _shown(Path(solver.spec.train.path))
    w = _shown(weights)
    losses = [l.layer for l in (solver.tests[0][0] if solver.tests else solver.net).losses]
    first = losses[0] if losses else None
    it = f" --iterations {solver.param.test_iter[0]}" if solver.param.test_iter else ""    # the test set once
    lines = ["next:", f"  netspec test --model {net} --weights {w}{it}"]
    if len(losses) > 1:
        lines.append(f"  netspec test --model {net} --weights {w}{it} --early-exit 0.5,0.9,0.99 --plot anytime.svg")
    if first:
        stem = re.sub(r"\W", "_", first)
        lines.append(f"  netspec export {net} --weights {w} --exit {first} --to prototxt -o {stem}.prototxt")
    lines.append(f"  netspec draw {net} -o net.svg")
    return "\n".join(lines)


def _shown(path: Path) -> str:
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else str(path)
