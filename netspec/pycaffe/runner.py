"""Run a pycaffe Python layer inside torch: an ``nn.Module`` around one autograd.Function.

Forward hands the layer numpy copies of the bottoms (Caffe calls ``reshape`` and then
``forward``); backward hands it the top diffs and ``propagate_down`` (which bottoms torch
needs a gradient for) and returns what the layer wrote into the bottom and blob diffs.
The layer's learnable blobs are ``nn.Parameter``s (``blob0``, ``blob1``, ...) whose
memory ``self.blobs[i].data`` views on CPU, so a solver's updates are what the layer sees.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from .blob import Blob
from .layer import new_layer
from .loader import load_class


def probe(cls: type, param_str: str, phase: int, bottom_shapes, num_tops: int):
    """Instantiate ``cls`` and run ``setup`` and ``reshape`` on zero bottoms of the given
    shapes (what Caffe's Net does at construction); returns (layer, bottoms, tops)."""
    layer = new_layer(cls, param_str, phase)
    bottom = [Blob(s) for s in bottom_shapes]
    top = [Blob() for _ in range(num_tops)]
    for step in ("setup", "reshape"):
        try:
            getattr(layer, step)(bottom, top)
        except Exception as e:
            e.netspec_step = step           # which of Caffe's calls failed, for the diagnostic
            raise
    return layer, bottom, top


def _array(t: torch.Tensor) -> np.ndarray:
    return np.array(t.detach().cpu().numpy(), copy=True)


class _PythonFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, owner: "PythonLayer", n_bottoms: int, *tensors):
        bottoms, params = tensors[:n_bottoms], tensors[n_bottoms:]
        owner.bind_blobs(params)
        for blob, t in zip(owner.bottom, bottoms):
            blob.bind(_array(t))
        if bottoms:                 # tops in the bottoms' precision, as one Caffe net is one Dtype
            for blob in owner.top:
                blob.astype(owner.bottom[0].data.dtype)
        owner.layer.reshape(owner.bottom, owner.top)
        owner.layer.forward(owner.bottom, owner.top)
        ctx.owner, ctx.n_bottoms, ctx.params = owner, n_bottoms, params
        ctx.like = [(t.dtype, t.device) for t in tensors]
        ctx.arrays = ([b.data for b in owner.bottom], [np.array(t.data, copy=True) for t in owner.top])
        ref = bottoms[0] if bottoms else (params[0] if params else None)
        like = dict(dtype=ref.dtype if ref is not None else torch.get_default_dtype(),
                    device=ref.device if ref is not None else None)
        return tuple(torch.as_tensor(a).to(**like) for a in ctx.arrays[1])

    @staticmethod
    def backward(ctx, *top_diffs):
        owner, n = ctx.owner, ctx.n_bottoms
        bottom_data, top_data = ctx.arrays
        for blob, data in zip(owner.bottom, bottom_data):        # as at this forward
            blob.bind(data)
        for blob, data, d in zip(owner.top, top_data, top_diffs):
            blob.bind(data, _array(d).astype(data.dtype, copy=False).reshape(data.shape))
        # the blobs this forward used (a solver's in-place update shows, as for built-in layers)
        owner.bind_blobs(ctx.params)                                # and fresh zero diffs
        down = list(ctx.needs_input_grad[2:2 + n])
        owner.layer.backward(owner.top, down, owner.bottom)
        diffs = [b.diff for b in owner.bottom] + [b.diff for b in owner.layer.blobs]
        needed = ctx.needs_input_grad[2:]
        grads = [torch.as_tensor(np.array(d)).to(dtype=dt, device=dev) if need else None
                 for d, need, (dt, dev) in zip(diffs, needed, ctx.like)]
        return (None, None, *grads)


class PythonLayer(nn.Module):
    """A pycaffe layer class (``python_param { module layer param_str }``) as an nn.Module.

    ``bottom_shapes`` are the shapes ``setup`` sees at construction (as in Caffe's Net);
    later calls may take other shapes, as ``reshape`` runs before every forward.
    ``search`` lists directories besides ``sys.path`` that hold the module.
    """

    def __init__(self, module: str, layer: str, param_str: str = "", phase: int = 0,
                 bottom_shapes=(), num_tops: int = 1, search=()):
        super().__init__()
        cls = load_class(module, layer, search).cls
        self.layer, self.bottom, self.top = probe(cls, param_str, phase, bottom_shapes, num_tops)
        for i, blob in enumerate(self.layer.blobs):
            # shares memory with the blob: what setup() wrote is the initial value
            self.register_parameter(f"blob{i}", nn.Parameter(torch.from_numpy(blob.data)))

    def params(self) -> list[torch.Tensor]:
        return [getattr(self, f"blob{i}") for i in range(len(self.layer.blobs))]

    def bind_blobs(self, params) -> None:
        """Point the layer's blobs at the parameters' current memory (a view on CPU)."""
        for blob, p in zip(self.layer.blobs, params):
            blob.bind(p.detach().cpu().numpy())         # with a zeroed diff of its dtype

    def forward(self, *bottoms):
        tops = _PythonFunction.apply(self, len(bottoms), *bottoms, *self.params())
        return tops[0] if len(tops) == 1 else tops
