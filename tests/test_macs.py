"""MACs per sample from Caffe's shape formulas, cross-checked with torch's FlopCounterMode."""
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from netspec.check import check_net, load
from netspec.cli.main import main
from netspec.compile.module import compile_net
from netspec.lower import NetState
from netspec.tools.macs import exits, net_macs
from netspec.tools.timing import synthetic_inputs

from conftest import shared_path

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "models" / "digits" / "deep_plain.prototxt"


def _net(path, phase="TEST", shapes=None):
    _, src = load(path)
    return check_net(src, NetState.of(phase), shapes or {})


def torch_macs(net, outputs=None) -> int:
    """FLOPs / 2 that torch counts for one forward of the compiled net, per sample."""
    compiled = compile_net(net, outputs=outputs, seed=0)
    inputs = synthetic_inputs(compiled, "cpu")
    batch = next(iter(inputs.values())).shape[0]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        compiled.module(**inputs)
    return counter.get_total_flops() // 2 // batch


@pytest.mark.parametrize("rel, low, high", [
    ("models/bvlc_alexnet/deploy.prototxt", 0.70e9, 0.74e9),        # "about 0.72 GMAC"
    ("models/bvlc_googlenet/deploy.prototxt", 1.55e9, 1.62e9),      # "about 1.6 GMAC"
])
def test_known_nets_count_as_published_and_as_torch(rel, low, high):
    net = _net(shared_path("caffe-zoo", rel), shapes={"data": (1, 3, 227 if "alex" in rel else 224,
                                                               227 if "alex" in rel else 224)})
    total = sum(net_macs(net).values())
    assert low < total < high
    assert total == torch_macs(net)


def test_every_exit_of_the_digits_net_matches_torch():
    net = _net(DIGITS, "TEST")
    found = exits(net)
    assert [e.name for e in found] == [l.layer for l in net.losses] and len(found) == 4
    for e in found:
        loss = net.graph.layer(e.name)
        assert e.macs == torch_macs(net, outputs=list(loss.tops)), e.name
    assert found[0].macs < found[1].macs < found[2].macs < found[3].macs


def test_grouped_convolution_deconvolution_and_inner_product_axis(tmp_path):
    p = tmp_path / "n.prototxt"
    p.write_text('''
input: "x" input_shape { dim: 3 dim: 4 dim: 7 dim: 6 }
layer { name: "g" type: "Convolution" bottom: "x" top: "g"
  convolution_param { num_output: 6 kernel_size: 3 stride: 2 group: 2 pad: 1 } }
layer { name: "d" type: "Deconvolution" bottom: "g" top: "d"
  convolution_param { num_output: 4 kernel_size: 2 stride: 2 group: 2 bias_term: false } }
layer { name: "ip" type: "InnerProduct" bottom: "d" top: "ip" inner_product_param { num_output: 5 axis: 2 } }
''')
    net = _net(p)
    per = net_macs(net)
    assert per["g"] == 6 * 4 * 3 * (4 // 2) * 9                # out elements x C_in/group x k^2
    assert per["d"] == 6 * 4 * 3 * (4 // 2) * 4                # in elements x C_out/group x k^2
    assert sum(per.values()) == torch_macs(net)


def test_check_prints_a_macs_column_and_each_exit(capsys):
    assert main(["check", str(DIGITS)]) == 0
    out = capsys.readouterr().out
    header = next(l for l in out.splitlines() if l.startswith("layer"))
    lines = out.splitlines()
    assert lines[1] == f"  {DIGITS}"                      # the path's own line: as long as it is
    assert "MACs" in header and max(len(l) for l in lines[:1] + lines[2:]) <= 80
    assert "MACs per sample: 2.66 MMAC" in out
    assert "  exit1_loss: 304 KMAC, 11% of main; " in out and "  main_loss: 2.66 MMAC (main); " in out
