#!/usr/bin/env python3
"""Regenerate netspec/proto/caffe_pb2.py from proto/caffe.proto.

Equivalent to running, from the repository root:

    python -m grpc_tools.protoc -Iproto --python_out=netspec/proto proto/caffe.proto

Needs grpcio-tools (a test extra).  Run it after every edit of
proto/caffe.proto; tests/test_proto_schema.py fails while the committed
caffe_pb2.py and the schema disagree.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    try:
        from grpc_tools import protoc
    except ImportError:
        sys.stderr.write("gen_proto: grpcio-tools is not installed "
                         "(pip install grpcio-tools)\n")
        return 2
    os.chdir(REPO)  # paths below are relative, as in the documented command
    args = [
        "grpc_tools.protoc",
        "-Iproto",
        "--python_out=netspec/proto",
        "proto/caffe.proto",
    ]
    rc = protoc.main(args)
    if rc != 0:
        sys.stderr.write(f"gen_proto: protoc failed with exit code {rc}\n")
        return rc
    print("gen_proto: wrote netspec/proto/caffe_pb2.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
