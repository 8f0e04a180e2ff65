"""``netspec.Net``: a compiled net for notebooks, in the spirit of pycaffe's ``caffe.Net``.

    net = netspec.Net("models/digits/deep_plain.prototxt", phase="TEST", weights="w.netspec")
    out = net.forward()                  # reads one batch from the net's data layers
    net.blobs["conv3"].shape, net.params["conv1"][0].shape, out["main_accuracy"]
    net.backward()                       # Caffe's Net::Backward from the losses
    net.diffs["data"], net.params["conv1"][0].grad

Everything is a torch tensor.  Blob versions follow Caffe's in-place rule: for a
blob rewritten in place (``conv1`` -> ReLU -> ``conv1``) ``blobs`` holds the
last version's data and ``diffs`` the gradient of the first version, exactly
what Caffe's single blob ends up holding after forward and backward.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

from .check import CheckedNet, check_net, load
from .compile.codegen import default_outputs, output_keys
from .compile.inference import FoldWatch, check_optimize, max_build
from .compile.module import Compiled, compile_net, inference_twin, runtime_error
from .diagnostics import Diagnostic, NetspecError
from .graph import Blob, LayerNode
from .lower import NetSource, NetState


class Net:
    """A net lowered for one phase, compiled, with pycaffe-style ``blobs``/``params``.

    ``weights``: a netspec snapshot (``.netspec``, e.g. from ``Solver.snapshot``) or a
    Caffe ``.caffemodel``; copied by layer name.  Blobs it lacks keep their fillers
    (listed in ``missing``).  ``input_shapes`` gives shapes of inputs without a data
    source, as ``--input-shape`` does.  ``all_blobs=False`` compiles only the net
    outputs (less memory; ``blobs`` then holds only those and the inputs).

    ``optimize`` (TEST phase): ``"default"`` runs ``forward`` under ``torch.no_grad()`` (or
    ``inference_mode``) through the inference build: BatchNorm/Scale/Bias folded into the
    layer before them once (refolded when a blob changes in place), MAX pooling without
    argmax.  ``params`` still holds Caffe's unfolded blobs, and with autograd on ``forward``
    runs the exact build, so ``backward`` and ``diffs`` are Caffe's.  ``"max"`` adds
    channels_last and ``torch.compile`` on CUDA (on the CPU both measured no faster, see
    docs/benchmarks.md, so there it is ``"default"``); ``"none"`` always runs the exact build.
    """

    def __init__(self, path: str | Path, phase: str = "TEST", weights: str | Path | None = None,
                 input_shapes: dict | None = None, stages=(), level: int = 0, *,
                 seed: int = 0, device: str | torch.device = "cpu", all_blobs: bool = True,
                 optimize: str = "default"):
        self.path = path.path if isinstance(path, NetSource) else str(path)
        self.seed, self.device = seed, torch.device(device)
        phase = phase if isinstance(phase, int) else str(phase).upper()   # netspec.TEST or "TEST"
        self.net: CheckedNet = check_net(_net_source(path), NetState.of(phase, level, stages), input_shapes)
        self._first, self._last = _versions(self.net)
        wanted = list(self._last.values()) if all_blobs else default_outputs(self.net)
        # the first version too: its gradient is what Caffe's in-place blob diff holds
        asked = list(dict.fromkeys(wanted + [self._first[b.name] for b in wanted]))
        self.compiled: Compiled = compile_net(self.net, outputs=asked, seed=seed)
        self.compiled.module.to(self.device).train(self.net.state.phase_name == "TRAIN")
        self._key = dict(zip(asked, output_keys(asked)))
        self.missing: list[str] = load_weights_into(self.compiled, weights) if weights else []
        self.optimize = check_optimize(optimize)
        self.inference: Compiled | None = None
        if self.net.state.phase_name == "TEST" and optimize != "none":
            self.inference = inference_twin(self.compiled, wanted)
            self._watch = FoldWatch(self.inference.module)
            self._inference_key = dict(zip(wanted, output_keys(wanted)))
            self._run = max_build(self.inference.module, self.device) if optimize == "max" \
                else self.inference.module
        self._out: dict[str, torch.Tensor] = {}
        self._feeder = None
        self.blobs: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.diffs: OrderedDict[str, torch.Tensor] = OrderedDict()

    # -- structure --------------------------------------------------------------------
    @property
    def inputs(self) -> list[str]:
        """The blobs ``forward`` reads: data layer tops and Input blobs."""
        return list(self.compiled.generated.inputs)

    @property
    def outputs(self) -> list[str]:
        """Caffe's net outputs: blobs no layer consumes, and every loss top."""
        return [b.name for b in default_outputs(self.net)]

    @property
    def layers(self) -> OrderedDict[str, LayerNode]:
        """Layer name -> its lowered node (``.type``, ``.bottoms``, ``.tops``, ``.lp``), in order."""
        return OrderedDict((n.name, n) for n in self.net.graph.layers())

    @property
    def params(self) -> OrderedDict[str, list[torch.Tensor]]:
        """Layer name -> its learnable blobs in Caffe order (weight, bias, ...); gradients in ``.grad``."""
        state = dict(self.compiled.module.named_parameters()) | dict(self.compiled.module.named_buffers())
        out = OrderedDict()
        for layer in self.compiled.generated.layers:
            n = len(self.net.graph.layer(layer).impl.blobs)
            if n:
                out[layer] = [state[self.compiled.blob_key(layer, i)] for i in range(n)]
        return out

    # -- forward / backward -----------------------------------------------------------
    def forward(self, **inputs) -> dict[str, torch.Tensor]:
        """Run the net on ``inputs`` (blob name -> tensor or array); returns the net outputs.

        Inputs not given are read from the net's data layers (one batch), if it has any.
        Autograd records the pass unless called under ``torch.no_grad()``.
        """
        feed = self._inputs(inputs)
        compiled, key, run = self.compiled, self._key, self.compiled.module
        if self.inference is not None and not torch.is_grad_enabled():
            compiled, key, run = self.inference, self._inference_key, self._run
            self._watch.check()
        try:
            result = run(**feed)
        except NetspecError:
            raise
        except Exception as e:                  # a layer failed: name it and its line
            raise runtime_error(e, compiled) from None
        self._out = {str(b): result[k] for b, k in key.items()} | {
            k: v for k, v in feed.items() if k not in result}
        self.blobs = OrderedDict((name, self._out[str(b)].detach()) for name, b in self._last.items()
                                 if str(b) in self._out)
        for name, t in feed.items():
            self.blobs.setdefault(name, t.detach())
        self.diffs = OrderedDict()
        return {name: self.blobs[name] for name in self.outputs if name in self.blobs}

    def backward(self, diffs: dict | None = None) -> OrderedDict[str, torch.Tensor]:
        """Backpropagate (Caffe's Net::Backward); fills ``diffs`` and the params' ``.grad``.

        Without ``diffs`` the objective is sum_i loss_weight_i * loss_i over every loss top,
        with gradient scopes ignored as Caffe does (the Solver applies them under a BP mode).
        ``diffs`` (blob name -> tensor) seeds the top diffs instead.  Parameter gradients
        accumulate across calls, as in Caffe and torch: call ``clear_param_diffs`` between.
        """
        tensors, seeds = self._seeds(diffs)
        tracked = {name: self._out[str(b)] for name, b in self._first.items() if str(b) in self._out}
        tracked = {n: t for n, t in tracked.items() if t.requires_grad}
        for t in tracked.values():
            if not t.is_leaf:
                t.retain_grad()
            t.grad = None
        torch.autograd.backward(tensors, seeds, retain_graph=True)
        self.diffs = OrderedDict((n, tracked[n].grad if n in tracked and tracked[n].grad is not None
                                  else torch.zeros_like(self.blobs[n])) for n in self.blobs)
        return self.diffs

    def clear_param_diffs(self) -> None:
        """Zero every parameter gradient (Caffe's Net::ClearParamDiffs)."""
        for p in self.compiled.module.parameters():
            p.grad = None

    def save(self, path: str | Path) -> Path:
        """Write the weights as a netspec snapshot (atomically); ``Net(weights=...)`` and
        ``netspec train --weights`` read it."""
        from .interop.weights import write_snapshot
        return write_snapshot(path, {"iter": 0, "net": self.net.name, "kind": "weights", "weights": {
            k: v.detach().cpu() for k, v in self.compiled.module.state_dict().items()}})

    # -- helpers ----------------------------------------------------------------------
    def _inputs(self, given: dict) -> dict[str, torch.Tensor]:
        feed = {k: torch.as_tensor(v).to(self.device) for k, v in given.items()}
        unknown = [k for k in feed if k not in self.inputs]
        if unknown:
            raise NetspecError([Diagnostic("E0701", f"'{unknown[0]}' is not an input of net '{self.net.name}'",
                                           help=[f"its inputs are {', '.join(self.inputs) or 'none'}"])])
        missing = [k for k in self.inputs if k not in feed]
        if missing and self.has_data_layers:
            batch = next(self.feeder)
            feed |= {k: batch[k].to(self.device) for k in missing if k in batch}
            missing = [k for k in missing if k not in feed]
        if missing:
            shapes = [f"{k}={','.join(map(str, self.net.shapes.get(self._first[k]) or ('?',)))}" for k in missing]
            raise NetspecError([Diagnostic("E0701", f"no data for input blob(s) {', '.join(missing)}",
                                           help=[f"pass them as net.forward({missing[0]}=tensor); "
                                                 f"declared shapes: {' '.join(shapes)}"])])
        if torch.is_grad_enabled():              # so that backward() can report input diffs
            feed = {k: v.detach().requires_grad_(v.is_floating_point()) for k, v in feed.items()}
        return feed

    @property
    def has_data_layers(self) -> bool:
        """Whether the net reads batches from data layers (HDF5Data, Data, ImageData, ...)."""
        return any(n.impl.is_data and not n.impl.generates and n.type != "Input" for n in self.net.graph.layers())

    @property
    def feeder(self):
        """The net's data layers as a ``Feeder`` (made on first use): ``next(net.feeder)`` is
        the batch ``forward()`` would read, blob name -> tensor; ``records()`` counts each
        layer's records and ``batch_sizes()`` its batch."""
        if self._feeder is None:
            from .data import Feeder
            self._feeder = Feeder(self.net, self.net.state.phase, self.seed)
        return self._feeder

    def _seeds(self, diffs: dict | None) -> tuple[list, list]:
        if not self._out:
            raise NetspecError([Diagnostic("E0701", "backward() needs a forward() first")])
        if diffs is None:
            pairs = [(self._out[str(t)], w) for loss in self.net.losses for t, w in loss.tops if w]
            if not pairs:
                raise NetspecError([Diagnostic("E0701", f"net '{self.net.name}' has no loss to backpropagate",
                                               help=["pass top diffs: net.backward({'blob': diff})"])])
            tensors = [t for t, _ in pairs]
            seeds = [torch.full_like(t, w) for t, w in pairs]
        else:
            tensors, seeds = self._given_seeds(diffs)
        if not all(t.requires_grad for t in tensors):
            raise NetspecError([Diagnostic("E0701", "the last forward() recorded no graph to backpropagate",
                                           help=["call forward() outside torch.no_grad()"])])
        return tensors, seeds

    def _given_seeds(self, diffs: dict) -> tuple[list, list]:
        tensors, seeds = [], []
        for name, d in diffs.items():
            if name not in self._last or str(self._last[name]) not in self._out:
                raise NetspecError([Diagnostic("E0701", f"no blob '{name}' to seed a diff into",
                                               help=[f"blobs: {', '.join(self.blobs)}"])])
            t = self._out[str(self._last[name])]
            d = torch.as_tensor(d).to(t.device, t.dtype)
            if d.shape != t.shape:
                raise NetspecError([Diagnostic("E0701", f"diff for '{name}' has shape {tuple(d.shape)}, "
                                               f"the blob has {tuple(t.shape)}")])
            tensors.append(t)
            seeds.append(d)
        return tensors, seeds


def _net_source(path):
    if isinstance(path, NetSource):            # already parsed (NetSpec.to_net)
        return path
    kind, src = load(path)
    if kind != "net":
        from .check.solver import resolve_path
        param = src[0]
        named = param.net or param.train_net or next(iter(param.test_net), "")
        found = resolve_path(named, str(path)) if named else None
        hint = [f"pass the net it names instead: '{found or named}'"] if named else []
        raise NetspecError([Diagnostic("E0800", f"'{path}' is a solver file, not a net",
                                       help=hint + ["netspec.Solver(path) and `netspec train --solver` "
                                                    "take solver files"])])
    return src


def _versions(net: CheckedNet) -> tuple[dict[str, Blob], dict[str, Blob]]:
    """Blob name -> its first and its last version, in forward order."""
    first: dict[str, Blob] = OrderedDict()
    last: dict[str, Blob] = OrderedDict()
    for node in net.graph.layers():
        for b in node.tops:
            first.setdefault(b.name, b)
            last[b.name] = b
    return first, last


def load_weights_into(compiled: Compiled, path: str | Path) -> list[str]:
    """Copy a ``.caffemodel`` or netspec snapshot into ``compiled`` by layer name; returns
    the state_dict keys (snapshot) or layers (caffemodel) left with their fillers."""
    from .interop.caffemodel import load_weights_file      # one loader for every tool
    return load_weights_file(compiled, path)
