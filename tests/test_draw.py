"""netspec draw: every zoo net in every format without graphviz, scope colouring checked
structurally against the schedule, the HTML page in a real headless browser."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from netspec.check import check_net, load
from netspec.cli import main as cli_main
from netspec.cli.check_cmd import _default_phase
from netspec.lower import NetState
from netspec.proto import caffe_pb2
from netspec.schedule import build_schedule, gradient_sources
from netspec.tools.draw import load_drawing, write
from netspec.tools.draw_layout import layout_drawing

ROOT = Path(__file__).resolve().parents[1]
ZOO = Path(__file__).resolve().parents[2] / "shared" / "caffe-zoo"
RELAY = ROOT / "models" / "relay" / "vgg19_fig2.prototxt"
SVG = "{http://www.w3.org/2000/svg}"


def zoo_nets() -> list[Path]:
    nets = []
    for p in sorted(ZOO.rglob("*.prototxt")):
        kind, _ = load(p)
        if kind == "net":
            nets.append(p)
    return nets


@pytest.fixture
def no_graphviz(monkeypatch):
    """Force the pure-Python path even where graphviz is installed."""
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)


def svg_layers(text: str) -> dict[str, dict]:
    root = ET.fromstring(text)
    return {g.get("data-layer"): dict(g.attrib) for g in root.iter(f"{SVG}g") if g.get("data-layer")}


def dot_layers(text: str) -> dict[str, dict]:
    """name -> attributes of the layer nodes in our DOT output (one node per line)."""
    import re
    out = {}
    for m in re.finditer(r'^  "((?:[^"\\]|\\.)*)" \[(.*)\];$', text, re.M):
        attrs = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2)))
        if "losses" in attrs:
            out[m.group(1)] = attrs
    return out


@pytest.mark.skipif(not ZOO.is_dir(), reason="../shared/caffe-zoo absent")
@pytest.mark.parametrize("path", zoo_nets() if ZOO.is_dir() else [], ids=lambda p: p.parent.name + "/" + p.stem)
def test_zoo_net_draws_in_every_format_without_graphviz(path, tmp_path, no_graphviz):
    kind, src = load(path)
    phase = _default_phase(src)
    net = check_net(src, NetState.of(phase))
    drawing = load_drawing(str(path), phase=phase)
    layers = {n.name for n in net.graph.layers()}
    n_edges = sum(len(net.graph.in_edges(n)) for n in layers)
    svg = write(drawing, tmp_path / "n.svg").read_text()
    found = svg_layers(svg)
    assert set(found) == layers
    assert len(ET.fromstring(svg).findall(f".//{SVG}g[@class='edge']")) == n_edges
    assert set(dot_layers(write(drawing, tmp_path / "n.dot").read_text())) == layers
    html = write(drawing, tmp_path / "n.html").read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")   # self-contained
    assert all(f'data-layer="{n}"' in html for n in layers)
    from PIL import Image
    for fmt in ("png", "pdf"):
        out = write(drawing, tmp_path / f"n.{fmt}")
        assert out.stat().st_size > 1000
    with Image.open(tmp_path / "n.png") as im:
        assert len(im.convert("RGB").getcolors(1 << 20) or []) > 5          # not a blank canvas


def _expected(mode: str):
    _, src = load(RELAY)
    net = check_net(src, NetState.of("TRAIN"))
    sched = build_schedule(net, caffe_pb2.SolverParameter(bp_mode=mode))
    order = [l.layer for l in net.losses]
    return net, {k: sorted(v, key=order.index) for k, v in gradient_sources(net, sched).items()}


@pytest.mark.parametrize("mode", ["RELAY", "JOINT", "MULTIWAY", "STANDARD"])
def test_scope_colouring_matches_the_schedule(mode, tmp_path, no_graphviz):
    net, expected = _expected(mode)
    drawing = load_drawing(str(RELAY), bp_mode=mode)
    svg = svg_layers(write(drawing, tmp_path / "r.svg").read_text())
    dot = dot_layers(write(drawing, tmp_path / "r.dot").read_text())
    for name, losses in expected.items():
        assert svg[name]["data-losses"] == ",".join(losses), name
        assert dot[name]["losses"] == ",".join(losses), name
        assert dot[name]["style"].startswith("striped" if len(losses) > 1 else "filled")


def test_relay_and_joint_sets_by_hand(tmp_path, no_graphviz):
    """Fig. 2 by hand: under RELAY, loss stops at pool3 and aux2_loss at pool2, so the
    first block hears only aux1_loss, conv3_* hear aux1+aux2, conv4_* hear loss+aux2."""
    relay = svg_layers(write(load_drawing(str(RELAY), bp_mode="RELAY"), tmp_path / "r.svg").read_text())
    joint = svg_layers(write(load_drawing(str(RELAY), bp_mode="JOINT"), tmp_path / "j.svg").read_text())
    assert relay["conv1_1"]["data-losses"] == "aux1_loss"
    assert relay["conv3_1"]["data-losses"] == "aux1_loss,aux2_loss"
    assert relay["conv4_1"]["data-losses"] == "loss,aux2_loss"
    assert relay["fc6"]["data-losses"] == "loss"
    assert relay["aux2_fc1"]["data-losses"] == "aux2_loss"
    assert joint["conv1_1"]["data-losses"] == "loss,aux1_loss,aux2_loss"
    assert joint["conv4_1"]["data-losses"] == "loss,aux2_loss"
    aux = {n for n, a in relay.items() if a["data-aux"] == "1"}
    assert aux == {n for n in relay if n.startswith(("aux", "relu_aux", "drop_aux"))}


def test_legend_lists_schedule_and_multiway_update_order(tmp_path):
    d = load_drawing(str(RELAY), bp_mode="MULTIWAY")
    assert d.steps[-1] == "update order: aux1_loss -> aux2_loss -> loss"
    svg = write(d, tmp_path / "m.svg").read_text()
    assert "6. backward(w[loss]*loss" in svg and "update order: aux1_loss -&gt; aux2_loss -&gt; loss" in svg


@pytest.mark.parametrize("rankdir", ["TB", "LR"])
def test_python_layout_has_no_overlaps_and_edges_follow_rankdir(rankdir):
    d = load_drawing(str(RELAY), bp_mode="RELAY", rankdir=rankdir)
    placed = layout_drawing(d, "python")
    boxes = list(placed.boxes.items())
    for i, (a, p) in enumerate(boxes):
        for b, q in boxes[i + 1:]:
            apart = abs(p.x - q.x) * 2 >= p.w + q.w or abs(p.y - q.y) * 2 >= p.h + q.h
            assert apart, (a, b)
    axis = 0 if rankdir == "LR" else 1
    for e in placed.edges:
        assert e.points[-1][axis] > e.points[0][axis], (e.src, e.dst)
        assert all(a[axis] <= b[axis] for a, b in zip(e.points, e.points[1:]))


def test_png_holds_the_whole_legend(tmp_path, no_graphviz):
    """Text is measured at the size it is drawn at: the widest schedule line ends inside the image."""
    from PIL import Image, ImageOps
    drawing = load_drawing(str(RELAY), bp_mode="RELAY")
    with Image.open(write(drawing, tmp_path / "r.png")) as img:
        top = ImageOps.invert(img.convert("L").crop((0, 0, img.width, 700)))
        right = top.getbbox()[2]                                 # rightmost non-white column
        assert right <= img.width - 10, (right, img.width)


def test_in_place_layers_are_stacked_in_the_blob_chain():
    d = load_drawing(str(RELAY), bp_mode="RELAY")
    into = {(e.src, e.dst): e.label for e in d.edges}
    assert into[("conv1_1", "relu_conv1_1")] == "conv1_1"
    assert into[("relu_conv1_1", "conv1_2")] == "conv1_1@1"     # the rewritten blob flows on
    assert ("conv1_1", "conv1_2") not in into
    assert d.nodes["relu_conv1_1"].in_place and not d.nodes["conv1_1"].in_place


# -- CLI ------------------------------------------------------------------------------------

def run_cli(argv, monkeypatch) -> int:
    monkeypatch.setitem(cli_main.COMMANDS, "draw", ("netspec.cli.draw_cmd", "draw a net"))
    return cli_main.main(argv)


def test_cli_draws_and_reports_user_errors(tmp_path, monkeypatch, capsys, no_graphviz):
    out = tmp_path / "v.svg"
    assert run_cli(["draw", str(RELAY), "--bp-mode", "relay", "-o", str(out)], monkeypatch) == 0
    assert "RELAY" in capsys.readouterr().out and out.exists()
    assert run_cli(["draw", str(RELAY), "-o", str(tmp_path / "v.gif")], monkeypatch) == 1
    err = capsys.readouterr().err
    assert "error[E0800]" in err and ".svg" in err
    solver = tmp_path / "s.prototxt"
    solver.write_text('net: "x.prototxt"\nbase_lr: 0.1\nbp_mode: RELAY\n')
    assert run_cli(["draw", str(solver), "-o", str(out)], monkeypatch) == 1
    assert "is a solver file" in capsys.readouterr().err
    assert run_cli(["draw", str(RELAY), "--solver", str(RELAY), "-o", str(out)], monkeypatch) == 1
    assert "is a net, not a solver" in capsys.readouterr().err
    assert run_cli(["draw", str(RELAY), "--bp-mode", "SIDEWAYS", "-o", str(out)], monkeypatch) == 2
    assert run_cli(["draw", str(tmp_path / "missing.prototxt"), "-o", str(out)], monkeypatch) == 1


def test_cli_solver_picks_the_mode(tmp_path, monkeypatch, capsys):
    solver = tmp_path / "s.prototxt"
    solver.write_text(f'net: "{RELAY}"\nbase_lr: 0.1\nbp_mode: MULTIWAY\n')
    out = tmp_path / "v.dot"
    assert run_cli(["draw", str(RELAY), "--solver", str(solver), "-o", str(out)], monkeypatch) == 0
    assert "update order: aux1_loss -> aux2_loss -> loss" in out.read_text()


def test_tools_draw_net_wraps_the_cli(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("draw_net", ROOT / "tools" / "draw_net.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setitem(cli_main.COMMANDS, "draw", ("netspec.cli.draw_cmd", "draw a net"))
    out = tmp_path / "c.dot"
    assert mod.draw_main([str(RELAY), str(out), "--bp-mode", "JOINT"]) == 0
    assert dot_layers(out.read_text())["conv1_1"]["losses"] == "loss,aux1_loss,aux2_loss"


# -- the HTML page in a real browser ------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


def chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI installs it)")
def test_html_page_runs_in_headless_chromium(tmp_path, no_graphviz):
    net, expected = _expected("RELAY")
    page = write(load_drawing(str(RELAY), bp_mode="RELAY"), tmp_path / "v.html")
    dom = chromium(tmp_path, "--dump-dom", page.as_uri() + "#selftest")
    assert "Uncaught" not in dom.stderr, dom.stderr
    assert '<div id="netspec-ready"' in dom.stdout
    report = json.loads(dom.stdout.split('<pre id="netspec-selftest">')[1].split("</pre>")[0]
                        .replace("&quot;", '"'))
    assert report["panel"] == f"{report['clicked']} ({net.graph.layer(report['clicked']).type})"
    for loss in ("loss", "aux1_loss", "aux2_loss"):           # dimmed = layers outside the scope
        assert report["dimmed"][loss] == sum(loss not in v for v in expected.values())
    assert report["dimmed"][""] == 0
    assert "scale(1.5)" in report["transform"]
    shot = tmp_path / "shot.png"
    run = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri())
    assert "Uncaught" not in run.stderr
    from PIL import Image
    with Image.open(shot) as im:
        assert im.size == (1200, 900)
        colors = im.convert("RGB").getcolors(1 << 20)
        assert len(colors) > 50                                 # the page rendered, not blank
        tints = {(200, 221, 236), (245, 199, 201)}              # ~ loss and aux1 node fills
        assert any(min(sum(abs(a - b) for a, b in zip(c, t)) for t in tints) < 30 for _, c in colors)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI installs it)")
def test_browser_check_sees_script_errors(tmp_path, no_graphviz):
    """The check above can fail: a page whose script throws has no ready marker."""
    page = write(load_drawing(str(RELAY), bp_mode="RELAY"), tmp_path / "v.html")
    page.write_text(page.read_text().replace('"use strict";', '"use strict"; notDefined();'))
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert '<div id="netspec-ready"' not in dom.stdout and "Uncaught" in dom.stderr
