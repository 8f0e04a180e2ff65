"""The inference build of a net (``optimize='default'`` or ``'max'``; TEST phase).

The exact build keeps one statement per Caffe layer, as training needs.  For inference the
same module (same attributes, same state_dict: Caffe's unfolded blobs) gets a different
``forward`` and a ``fold()`` method:

* BatchNorm with stored statistics, Scale and Bias (learned, per channel) are per-channel
  affines.  A run of them whose intermediate blobs nothing else reads is composed into one,
  then folded into the Convolution or InnerProduct right before it (new weight and bias,
  computed in float64), or applied as one ``addcmul`` where no such layer precedes it.
  ``fold()`` computes the folded tensors (non-persistent buffers ``fold_*``) from the live
  blobs; the constructor and ``load_state_dict`` run it, and so must anyone who changes a
  blob in place (``netspec.Net`` checks the tensors' version counters before each forward).
* MAX pooling computes no argmax unless a mask top is asked for (torch's NCHW CPU kernel
  always does; ``caffe_max_pool_fast`` uses oneDNN's pooling, same windows, same values).
* Convolution and InnerProduct call ``F.conv2d``/``F.linear`` directly (no module dispatch);
  ReLU and Eltwise SUM run in place on a fresh tensor that nothing else reads.

Blobs asked for as outputs are never folded away.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from ..graph import Blob, LayerNode

OPTIMIZE_LEVELS = ("none", "default", "max")

FOLD_HELPERS = ("caffe_fold", "caffe_affine", "caffe_bn_affine")
# layers whose top is a new tensor no other blob aliases (so in-place ops on it are safe)
_FRESH = {"Convolution", "Deconvolution", "InnerProduct", "Pooling", "Eltwise", "Concat", "LRN",
          "BatchNorm", "Scale", "Bias", "ReLU", "Softmax", "Sigmoid", "TanH"}


@dataclass
class Fold:
    """A producer (Convolution/InnerProduct, or None) and the per-channel affines after it."""

    producer: LayerNode | None
    affines: list[LayerNode]

    @property
    def head(self) -> LayerNode:
        return self.producer or self.affines[0]

    @property
    def top(self) -> Blob:
        return self.affines[-1].tops[0]


def check_optimize(level: str) -> str:
    """Validate an ``optimize`` level; a NetspecError names the choices."""
    from ..diagnostics import Diagnostic, NetspecError
    if level not in OPTIMIZE_LEVELS:
        raise NetspecError([Diagnostic("E0802", f"unknown optimize level '{level}'",
                                       help=[f"use one of {', '.join(OPTIMIZE_LEVELS)}"])])
    return level


def is_affine(net, node: LayerNode) -> bool:
    """BatchNorm with stored statistics, or a learned Scale/Bias per channel (axis 1)."""
    if len(node.bottoms) != 1 or len(node.tops) != 1:
        return False
    shape = net.shapes.get(node.bottoms[0])
    if shape is None or len(shape) < 2:
        return False
    if node.type == "BatchNorm":
        return bool(node.impl.global_stats)
    if node.type == "Scale" and "weight" in node.impl.blobs or node.type == "Bias" and node.impl.blobs:
        axis, blob = node.impl.blob_axes([shape])
        return axis == 1 and tuple(blob) == (shape[1],)
    return False


def is_producer(net, node: LayerNode) -> bool:
    """A Convolution or InnerProduct whose output channels are axis 1 (weights can absorb an affine)."""
    if len(node.bottoms) != 1 or len(node.tops) != 1:
        return False
    shape = net.shapes.get(node.bottoms[0])
    if shape is None:
        return False
    if node.type == "Convolution":
        return node.impl.geometry(shape)[0] == 1 and len(shape) - 2 in (1, 2, 3)
    if node.type == "InnerProduct":
        return node.impl._k(shape)[0] == 1
    return False


class InferencePlan:
    """What the inference build emits for each layer of one net (see the module docstring)."""

    def __init__(self, net, layers: list[LayerNode], outputs: list[Blob]):
        self.net, self.outputs = net, set(outputs)
        self.readers: dict[Blob, list[LayerNode]] = defaultdict(list)
        for n in layers:
            for b in dict.fromkeys(n.bottoms):
                self.readers[b].append(n)
        self.folds: dict[str, Fold] = {}        # head layer -> its fold
        self.absorbed: dict[str, str] = {}      # layer folded away -> the head it is folded into
        self._find_folds(layers)
        self.buffers: dict[str, tuple[str, str]] = {}   # head layer -> (weight/scale, bias/shift) attrs
        self.fresh: set[Blob] = set()
        self.runtime = set(FOLD_HELPERS) if self.folds else set()
        if any(self._max_pool(n) for n in layers):
            self.runtime.add("caffe_max_pool_fast")

    # -- planning ----------------------------------------------------------------------
    def _sole_reader(self, blob: Blob) -> LayerNode | None:
        readers = self.readers.get(blob, [])
        if len(readers) == 1 and blob not in self.outputs and readers[0].bottoms == [blob]:
            return readers[0]
        return None

    def _find_folds(self, layers) -> None:
        for node in layers:
            if node.name in self.absorbed:
                continue
            producer = node if is_producer(self.net, node) else None
            if producer is None and not is_affine(self.net, node):
                continue
            affines = [] if producer else [node]
            nxt = self._sole_reader(node.tops[0])
            while nxt is not None and is_affine(self.net, nxt):
                affines.append(nxt)
                nxt = self._sole_reader(nxt.tops[0])
            if affines:
                fold = Fold(producer, affines)
                self.folds[fold.head.name] = fold
                self.absorbed |= {a.name: fold.head.name for a in affines if a is not fold.head}

    def _max_pool(self, node: LayerNode) -> bool:
        return node.type == "Pooling" and node.impl.method == "MAX" and len(node.tops) == 1

    # -- emitted source --------------------------------------------------------------------
    def name_buffers(self, attrs: dict[str, str], new_attr) -> None:
        """Choose the attribute names of the folded tensors (``new_attr(base)`` -> unique name)."""
        for head, fold in self.folds.items():
            a = attrs[head]
            kinds = ("weight", "bias") if fold.producer else ("scale", "shift")
            self.buffers[head] = tuple(new_attr(f"fold_{a}_{k}") for k in kinds)

    def init_lines(self) -> list[str]:
        lines = [f"        self.register_buffer({n!r}, None, persistent=False)"
                 for pair in self.buffers.values() for n in pair]
        if lines:
            lines += ["        self.fold()",
                      "        self.register_load_state_dict_post_hook(lambda module, keys: module.fold())"]
        return lines

    def fold_lines(self, attrs: dict[str, str]) -> list[str]:
        """The ``fold`` method: each folded tensor from the live Caffe blobs."""
        if not self.folds:
            return []
        L = ["    def fold(self):",
             '        """Fold BatchNorm/Scale/Bias into the layer before them; rerun after changing a blob."""',
             "        with torch.no_grad():"]
        for head, fold in self.folds.items():
            w, b = self.buffers[head]
            affine = f"*caffe_affine({', '.join('*' + self._affine(attrs[a.name], a) for a in fold.affines)})"
            if fold.producer is None:
                shape = self.net.shapes[fold.head.bottoms[0]]
                dtype = f"self.{attrs[head]}.{fold.head.impl.blobs[0]}.dtype"
                call = f"caffe_fold(None, None, {affine}, ndim={len(shape)}, dtype={dtype})"
            else:
                p = f"self.{attrs[head]}"
                bias = f"{p}.bias" if "bias" in fold.producer.impl.blobs else "None"
                transpose = fold.producer.type == "InnerProduct" and fold.producer.impl.p.transpose
                call = f"caffe_fold({p}.weight, {bias}, {affine}" + (", transpose=True)" if transpose else ")")
            names = " + ".join(a.name for a in fold.affines)
            L.append(f"            self.{w}, self.{b} = {call}  # {names}")
        return L

    @staticmethod
    def _affine(attr: str, node: LayerNode) -> str:
        m = f"self.{attr}"
        if node.type == "BatchNorm":
            return f"caffe_bn_affine({m})"
        if node.type == "Bias":
            return f"(torch.ones_like({m}.bias, dtype=torch.float64), {m}.bias.double())"
        shift = f"{m}.bias.double()" if "bias" in node.impl.blobs else \
            f"torch.zeros_like({m}.weight, dtype=torch.float64)"
        return f"({m}.weight.double(), {shift})"

    def expression(self, node: LayerNode, bottoms: list[str], shapes: list) -> tuple[str | None, str]:
        """The inference source of ``node``'s tops and a note, or (None, '') for the exact one."""
        expr, note = self._expression(node, bottoms, shapes)
        fold = self.folds.get(node.name)
        top = fold.top if fold else (node.tops[0] if node.tops else None)
        if node.type in _FRESH and top is not None:
            self.fresh.add(top)
        if fold:
            note = f" (folded: {' + '.join(a.name for a in fold.affines)})"
        return expr, note

    def _expression(self, node, bottoms, shapes):
        x = bottoms[0] if bottoms else None
        fold = self.folds.get(node.name)
        if fold and fold.producer is None:
            scale, shift = self.buffers[node.name]
            return f"torch.addcmul(self.{shift}, {x}, self.{scale})", ""
        if node.type in ("Convolution", "InnerProduct") and is_producer(self.net, node):
            w, b = self.buffers[node.name] if fold else ("weight", "bias")
            own = "" if fold else f"{node.impl.attr}."
            bias = f"self.{own}{b}" if fold or "bias" in node.impl.blobs else "None"
            return self._direct(node, x, shapes[0], f"self.{own}{w}", bias, bool(fold)), ""
        if self._max_pool(node):
            return self._pool(node, x), " (no argmax)"
        if node.type == "ReLU" and node.impl.p.negative_slope == 0 and self._reusable(node):
            return f"torch.relu_({x})", " (in place)"
        if node.type == "Eltwise" and node.impl.op == "SUM" and all(c == 1 for c in node.impl.coeff) \
                and len(set(node.bottoms)) == len(node.bottoms):
            # a + b == b + a exactly, so with two bottoms either may take the sum (a ResNet's
            # identity shortcut is read twice, its residual branch once); with more, the first
            candidates = range(len(bottoms)) if len(bottoms) == 2 else range(1)
            j = next((j for j in candidates if self._reusable(node, j)), None)
            if j is not None:
                rest = [b for i, b in enumerate(bottoms) if i != j]
                return f"{bottoms[j]}" + "".join(f".add_({b})" for b in rest), " (in place)"
        return None, ""

    def _reusable(self, node: LayerNode, i: int = 0) -> bool:
        """Whether ``node`` may overwrite bottom ``i``: a fresh tensor only it reads."""
        b = node.bottoms[i]
        return b in self.fresh and self._sole_reader_any(b) is node

    def _sole_reader_any(self, blob: Blob):
        readers = self.readers.get(blob, [])
        return readers[0] if len(readers) == 1 and blob not in self.outputs else None

    def _direct(self, node, x, shape, weight, bias, folded) -> str:
        if node.type == "InnerProduct":
            if node.impl.p.transpose and not folded:
                return f"self.{node.impl.attr}({x})"
            flat = f"{x}.flatten(1)" if len(shape) > 2 else x
            return f"F.linear({flat}, {weight}, {bias})"
        _, kernel, stride, pad, dilation = node.impl.geometry(shape)
        return (f"F.conv{len(kernel)}d({x}, {weight}, {bias}, {tuple(stride)}, {tuple(pad)}, "
                f"{tuple(dilation)}, {node.impl.p.group})")

    def _pool(self, node: LayerNode, x: str) -> str:
        impl = node.impl
        if impl.plain and impl.kernel is None:
            return f"{x}.amax((2, 3), keepdim=True)"
        if impl.plain:
            return f"caffe_max_pool_fast({x}, {impl.kernel}, {impl.stride}, {impl.pad}, {impl.ceil})"
        extra = "" if impl.ceil else ", ceil=False"
        return f"caffe_pool2d({x}, 'MAX', {impl.kernel}, {impl.stride}, {impl.pad}{extra}, indices=False)"


class FoldWatch:
    """Refolds an inference build when one of its blobs changed in place since the last fold
    (torch's version counters: ``copy_``, ``zero_``, optimizer steps; not writes through ``.data``)."""

    def __init__(self, module):
        self.module = module
        persistent = {n for n, _ in module.state_dict(keep_vars=True).items()}
        tensors = dict(module.named_parameters()) | dict(module.named_buffers())
        self.sources = [t for n, t in tensors.items() if n in persistent] if hasattr(module, "fold") else []
        self.seen = self.versions()

    def versions(self) -> list[int]:
        return [t._version for t in self.sources]

    def check(self) -> None:
        """Refold if any blob changed; a few microseconds per hundred blobs otherwise."""
        if self.sources and self.versions() != self.seen:
            self.module.fold()
            self.seen = self.versions()


def max_build(module, device) -> object:
    """``optimize='max'``: channels_last weights and activations and ``torch.compile`` on CUDA.
    On the CPU (docs/benchmarks.md, section 7, 1 thread) torch.compile took 75 s to compile
    ResNet-50 and gained nothing, and channels_last was slower at batch 1 (ResNet-50, AlexNet)
    and faster at batch 16 on some nets, within the noise of the shared machine; so on the CPU
    the inference build runs as it is (CUDA was not measured: no GPU in this session)."""
    import torch
    if torch.device(device).type != "cuda":
        return module
    module.to(memory_format=torch.channels_last)
    compiled = torch.compile(module)

    def run(**inputs):
        return compiled(**{k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                           for k, v in inputs.items()})
    return run


def dead_after(absorbed: dict, layers: list[LayerNode], outputs: list[Blob]) -> dict[int, list[Blob]]:
    """Layer index -> the blobs whose variable nothing reads after that layer (to ``del`` there,
    so that the allocator reuses an activation's memory at once, as a hand-written forward
    does).  The top of a layer in ``absorbed`` (folded into an earlier one) shares its
    bottom's variable: both count as one."""
    root: dict[Blob, Blob] = {}
    last: dict[Blob, int] = {}
    for i, node in enumerate(layers):
        for b in node.bottoms:
            last[root.get(b, b)] = i
        for t, b in zip(node.tops, node.bottoms if node.name in absorbed else node.tops):
            root[t] = root.get(b, b)
    kept = {root.get(b, b) for b in outputs}
    out: dict[int, list[Blob]] = {}
    for blob, i in last.items():
        if blob not in kept:
            out.setdefault(i, []).append(blob)
    return out
