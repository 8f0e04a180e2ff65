"""Issue 15's memory items on the front end: `netspec check` without torch, the lean layer graph
(topology only) against a full networkx MultiDiGraph, the lazily built source map, and an allocation failure on
a CUDA device turned into the same diagnostic as on the CPU."""
import argparse
import random
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

from netspec.check import check_net, load
from netspec.diagnostics import Diagnostics, NetspecError
from netspec.graph import Blob, LayerNode, NetGraph
from netspec.lower import NetState
from netspec.parse import parse_text
from netspec.proto import caffe_pb2
from netspec.schema import to_message

ROOT = Path(__file__).resolve().parents[1]


def test_checking_a_net_does_not_import_torch():
    code = ("import sys\nfrom netspec.cli.main import main\n"
            "rc = main(['check', 'models/digits/deep_plain.prototxt'])\n"
            "assert rc == 0, rc\nassert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "deep_plain" in done.stdout


# -- the layer graph ---------------------------------------------------------------------------

def random_graphs(seed: int, n: int, back_edges: int):
    """The same random multigraph as a NetGraph and as networkx's MultiDiGraph: layer i reads
    0-3 tops of earlier layers (repeats allowed), plus ``back_edges`` reads of later layers."""
    rng = random.Random(seed)
    ours, ref = NetGraph(), nx.MultiDiGraph()
    nodes = []
    for i in range(n):
        name = f"L{i}"
        node = LayerNode(name, "X", i, None, None, None, ("layer", i), tops=[Blob(name, 0)])
        ours.add_layer(node)
        ours.producer[Blob(name, 0)] = name
        ref.add_node(name)
        nodes.append(node)
    edges = [(i, rng.randrange(i)) for i in range(1, n) for _ in range(rng.randrange(4))]
    edges += [(i, rng.randrange(i + 1, n)) for i in rng.sample(range(n - 1), back_edges)]
    for consumer, producer in edges:
        node, blob = nodes[consumer], Blob(f"L{producer}", 0)
        node.bottoms.append(blob)
        ours.connect(blob, node.name, len(node.bottoms) - 1)
        ref.add_edge(blob.name, node.name)
    return ours, ref


@pytest.mark.parametrize("seed", range(40))
def test_the_lean_graph_answers_as_a_full_multigraph_does(seed):
    ours, ref = random_graphs(seed, n=30, back_edges=seed % 3)
    try:
        cycle = [u for u, _, _ in nx.find_cycle(ref)]
        expected = cycle + cycle[:1]
    except nx.NetworkXNoCycle:
        expected = None
    assert ours.find_cycle() == expected
    if expected is None:
        topo = list(nx.lexicographical_topological_sort(ref, key=lambda n: int(n[1:])))
        assert [n.name for n in ours.layers()] == topo
    else:                                       # a cyclic graph keeps the file order
        assert [n.name for n in ours.layers()] == [f"L{i}" for i in range(30)]
    for name in ("L0", "L7", "L29"):
        assert ours.ancestors(name) == nx.ancestors(ref, name)
        assert ours.descendants(name) == nx.descendants(ref, name)
        assert sorted(ours.in_edges(name), key=lambda e: e[2]) == sorted(
            ((u, Blob(u, 0), i) for i, (u, _) in enumerate(
                (b.name, b) for b in ours.layer(name).bottoms)), key=lambda e: e[2])
        assert sorted(u for u, _, _ in ours.in_edges(name)) == sorted(u for u, _ in ref.in_edges(name))
        assert ours.consumers(Blob(name, 0)) == sorted(set(ref.successors(name)), key=lambda n: int(n[1:]))
    assert ours.sources() == [n for n in ref if ref.in_degree(n) == 0]


# -- the source map ------------------------------------------------------------------------------

NET = """name: "small"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 4 } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
"""


def test_the_lazy_source_map_gives_the_spans_the_full_one_does(tmp_path):
    path = tmp_path / "small.prototxt"
    path.write_text(NET)
    _, src = load(path)
    assert not src.smap._packed and not src.smap._other      # nothing held before a lookup
    _, full = to_message(parse_text(NET, str(path)), caffe_pb2.NetParameter, Diagnostics())
    paths = list(full._packed)
    assert len(paths) > 20
    for p in paths + [("layer", 1, "no_such_field"), ("layer", 9)]:
        assert src.smap.span(p) == full.span(p)
        assert src.smap.name_span(p) == full.name_span(p)
    assert src.smap.span(("layer", 1, "inner_product_param", "num_output")).line == 5


TRICKY = ('name: "tricky"  # a comment\r\n'
          'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }'
          ' layer: { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"\r\n'
          '  inner_product_param < num_output: 4 weight_filler { type: "xavier" } > } ;\n'
          '# between layers\n'
          '\tlayer { name: "r\\u00e9lu" type: "ReLU" bottom: "ip" top: "ip" '
          'propagate_down: [true] }\n')


@pytest.mark.parametrize("order", ["forward", "backward"])
def test_spans_of_one_layer_come_from_that_layer_alone(tmp_path, order):
    path = tmp_path / "tricky.prototxt"
    path.write_bytes(TRICKY.encode())
    text = path.read_text()
    _, full = to_message(parse_text(text, str(path)), caffe_pb2.NetParameter, Diagnostics())
    _, src = load(path)
    layer_paths = [p for p in full._packed if p[0] == "layer"]
    assert len(layer_paths) > 20
    for p in (layer_paths if order == "forward" else layer_paths[::-1]):
        assert src.smap.span(p) == full.span(p), p
        assert src.smap.name_span(p) == full.name_span(p), p
    assert src.smap._lazy is not None           # the whole file was not parsed again
    assert src.smap.span(("name",)) == full.span(("name",))
    assert src.smap._lazy is None               # a top-level scalar: now it was
    span = src.smap.span(("layer", 1, "inner_product_param", "weight_filler", "type"))
    assert text.splitlines()[span.line - 1][span.col - 1:span.end_col - 1] == '"xavier"'


def test_a_diagnostic_after_loading_points_at_the_text(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text(NET.replace('bottom: "ip" top: "ip"', 'bottom: "ipp" top: "ip"'))
    _, src = load(path)
    with pytest.raises(NetspecError) as info:
        check_net(src, NetState.of("TEST"))
    (d,) = [d for d in info.value.diagnostics if d.code == "E0300"]
    line = path.read_text().splitlines()[5]
    assert (d.span.line, d.span.col, d.span.end_col) == (6, line.index('"ipp"') + 1, line.index('"ipp"') + 6)
    assert "bottom: \"ipp\"" in line


# -- allocation failures -------------------------------------------------------------------------

WIDE = """name: "wide"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
"""


@pytest.mark.parametrize("message, size", [
    # the CUDA caching allocator's message (torch 2.x)
    ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB "
     "of which 1.31 GiB is free.", "2.00 GiB"),
    # the type alone says what it is, whatever the backend writes
    ("the device allocator gave up", None),
])
def test_a_cuda_out_of_memory_in_a_layer_is_the_cpu_diagnostic(tmp_path, capsys, message, size):
    import torch
    from netspec.cli.main import run_guarded
    from netspec.compile.module import compile_net
    path = tmp_path / "wide.prototxt"
    path.write_text(WIDE)
    _, src = load(path)
    net = check_net(src, NetState.of("TEST"))
    compiled = compile_net(net, seed=0)
    layer = getattr(compiled.module, net.graph.layer("ip").impl.attr)

    def no_memory(module, args):                # what CUDA raises inside the layer's kernel
        raise torch.OutOfMemoryError(message)
    layer.register_forward_pre_hook(no_memory)

    def run(args):
        compiled.module(data=torch.zeros(2, 4))
        return 0
    assert run_guarded(run, argparse.Namespace(format="text")) == 1
    err = capsys.readouterr().err
    expected = "error[E0703]: out of memory in layer 'ip' (InnerProduct, wide.prototxt:3)"
    assert expected + (f": it tried to allocate {size}" if size else "\n") in err
    assert "Traceback" not in err
