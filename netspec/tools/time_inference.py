"""``netspec time --phase TEST``: forward timing of the inference build, per layer and in total.

The inference build (``netspec.compile.inference``) has no backward, so only forward is
timed, under ``torch.inference_mode``.  Per layer, the generated forward runs statement by
statement as in ``netspec.tools.timing``; a layer folded into the one before it shows no
time of its own (its work is in that layer's row).
"""
from __future__ import annotations

import torch

from ..check import CheckedNet
from ..compile.module import compile_net
from .timing import GLUE, Clock, LayerTime, Timing, layer_groups, pick_device, statements, synthetic_inputs


def time_inference(net: CheckedNet, iterations: int = 50, warmup: int = 5, gpu: bool | str = False,
                   seed: int = 0, channels_last: bool = False) -> Timing:
    """Average forward milliseconds of ``net``'s inference build, per layer and in total."""
    device = pick_device(gpu)
    compiled = compile_net(net, seed=seed, inference=True)
    compiled.module.to(device)
    inputs = synthetic_inputs(compiled, device, seed)
    if channels_last:
        compiled.module.to(memory_format=torch.channels_last)
        inputs = {k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
                  for k, v in inputs.items()}
    stmts, _, glob = statements(compiled)
    groups = layer_groups(stmts)
    clock, totals, fwd = Clock(device), {}, {}
    with torch.inference_mode():
        for it in range(warmup + iterations):
            into = totals if it >= warmup else {}
            started = clock.start()
            compiled.module(**inputs)
            clock.stop("forward", started, into)
        for it in range(warmup + iterations):
            env, into = {"self": compiled.module, **inputs}, fwd if it >= warmup else {}
            for layer, group in groups:
                started = clock.start()
                for s in group:
                    exec(s.code, glob, env)
                clock.stop(layer, started, into)
    clock.flush()
    n = max(iterations, 1)
    types = {node.name: node.type for node in net.graph.layers()}
    layers = [LayerTime(l, types.get(l, "-"), ms / n) for l, ms in fwd.items() if l != GLUE or ms]
    return Timing(net.name, str(device), iterations, layers, totals.get("forward", 0.0) / n, 0.0)
