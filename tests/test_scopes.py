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


# ---------------------------------------------------------------- scopes bind per mode
def loss_of(scope_text: str):
    return checked(CHAIN.replace("SCOPE", scope_text)).losses[0]


def test_a_scope_binds_relay_unless_its_modes_say_otherwise():
    relay = loss_of("gradient_scope { max_depth: 1 }")
    assert relay.modes == ("RELAY",) and relay.binds("RELAY") and not relay.binds("MULTIWAY")
    assert relay.scope_for("RELAY") == {"ip", "loss"}
    assert relay.scope_for("MULTIWAY") == relay.reach == scope_of("")      # every ancestor
    assert relay.stops_for("MULTIWAY") == ()
    both = loss_of("gradient_scope { max_depth: 1 modes: RELAY modes: MULTIWAY }")
    assert both.modes == ("RELAY", "MULTIWAY") and both.scope_for("MULTIWAY") == {"ip", "loss"}
    mw = loss_of('gradient_scope { stop_at: "conv2" modes: MULTIWAY }')
    assert mw.modes == ("MULTIWAY",) and mw.stops_for("MULTIWAY") == ("conv2",) and mw.stops_for("RELAY") == ()
    for mode in ("JOINT", "STANDARD"):
        assert not both.binds(mode) and both.scope_for(mode) == both.reach
    assert loss_of("").modes == () and not loss_of("").binds("RELAY")


def test_a_scope_naming_joint_is_an_error():
    from netspec.diagnostics import NetspecError
    with pytest.raises(NetspecError) as e:
        loss_of("gradient_scope { max_depth: 1 modes: STANDARD }")
    errors = [d for d in e.value.diagnostics if d.severity == "error"]
    assert [d.code for d in errors] == ["E0403"] and errors[0].span.line == 10


DIGITS = REPO / "models" / "digits"


def test_schedule_and_check_show_which_scopes_apply(tmp_path, capsys):
    """MULTIWAY on the Relay-scoped digits net: MW-BP, the scopes shown ignored and warned about."""
    from netspec.cli.main import main
    text = (DIGITS / "solver_multiway.prototxt").read_text()
    solver = tmp_path / "mw_on_relay_net.prototxt"
    solver.write_text(text.replace('net: "deep_plain.prototxt"', f'net: "{DIGITS}/deep_plain_relay.prototxt"'))
    assert main(["schedule", "--solver", str(solver)]) == 0
    out, err = capsys.readouterr()
    assert "params=8)" in out and "params=14)" in out and "params=20)" in out and "params=26)" in out
    assert out.count("max_depth 6 (binds RELAY: ignored under MULTIWAY)") == 4
    assert err.count("warning[W0301]") == 4 and "mw_on_relay_net" not in err    # spans point at the net
    assert "deep_plain_relay.prototxt:" in err and "gradient_scope" in err
    assert main(["check", str(solver)]) == 0
    out, err = capsys.readouterr()
    assert "losses under MULTIWAY:" in out and err.count("warning[W0301]") == 4
    conv1 = next(line for line in out.splitlines() if line.startswith("conv1 "))
    assert conv1.rstrip().endswith(" L1-L4")
    # a net checked under another file's solver
    net = str(DIGITS / "deep_plain_relay.prototxt")
    assert main(["check", net, "--solver", str(DIGITS / "solver_joint.prototxt")]) == 0
    out, err = capsys.readouterr()
    assert "losses under JOINT:" in out and err.count("bp_mode JOINT ignores it") == 4
    assert main(["check", net, "--solver", net]) == 1
    assert "error[E0800]" in capsys.readouterr().err
    # the relay solver applies the same scopes: no warning
    assert main(["schedule", "--solver", str(DIGITS / "solver_relay.prototxt")]) == 0
    out, err = capsys.readouterr()
    assert "applies under RELAY" in out and "W0301" not in err


def test_train_warns_about_scopes_its_mode_ignores(tmp_path, capsys, monkeypatch):
    """`netspec train` says what `netspec check --solver` says: a Relay scope under MULTIWAY
    is W0301, pointing at the net; the relay solver, whose mode applies them, trains quietly."""
    from netspec.cli.main import main
    monkeypatch.chdir(tmp_path)
    text = (DIGITS / "solver_multiway.prototxt").read_text()
    solver = tmp_path / "mw_on_relay_net.prototxt"
    solver.write_text(text.replace('net: "deep_plain.prototxt"', f'net: "{DIGITS}/deep_plain_relay.prototxt"')
                      .replace("snapshot_after_train: true", "snapshot_after_train: false"))
    assert main(["train", "--solver", str(solver), "--iterations", "1"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning[W0301]") == 4 and "deep_plain_relay.prototxt:" in err
    relay = tmp_path / "relay.prototxt"
    relay.write_text((DIGITS / "solver_relay.prototxt").read_text()
                     .replace('net: "deep_plain_relay.prototxt"', f'net: "{DIGITS}/deep_plain_relay.prototxt"')
                     .replace("snapshot_after_train: true", "snapshot_after_train: false"))
    assert main(["train", "--solver", str(relay), "--iterations", "1"]) == 0
    assert "W0301" not in capsys.readouterr().err


def test_draw_legend_says_whether_a_scope_applies(tmp_path, capsys):
    from netspec.tools.draw import load_drawing
    d = load_drawing(str(DIGITS / "deep_plain_relay.prototxt"), bp_mode="MULTIWAY")
    assert all("ignored under MULTIWAY" in l.text for l in d.losses)
    assert [w.code for w in d.warnings] == ["W0301"] * 4
    assert set(d.nodes["conv1"].losses) == {"exit1_loss", "exit2_loss", "exit3_loss", "main_loss"}
    hybrid = load_drawing(str(DIGITS / "deep_plain_hybrid.prototxt"), bp_mode="MULTIWAY")
    assert hybrid.nodes["conv1"].losses == ["exit1_loss"] and not hybrid.warnings
    assert all("applies under MULTIWAY" in l.text for l in hybrid.losses)
