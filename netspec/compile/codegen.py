"""Stage 5: generate readable PyTorch source for a checked net.

The same source serves two purposes: ``compile_net`` executes it to get the
``nn.Module`` that training uses, and ``netspec convert`` writes it to a file
that depends only on torch.  One statement per layer, stable names, and a
comment on each pointing back to the prototxt line.
"""
from __future__ import annotations

import keyword
import re
from collections import Counter
from dataclasses import dataclass, field

from ..check import CheckedNet
from ..diagnostics import Diagnostic, NetspecError
from ..graph import Blob, LayerNode
from ..layers.base import fmt_shape
from . import runtime_sources
from .inference import InferencePlan, dead_after


@dataclass
class Generated:
    """Generated module source and the maps a runner needs."""

    source: str
    class_name: str
    inputs: list[str]                      # forward() argument names = input blob names
    outputs: list[str]                     # keys of the dict forward() returns
    attrs: dict[str, str]                  # Caffe layer name -> module attribute
    line_of_layer: dict[int, str] = field(default_factory=dict)   # source line -> layer name
    layers: list[str] = field(default_factory=list)


def identifier(name: str, taken: set[str]) -> str:
    """A stable Python identifier for a Caffe name: 'inception_3a/1x1' -> 'inception_3a_1x1'."""
    base = re.sub(r"\W", "_", name)
    if not base or base[0].isdigit():
        base = "_" + base
    if keyword.iskeyword(base) or base in ("self", "torch", "nn", "F", "math"):
        base += "_"
    ident, n = base, 1
    while ident in taken:
        n += 1
        ident = f"{base}_{n}"
    taken.add(ident)
    return ident


def required_layers(net: CheckedNet, outputs: list[Blob]) -> list[LayerNode]:
    """Layers needed to compute ``outputs``: everything else costs nothing."""
    keep = set()
    for blob in outputs:
        producer = net.graph.producer[blob]
        keep |= net.graph.ancestors(producer) | {producer}
    for node in net.graph.layers():     # layers without tops that act (HDF5Output) always run
        if getattr(node.impl, "side_effect", False) and not node.tops:
            keep |= net.graph.ancestors(node.name) | {node.name}
    return net.graph.subgraph_order(keep)


def default_outputs(net: CheckedNet) -> list[Blob]:
    """Caffe's net outputs: final blob versions no layer consumes, plus every loss top."""
    consumed = {b for n in net.graph.layers() for b in n.bottoms}
    outs = []
    for node in net.graph.layers():
        for blob, w in zip(node.tops, node.loss_weights):
            if (blob not in consumed or w != 0) and blob not in outs:
                outs.append(blob)
    return outs


def generate(net: CheckedNet, outputs: list[Blob] | None = None, class_name: str | None = None,
             fuse: bool = False, inference: bool = False) -> Generated:
    """Generate the module source for ``net`` computing ``outputs`` (default: net outputs).

    ``fuse``: run a Scale that directly follows a BatchNorm inside the BatchNorm's kernel, and
    ``del`` each blob after its last reader, so a large activation autograd does not need is freed
    at once rather than at the end of ``forward`` (the training executor asks for both;
    ``netspec convert`` and per-layer timing keep one plain statement per layer).
    ``inference``: the inference build (``netspec.compile.inference``): BatchNorm/Scale/Bias
    folded into the layer before them by a generated ``fold()``, MAX pooling without argmax.
    """
    outputs = outputs if outputs is not None else default_outputs(net)
    layers = required_layers(net, outputs)
    _require_shapes(net, layers)
    class_name = class_name or identifier(_camel(net.name or "Net"), set())
    w = _Writer(net, layers, outputs, class_name, fuse and not inference)
    if inference:
        w.plan = InferencePlan(net, layers, outputs)
        w.taken |= w.plan.runtime
        w.attr_names.add("fold")            # the generated method; a layer named so is renamed
    return w.write()


def output_keys(outputs: list[Blob]) -> list[str]:
    """forward()'s dict keys: the blob name, or ``name@version`` when several versions are asked."""
    names = [b.name for b in outputs]
    return [b.name if names.count(b.name) == 1 else str(b) for b in outputs]


def _camel(name: str) -> str:
    parts = re.split(r"\W|_", name)
    return "".join(p[:1].upper() + p[1:] for p in parts if p) or "Net"


def _require_shapes(net: CheckedNet, layers: list[LayerNode]) -> None:
    """Fail once per layer whose tops are unknown although its bottoms are known (the roots)."""
    diags = []
    for node in layers:
        unknown = [b.name for b in node.tops if net.shapes.get(b) is None]
        if unknown and all(net.shapes.get(b) is not None for b in node.bottoms):
            diags.append(Diagnostic("E0500", f"cannot compile: the shape of blob "
                                    f"'{unknown[0]}' (layer '{node.name}', {node.type}) is unknown",
                                    net.source.span(node.path + ("name",)),
                                    help=[f"give it with --input-shape {unknown[0]}=N,C,H,W "
                                          "(input_shapes= in Python)"]))
    if diags:
        raise NetspecError(diags)


class _Writer:
    def __init__(self, net: CheckedNet, layers, outputs, class_name: str, fuse: bool = False):
        self.net, self.layers, self.outputs, self.class_name = net, layers, outputs, class_name
        # attributes (self.x) and locals live in separate namespaces; locals avoid helper names
        self.attr_names: set[str] = set(_MODULE_NAMES)
        self.taken: set[str] = {r for n in layers for r in n.impl.runtime}
        self.attrs: dict[str, str] = {}
        self.vars: dict[Blob, str] = {}
        self.lines: list[str] = []
        self.line_of_layer: dict[int, str] = {}
        self.fuse = fuse
        self.bn_scale = self._bn_scale_pairs() if fuse else {}
        self.scale_in_bn = {scale.name: bn for bn, scale in self.bn_scale.items()}
        self.plan: InferencePlan | None = None

    def _bn_scale_pairs(self) -> dict[str, LayerNode]:
        """BatchNorm layer -> the Scale right after it whose affine can run inside its kernel.

        Caffe splits batch normalisation into BatchNorm and Scale; F.batch_norm does both in
        one native kernel each way (issue 8: the separate Scale cost a compiled ResNet-56 about
        8% against nn.BatchNorm2d).  Only when nothing else reads the BatchNorm's top, it is not
        an output, and the Scale is per-channel on axis 1.
        """
        readers = Counter(b for n in self.layers for b in n.bottoms)
        force = self.net.source.net.force_backward
        pairs = {}
        for bn, scale in zip(self.layers, self.layers[1:]):
            top = bn.tops[0] if bn.type == "BatchNorm" and len(bn.tops) == 1 else None
            shape = self.net.shapes.get(top) if top is not None else None
            if (shape is None or len(shape) < 2 or scale.type != "Scale" or list(scale.bottoms) != [top]
                    or readers[top] != 1 or top in self.outputs or "weight" not in scale.impl.blobs
                    or not (scale.propagate_down[0] or force)):
                continue
            axis, blob = scale.impl.blob_axes([shape])
            if axis == 1 and tuple(blob) == (shape[1],):
                pairs[bn.name] = scale
        return pairs

    def write(self) -> Generated:
        inputs = self._inputs()
        for node in self.layers:
            node.impl.attr = self.attrs[node.name] = identifier(node.name, self.attr_names)
        needed = sorted({r for n in self.layers for r in n.impl.runtime} | (self.plan.runtime if self.plan else set()))
        if self.plan:
            self.plan.name_buffers(self.attrs, lambda base: identifier(base, self.attr_names))
        header = _HEADER.format(path=self.net.source.path, phase=self.net.state.phase_name)
        self.lines = header.splitlines() + [""]
        # imports some layers need (Python layers' modules, HDF5Output's writer)
        imports = list(dict.fromkeys(line for n in self.layers for line in getattr(n.impl, "imports", ())))
        if imports:
            self.lines[1] = self.lines[1].replace("depends only on torch", "depends on torch and the imports below")
            self.lines += imports + [""]
        helpers = runtime_sources(needed)
        if helpers:
            self.lines += helpers.splitlines() + ["", ""]
        self._class(inputs)
        return Generated("\n".join(self.lines) + "\n", self.class_name, [self.vars[b] for b in inputs],
                         output_keys(self.outputs), dict(self.attrs), self.line_of_layer,
                         [n.name for n in self.layers])

    def _inputs(self) -> list[Blob]:
        """Data-layer tops that a compiled layer reads or that are asked for."""
        used = {b for n in self.layers for b in n.bottoms} | set(self.outputs)
        inputs = []
        for node in self.layers:
            if node.impl.is_data and not node.impl.generates:
                for blob in (b for b in node.tops if b in used):
                    self.vars[blob] = identifier(blob.name, self.taken)
                    inputs.append(blob)
        return inputs

    def _where(self, node: LayerNode) -> str:
        line = f":{node.span.line}" if node.span else ""
        return f"{_basename(self.net.source.path)}{line} {node.name} ({node.type})"

    def _class(self, inputs: list[Blob]) -> None:
        L = self.lines
        L.append(f"class {self.class_name}(nn.Module):")
        L.append(f'    """{self.net.name or "Net"} ({self.net.state.phase_name}), generated by netspec."""')
        L.append("")
        L.extend(_constant("INPUTS", [repr(b.name) for b in inputs], "()"))
        L.extend(_constant("OUTPUTS", [repr(k) for k in output_keys(self.outputs)], "()"))
        L.extend(_constant("CAFFE_LAYERS", [f"{k!r}: {v!r}" for k, v in self.attrs.items()], "{}"))
        L.append("")
        L.append("    def __init__(self):")
        L.append("        super().__init__()")
        for node in self.layers:
            src = node.impl.module([self.net.shapes.get(b) for b in node.bottoms])
            if src is not None:
                L.append(f"        self.{node.impl.attr} = {src}  # {self._where(node)}")
        self._sharing()
        if self.plan:
            L.extend(self.plan.init_lines())
        L.append("")
        args = ", ".join(["self"] + [self.vars[b] for b in inputs])
        L.append(f"    def forward({args}):")
        absorbed = self.plan.absorbed if self.plan else {}
        dead_at = dead_after(absorbed, self.layers, self.outputs) if self.fuse or self.plan else {}
        for i, node in enumerate(self.layers):
            self._statement(node)
            dead = list(dict.fromkeys(self.vars[b] for b in dead_at.get(i, ())))
            if dead:        # free what nothing reads any more (autograd keeps what it saved)
                L.append(f"        del {', '.join(dead)}")
        ret = ", ".join(f"{k!r}: {self.vars[b]}" for k, b in zip(output_keys(self.outputs), self.outputs))
        L.append(f"        return {{{ret}}}")
        if self.plan and self.plan.folds:
            L.extend([""] + self.plan.fold_lines(self.attrs))

    def _sharing(self) -> None:
        for node in self.layers:
            for i, _ in enumerate(node.impl.blobs):
                owner = self.net.shared.get(f"{node.name}/{i}")
                if owner and owner[0] in self.attrs:
                    mine = f"self.{node.impl.attr}.{node.impl.blobs[i]}"
                    theirs = f"self.{self.attrs[owner[0]]}.{self.net.graph.layer(owner[0]).impl.blobs[owner[1]]}"
                    self.lines.append(f"        {mine} = {theirs}  # shared param "
                                      f"'{node.lp.param[i].name}'")

    def _statement(self, node: LayerNode) -> None:
        if node.impl.is_data and not node.impl.generates:
            return
        # propagate_down: false stops the gradient into that bottom; the layer's own
        # parameters still receive theirs; force_backward overrides it (Caffe's rules)
        force = self.net.source.net.force_backward
        bottoms = [self.vars[b] if down or force else f"{self.vars[b]}.detach()"
                   for b, down in zip(node.bottoms, node.propagate_down)]
        shapes = [self.net.shapes.get(b) for b in node.bottoms]
        if self.plan and node.name in self.plan.absorbed:     # folded into an earlier layer
            for top, bottom in zip(node.tops, node.bottoms):
                self.vars[top] = self.vars[bottom]
            self.lines.append(f"        # {self._where(node)}: folded into {self.plan.absorbed[node.name]}")
            return
        expr, note = self.plan.expression(node, bottoms, shapes) if self.plan else (None, "")
        expr = expr or node.impl.forward(bottoms, shapes)
        if node.name in self.bn_scale:
            scale = self.bn_scale[node.name].impl.attr
            expr = f"self.{node.impl.attr}({bottoms[0]}, self.{scale}.weight, self.{scale}.bias)"
            note = f" (with {self.bn_scale[node.name].name}'s scale and bias)"
        elif node.name in self.scale_in_bn:
            expr, note = bottoms[0], f" (applied inside {self.scale_in_bn[node.name]}'s batch_norm)"
        tops = [self._var(b) for b in node.tops]
        shown = ", ".join(fmt_shape(self.net.shapes.get(b)) for b in node.tops)
        target = ", ".join(tops) if tops else "_"
        self.line_of_layer[len(self.lines) + 1] = node.name
        self.lines.append(f"        {target} = {expr}  # {self._where(node)}{note} -> {shown}")

    def _var(self, blob: Blob) -> str:
        name = blob.name if blob.version == 0 else f"{blob.name}_{blob.version}"
        self.vars[blob] = identifier(name, self.taken)
        return self.vars[blob]


def _constant(name: str, items: list[str], brackets: str, width: int = 100) -> list[str]:
    """A class constant (tuple or dict) on one line when it fits in ``width``, else one entry
    per line: a GoogLeNet's CAFFE_LAYERS is 140 entries, too many for one line."""
    open_, close = brackets
    body = ", ".join(items) + ("," if open_ == "(" and len(items) == 1 else "")
    line = f"    {name} = {open_}{body}{close}"
    if len(line) <= width:
        return [line]
    return [f"    {name} = {open_}"] + [f"        {item}," for item in items] + [f"    {close}"]


def _basename(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


# nn.Module attributes a layer attribute must not shadow
_MODULE_NAMES = ("training", "forward", "train", "eval", "to", "cpu", "cuda", "type", "float",
                 "double", "half", "apply", "modules", "children", "parameters", "buffers",
                 "state_dict", "load_state_dict", "zero_grad", "register_buffer", "INPUTS",
                 "OUTPUTS", "CAFFE_LAYERS")

_HEADER = '''\
# Generated by netspec from {path} (phase {phase}).
# Regenerate with `netspec convert`; depends only on torch.
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
'''
