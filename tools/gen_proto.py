#!/usr/bin/env python3
"""Regenerate netspec/proto/caffe_pb2.py from proto/caffe.proto.

Runs protoc, as

    python -m grpc_tools.protoc -Iproto --python_out=netspec/proto proto/caffe.proto

would, then moves the schema out of protobuf's default descriptor pool into a
private one: real pycaffe registers its own ``caffe.proto`` (package ``caffe``)
in the default pool, and two files defining ``caffe.Phase`` cannot share a pool,
so without this ``import caffe`` then ``import netspec`` (or the reverse) dies.
Message classes come from ``message_factory.GetMessageClass`` on the private
pool; wire and text formats are unchanged (the descriptors are the same bytes).

Needs grpcio-tools (a test extra).  Run it after every edit of
proto/caffe.proto; tests/test_proto_schema.py fails while the committed
caffe_pb2.py and the schema disagree.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "netspec" / "proto" / "caffe_pb2.py"

_DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
_PRIVATE_POOL = ("# netspec: a private pool (see tools/gen_proto.py), so pycaffe's caffe.proto\n"
                 "# can sit in the default pool of the same process.\n"
                 "_POOL = _descriptor_pool.DescriptorPool()\n"
                 "DESCRIPTOR = _POOL.AddSerializedFile(")
_BUILD_TOP = "_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, 'caffe_pb2', _globals)"
_BUILD_PRIVATE = '''\
def _build_top(file_des, module):
  """Top-level enums and message classes from the private pool (nothing enters the
  default pool or the default symbol database)."""
  from google.protobuf import message_factory as _message_factory
  from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
  for name, enum_des in file_des.enum_types_by_name.items():
    module['_' + name.upper()] = enum_des
    module[name] = _enum_type_wrapper.EnumTypeWrapper(enum_des)
    for value in enum_des.values:
      module[value.name] = value.number
  for name, msg_des in file_des.message_types_by_name.items():
    cls = _message_factory.GetMessageClass(msg_des)
    cls.__module__ = __name__  # so that messages pickle
    module[name] = cls


_build_top(DESCRIPTOR, _globals)'''


def private_pool(source: str) -> str:
    """protoc's caffe_pb2.py, rewritten to build its classes in a private descriptor pool."""
    for old in (_DEFAULT_POOL, _BUILD_TOP):
        if source.count(old) != 1:
            raise RuntimeError(f"gen_proto: protoc output changed; expected one '{old}'")
    source = source.replace(_DEFAULT_POOL, _PRIVATE_POOL).replace(_BUILD_TOP, _BUILD_PRIVATE)
    return source.replace("# source: caffe.proto\n",
                          "# source: caffe.proto (private descriptor pool: tools/gen_proto.py)\n", 1)


def main() -> int:
    try:
        from grpc_tools import protoc
    except ImportError:
        sys.stderr.write("gen_proto: grpcio-tools is not installed "
                         "(pip install grpcio-tools)\n")
        return 2
    os.chdir(REPO)  # paths below are relative, as in the documented command
    with tempfile.TemporaryDirectory() as tmp:
        rc = protoc.main(["grpc_tools.protoc", "-Iproto", f"--python_out={tmp}", "proto/caffe.proto"])
        if rc != 0:
            sys.stderr.write(f"gen_proto: protoc failed with exit code {rc}\n")
            return rc
        source = private_pool((Path(tmp) / "caffe_pb2.py").read_text())
    tmp_out = OUT.with_suffix(".py.tmp")
    tmp_out.write_text(source)
    tmp_out.replace(OUT)        # atomic: a concurrent import never sees half a module
    print(f"gen_proto: wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    # no options: --help prints the docstring instead of writing the files
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    sys.exit(main())
