"""pycaffe's ``NetSpec`` API for netspec: write nets in Python, print prototxt or compile.

Generator scripts written for pycaffe run unchanged with ``caffe`` replaced by
``netspec``::

    from netspec import layers as L, params as P, to_proto
    data, label = L.DummyData(shape=[dict(dim=[64, 1, 28, 28]), dict(dim=[64])], ntop=2)
    conv = L.Convolution(data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    pool = L.Pooling(conv, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    loss = L.SoftmaxWithLoss(L.InnerProduct(pool, num_output=10), label)
    print(to_proto(loss))                # the prototxt pycaffe prints, byte for byte

    n = netspec.NetSpec(); n.data = ...; net = n.to_net("TRAIN")    # a netspec.Net

The semantics (naming, keyword routing) are documented in ``netspec/layers/spec.py``.
"""
from __future__ import annotations

from .layers.spec import (Function, NetProto, Top, assign_proto, layers, params, pycaffe_text,
                          to_proto)
from .layers.spec import NetSpec as _NetSpec
from .proto import caffe_pb2

__all__ = ["NetSpec", "NetProto", "Top", "Function", "layers", "params", "to_proto",
           "assign_proto", "pycaffe_text", "compile_text"]


class NetSpec(_NetSpec):
    """pycaffe's ``caffe.NetSpec``: ``n.conv1 = L.Convolution(n.data, ...)`` names the top
    and its layer; ``to_proto()`` gives the NetParameter, ``to_net()`` the compiled net."""

    def to_net(self, phase: str = "TEST", **kwargs):
        """Check and compile the net directly: a ``netspec.Net`` (``kwargs`` as ``netspec.Net``).
        Diagnostics point into the text ``str(self.to_proto())``, named ``<NetSpec>``."""
        return compile_text(str(self.to_proto()), phase, **kwargs)


def compile_text(text: str, phase: str = "TEST", path: str = "<NetSpec>", **kwargs):
    """Check and compile prototxt ``text`` into a ``netspec.Net``; diagnostics point into it."""
    from .api import Net
    from .diagnostics import Diagnostics
    from .lower import NetSource
    from .parse import parse_text
    from .schema import to_message
    diags = Diagnostics()
    msg, smap = to_message(parse_text(text, path), caffe_pb2.NetParameter, diags)
    diags.check()
    return Net(NetSource(msg, smap, (), path), phase, **kwargs)
