"""Every real Caffe file in ../shared/caffe-zoo and the oracle parses and checks."""
from pathlib import Path

import pytest

from netspec.check import check_net, load
from netspec.cli.main import main
from netspec.lower import NetState

from conftest import SHARED

ZOO = SHARED / "caffe-zoo"
ZOO_FILES = sorted(ZOO.rglob("*.prototxt")) if ZOO.exists() else []
ORACLE_NETS = sorted((SHARED / "caffe-oracle").rglob("net.prototxt"))


def _id(p: Path) -> str:
    return str(p.relative_to(SHARED))


@pytest.mark.parametrize("path", ZOO_FILES, ids=_id)
def test_zoo_file_checks(path, capsys, monkeypatch):
    monkeypatch.chdir(path.parent)
    code = main(["check", str(path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "Traceback" not in out.err
    assert "layers," in out.out or "W0601" in out.err     # solvers whose nets pycaffe generates
    assert "~" not in out.out                       # nothing cut (see check_cmd.format_net)
    lines = out.out.splitlines()
    header = next((l for l in lines if l.startswith("layer ")), "")
    if len(header) <= 80:           # no column had to widen: 80 columns, but a net's path line
        paths = {i + 1 for i, l in enumerate(lines) if "', phase " in l}
        assert max((len(l) for i, l in enumerate(lines) if i not in paths), default=0) <= 80


@pytest.mark.parametrize("path", ORACLE_NETS, ids=_id)
def test_oracle_net_checks(path, monkeypatch):
    monkeypatch.chdir(path.parent)          # Caffe resolves data files against the cwd
    kind, src = load(path)
    assert kind == "net"
    check_net(src, NetState.of("TRAIN"))


def _total(rel: str, phase: str) -> int:
    _, src = load(ZOO / rel)
    return check_net(src, NetState.of(phase)).total_params()


@pytest.mark.skipif(not ZOO.exists(), reason="no caffe-zoo")
@pytest.mark.parametrize("rel, phase, expected", [
    ("models/bvlc_googlenet/deploy.prototxt", "TEST", 6_998_552),
    ("models/bvlc_alexnet/deploy.prototxt", "TEST", 60_965_224),
    ("models/bvlc_reference_caffenet/deploy.prototxt", "TEST", 60_965_224),
])
def test_parameter_totals_match_known_figures(rel, phase, expected):
    assert _total(rel, phase) == expected


@pytest.mark.skipif(not ZOO.exists(), reason="no caffe-zoo")
def test_solver_file_checks_with_its_nets(capsys, monkeypatch):
    monkeypatch.chdir(ZOO)
    code = main(["check", "examples/mnist/lenet_solver.prototxt"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "train net 'LeNet'" in out.out and "test net 1 'LeNet'" in out.out
