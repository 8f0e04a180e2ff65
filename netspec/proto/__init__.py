"""Caffe protobuf schema (generated from proto/caffe.proto).

``caffe_pb2`` is generated code: regenerate it with ``python tools/gen_proto.py``
after editing ``proto/caffe.proto``; never edit it by hand.  Its messages live in a private
descriptor pool, so pycaffe's own ``caffe.proto`` (in protobuf's default pool) can share
the process; the wire and text formats are the same.
"""
from . import caffe_pb2

__all__ = ["caffe_pb2"]
