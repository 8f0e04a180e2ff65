"""Compile a small net from prototxt text, for layer tests (nothing is written to disk)."""
from netspec.check import check_net
from netspec.compile.module import compile_net
from netspec.diagnostics import Diagnostics
from netspec.lower import NetSource, NetState
from netspec.parse import parse_text
from netspec.proto import caffe_pb2
from netspec.schema import to_message


def compile_text(text, phase="TRAIN", outputs=None):
    """Parse, check and compile ``text``; returns netspec's ``Compiled``."""
    diags = Diagnostics()
    msg, smap = to_message(parse_text(text), caffe_pb2.NetParameter, diags)
    diags.check()
    net = check_net(NetSource(msg, smap, (), "<test>"), NetState.of(phase))
    return compile_net(net, outputs, seed=0)
