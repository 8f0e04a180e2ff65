"""Compile a checked net into a live ``nn.Module`` by executing the generated source."""
from __future__ import annotations

import linecache
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..check import CheckedNet
from ..diagnostics import Diagnostic, NetspecError
from ..graph import Blob
from ..layers.fillers import fill
from .codegen import Generated, generate

_counter = [0]


@dataclass
class Compiled:
    """A compiled net: the module, the generated code, and Caffe's per-blob settings."""

    module: nn.Module
    generated: Generated
    net: CheckedNet

    def param_specs(self) -> dict[str, tuple[float, float]]:
        """state_dict key -> (lr_mult, decay_mult), shared blobs listed once (by the owner)."""
        specs = {}
        for layer in self.generated.layers:
            node = self.net.graph.layer(layer)
            for i, blob in enumerate(node.impl.blobs):
                if f"{layer}/{i}" in self.net.shared:
                    continue
                specs[f"{node.impl.attr}.{blob}"] = (node.impl.lr_mult(i), node.impl.decay_mult(i))
        return specs

    def blob_key(self, layer: str, i: int) -> str:
        """The state_dict key of Caffe blob ``i`` of ``layer`` (e.g. 'conv1.weight')."""
        node = self.net.graph.layer(layer)
        return f"{self.generated.attrs[layer]}.{node.impl.blobs[i]}"


def load_generated(gen: Generated, tag: str) -> type:
    """Execute generated source and return its module class; tracebacks show the source."""
    _counter[0] += 1
    filename = f"<netspec-{_counter[0]} {tag}>"
    linecache.cache[filename] = (len(gen.source), None, gen.source.splitlines(True), filename)
    namespace: dict = {"__name__": f"netspec_generated_{_counter[0]}"}
    exec(compile(gen.source, filename, "exec"), namespace)
    cls = namespace[gen.class_name]
    cls.__netspec_filename__ = filename
    cls.__netspec_lines__ = gen.line_of_layer
    return cls


def compile_net(net: CheckedNet, outputs: list[Blob] | None = None, seed: int | None = None,
                dtype: torch.dtype | None = None, fuse: bool = False, inference: bool = False) -> Compiled:
    """Build the module for ``net`` (only what ``outputs`` need) and run Caffe's fillers;
    ``fuse`` as in ``codegen.generate`` (BatchNorm + Scale in one kernel); ``inference``: the
    inference build (``netspec.compile.inference``), folded from the filled blobs."""
    gen = generate(net, outputs, fuse=fuse, inference=inference)
    cls = load_generated(gen, f"{net.source.path}:{net.state.phase_name}")
    module = cls()
    compiled = Compiled(module, gen, net)
    initialize(compiled, seed)
    freeze_fixed_blobs(compiled)
    if dtype is not None:
        module.to(dtype)
    refold(module)
    return compiled


def refold(module: nn.Module) -> None:
    """Recompute an inference build's folded tensors from its blobs (a no-op for other builds);
    needed after a blob changed in place (load_state_dict does it by itself)."""
    fold = getattr(type(module), "fold", None)
    if fold is not None:
        fold(module)


def inference_twin(compiled: Compiled, outputs: list[Blob] | None = None) -> Compiled:
    """The inference build of ``compiled.net`` computing ``outputs``, sharing ``compiled``'s
    layer modules (so its blobs, and weights loaded into either, are the same tensors)."""
    gen = generate(compiled.net, outputs, inference=True)
    cls = load_generated(gen, f"{compiled.net.source.path}:{compiled.net.state.phase_name}:inference")
    with torch.device("meta"):                  # allocate nothing: the layers come from ``compiled``
        module = cls()
    for layer, attr in gen.attrs.items():
        if isinstance(getattr(module, attr, None), nn.Module):
            setattr(module, attr, getattr(compiled.module, compiled.generated.attrs[layer]))
    module.train(False)
    refold(module)
    return Compiled(module, gen, compiled.net)


def initialize(compiled: Compiled, seed: int | None = None) -> None:
    """Fill every learnable blob with its layer's filler, in layer order (seeded)."""
    g = torch.Generator()
    g.manual_seed(seed if seed is not None and seed >= 0 else torch.seed())
    state = dict(compiled.module.named_parameters()) | dict(compiled.module.named_buffers())
    for layer in compiled.generated.layers:
        node = compiled.net.graph.layer(layer)
        for i, filler in enumerate(node.impl.fillers()):
            if filler is None or f"{layer}/{i}" in compiled.net.shared:
                continue
            fill(state[compiled.blob_key(layer, i)].data, filler, g)


def freeze_fixed_blobs(compiled: Compiled) -> None:
    """lr_mult 0 blobs get no diff in Caffe (unless force_backward): no grad here either."""
    if compiled.net.source.net.force_backward:
        return
    params = dict(compiled.module.named_parameters())
    for layer in compiled.generated.layers:
        node = compiled.net.graph.layer(layer)
        for i in range(len(node.impl.blobs)):
            p = params.get(compiled.blob_key(layer, i))
            if p is not None and not node.impl.learnable(i):
                p.requires_grad_(False)


def layer_at(exc: BaseException, cls: type) -> str | None:
    """The Caffe layer whose generated statement raised ``exc``, if any."""
    tb = exc.__traceback__
    found = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == getattr(cls, "__netspec_filename__", None):
            found = cls.__netspec_lines__.get(tb.tb_lineno, found)
        tb = tb.tb_next
    return found


def runtime_error(exc: BaseException, compiled: Compiled) -> NetspecError:
    """Turn an exception inside the module into a diagnostic naming the layer and line."""
    layer = layer_at(exc, type(compiled.module))
    if layer is None:
        return NetspecError([Diagnostic("E0701", f"runtime error: {exc}")])
    node = compiled.net.graph.layer(layer)
    return NetspecError([Diagnostic("E0701", f"layer '{layer}' ({node.type}) failed: "
                                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                                    node.span)])



def run_module(module: nn.Module, blobs: dict) -> dict:
    """Call a compiled module with the input blobs it takes, picked by name from ``blobs``."""
    missing = [k for k in module.INPUTS if k not in blobs]
    if missing:
        raise NetspecError([Diagnostic("E0701", f"no data for input blob(s) {', '.join(missing)}",
                                       help=[f"the net reads {', '.join(module.INPUTS)}"])])
    return module(**{k: blobs[k] for k in module.INPUTS})
