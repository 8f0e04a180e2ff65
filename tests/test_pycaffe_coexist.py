"""netspec beside pycaffe in one process, in either import order.

Real pycaffe registers ``caffe.proto`` (package ``caffe``) in protobuf's default descriptor
pool.  The stand-in here does exactly that, with the code protoc generates, before or
after netspec is imported; each order runs in a fresh interpreter so the order is real.
Also: ``import caffe`` finds netspec's pycaffe stand-in only when no pycaffe is installed.
"""
import ast
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

STAND_IN_PB2 = '''\
# What protoc writes for caffe.proto: the schema goes into the default pool.
from google.protobuf import descriptor_pool as _descriptor_pool
from google.protobuf.internal import builder as _builder
DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile({serialized!r})
_globals = globals()
_builder.BuildMessageAndEnumDescriptors(DESCRIPTOR, _globals)
_builder.BuildTopDescriptorsAndMessages(DESCRIPTOR, 'caffe.proto.caffe_pb2', _globals)
'''

STAND_IN_INIT = '''\
"""A stand-in for BVLC pycaffe: registers caffe.proto in the default pool at import."""
from .proto import caffe_pb2
STAND_IN = True
'''

CHECKS = '''
import sys
from google.protobuf import descriptor_pool, text_format
if {caffe_first}:
    import caffe
    import netspec
else:
    import netspec
    import caffe
from caffe.proto import caffe_pb2 as C
from netspec.proto import caffe_pb2 as N

assert getattr(caffe, "STAND_IN", False), "import caffe must find the installed pycaffe"
assert descriptor_pool.Default().FindMessageTypeByName("caffe.NetParameter") is C.NetParameter.DESCRIPTOR
assert N.NetParameter is not C.NetParameter and N.NetParameter.DESCRIPTOR.full_name == "caffe.NetParameter"

# the same bytes both ways: a .caffemodel written by one reads in the other unchanged
text = 'name: "n" layer {{ name: "ip" type: "InnerProduct" blobs {{ shape {{ dim: 2 }} data: 1.5 data: -2 }} }}'
ours = text_format.Parse(text, N.NetParameter())
theirs = C.NetParameter.FromString(ours.SerializeToString())
assert theirs.SerializeToString() == ours.SerializeToString()
assert text_format.MessageToString(theirs) == text_format.MessageToString(ours)
assert N.TRAIN == C.TRAIN == 0 and N.PoolingParameter.MAX == C.PoolingParameter.MAX

# and netspec works: check, compile, run
import torch
with open("net.prototxt", "w") as f:
    f.write('name: "n" input: "data" input_shape {{ dim: 2 dim: 3 }}\\n'
            'layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
            'inner_product_param {{ num_output: 4 }} }}\\n')
net = netspec.Net("net.prototxt", "TEST")
assert net.forward(data=torch.ones(2, 3))["ip"].shape == (2, 4)
print("ok")
'''


def _serialized_schema() -> bytes:
    """The FileDescriptorProto bytes netspec's generated caffe_pb2.py embeds (read as text)."""
    source = (REPO / "netspec" / "proto" / "caffe_pb2.py").read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            return ast.literal_eval(node.args[0])
    raise AssertionError("no AddSerializedFile call in caffe_pb2.py")


@pytest.fixture
def stand_in(tmp_path):
    pkg = tmp_path / "site" / "caffe"
    (pkg / "proto").mkdir(parents=True)
    (pkg / "__init__.py").write_text(STAND_IN_INIT)
    (pkg / "proto" / "__init__.py").write_text("")
    (pkg / "proto" / "caffe_pb2.py").write_text(STAND_IN_PB2.format(serialized=_serialized_schema()))
    return tmp_path / "site"


def _run(code: str, cwd, pythonpath=None):
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pythonpath) if pythonpath else ""}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180)


@pytest.mark.parametrize("caffe_first", [True, False], ids=["caffe-then-netspec", "netspec-then-caffe"])
def test_netspec_and_pycaffe_share_a_process(stand_in, tmp_path, caffe_first):
    r = _run(CHECKS.format(caffe_first=caffe_first), tmp_path, stand_in)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def test_stand_in_conflicts_with_a_default_pool_schema(stand_in, tmp_path):
    """The test can fail: a second caffe.proto in the default pool is what pycaffe rejects."""
    code = textwrap.dedent(f'''
        import caffe
        from google.protobuf import descriptor_pool
        descriptor_pool.Default().AddSerializedFile({_serialized_schema()!r})
    ''')
    r = _run(code, tmp_path, stand_in)
    assert r.returncode != 0 and "duplicate" in r.stderr.lower()


def test_import_caffe_finds_netspec_only_without_pycaffe(stand_in, tmp_path):
    """Without pycaffe, netspec's stand-in; with it, pycaffe.  netspec never touches the
    default pool."""
    code = ("import netspec.pycaffe, caffe\n"
            "from google.protobuf import descriptor_pool\n"
            "try:\n    descriptor_pool.Default().FindFileByName('caffe.proto'); pool = 'caffe.proto'\n"
            "except KeyError:\n    pool = 'empty'\n"
            "print(getattr(caffe, 'Layer', None) is netspec.pycaffe.Layer, getattr(caffe, 'STAND_IN', False), pool)\n")
    assert _run(code, tmp_path).stdout.split() == ["True", "False", "empty"]
    assert _run(code, tmp_path, stand_in).stdout.split() == ["False", "True", "caffe.proto"]
