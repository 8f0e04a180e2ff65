"""Loss scopes: stop_at (with in-place blobs), max_depth, and the Relay BP configurations."""
import pytest

from netspec.check import check_net, load
from netspec.lower import NetState

from conftest import REPO
from test_compile import checked

RELAY = REPO / "models" / "relay"

CHAIN = """name: "chain"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv3" top: "ip" inner_product_param { num_output: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" SCOPE }
"""


def scope_of(scope_text: str) -> set:
    net = checked(CHAIN.replace("SCOPE", scope_text))
    return net.losses[0].scope


def test_default_scope_is_every_ancestor_except_labels():
    assert scope_of("") == {"data", "conv1", "relu1", "conv2", "relu2", "conv3", "ip", "loss"}


def test_stop_at_blocks_every_in_place_version_of_the_blob():
    # conv2 is rewritten in place by relu2: neither relu2 nor conv2 get this loss's gradient
    assert scope_of('gradient_scope { stop_at: "conv2" }') == {"conv3", "ip", "loss"}


def test_max_depth_counts_consecutive_weight_layers():
    assert scope_of("gradient_scope { max_depth: 1 }") == {"ip", "loss"}
    assert scope_of("gradient_scope { max_depth: 2 }") == {"conv3", "ip", "loss"}
    assert scope_of("gradient_scope { max_depth: 3 }") == {"relu2", "conv2", "conv3", "ip", "loss"}


def test_propagate_down_false_stops_the_scope():
    text = CHAIN.replace("SCOPE", "").replace(
        'bottom: "conv2" top: "conv3"', 'bottom: "conv2" top: "conv3" propagate_down: false')
    assert checked(text).losses[0].scope == {"conv3", "ip", "loss"}


def _convs(scope):
    return sorted(n for n in scope if n.startswith("conv"))


def test_relay_fig2_vgg19_scopes():
    _, src = load(RELAY / "vgg19_fig2.prototxt")
    net = check_net(src, NetState.of("TRAIN"))
    scopes = {l.layer: l.scope for l in net.losses}
    seg = {s: {n for n in net.graph.order if n.startswith(f"conv{s}_")} for s in range(1, 6)}
    assert seg[1] | seg[2] | seg[3] <= scopes["aux1_loss"] and not (seg[4] | seg[5]) & scopes["aux1_loss"]
    assert seg[3] | seg[4] <= scopes["aux2_loss"] and not (seg[1] | seg[2] | seg[5]) & scopes["aux2_loss"]
    assert seg[4] | seg[5] <= scopes["loss"] and not (seg[1] | seg[2] | seg[3]) & scopes["loss"]
    weights = {l.layer: l.weight for l in net.losses}
    assert weights == pytest.approx({"loss": 1.0, "aux1_loss": 0.3, "aux2_loss": 0.3})


def test_relay_table2_model_a_scopes():
    _, src = load(RELAY / "places_model_a.prototxt")
    net = check_net(src, NetState.of("TRAIN"))
    scopes = {l.layer: l.scope for l in net.losses}
    assert _convs(scopes["loss1"]) == sorted([f"conv4_{i}" for i in range(1, 6)] + [f"conv5_{i}" for i in range(1, 6)])
    assert {f"conv{s}_1" for s in range(1, 5)} <= scopes["loss2"] and "conv5_1" not in scopes["loss2"]
