"""Caffe protobuf schema (generated from proto/caffe.proto).

``caffe_pb2`` is generated code: regenerate it with ``python tools/gen_proto.py``
after editing ``proto/caffe.proto``; never edit it by hand.
"""
from . import caffe_pb2

__all__ = ["caffe_pb2"]
