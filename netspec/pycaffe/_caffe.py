# The module `import caffe` finds when real pycaffe is absent (see netspec/pycaffe/finder.py).
import sys

import netspec.proto.caffe_pb2
from netspec.pycaffe import *  # noqa: F401,F403
from netspec.pycaffe import __all__ as _layer_api
# pycaffe's net generation and Net, so `from caffe import layers as L, params as P` works too
from netspec.api import Net  # noqa: F401
from netspec.net_spec import NetSpec, layers, params, to_proto  # noqa: F401

# `from caffe.proto import caffe_pb2` (generator scripts do it): netspec's own schema
__path__ = []
sys.modules.setdefault("caffe.proto", netspec.proto)
sys.modules.setdefault("caffe.proto.caffe_pb2", netspec.proto.caffe_pb2)
proto = netspec.proto

__all__ = list(_layer_api) + ["Net", "NetSpec", "layers", "params", "proto", "to_proto"]
