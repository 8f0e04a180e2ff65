"""netspec train ends with a table per exit, the weights it wrote and next commands that run."""
import shlex
from pathlib import Path

from netspec.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_train_prints_exits_weights_and_runnable_next_commands(tmp_path, monkeypatch, capsys):
    (tmp_path / "models").symlink_to(ROOT / "models")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--solver", "models/digits/solver_multiway.prototxt", "--iterations", "4"]) == 0
    out = capsys.readouterr().out
    table = out.split("\nexit ", 1)[1]
    for exit_name in ("exit1_loss", "exit2_loss", "exit3_loss", "main_loss"):
        assert exit_name in table
    assert "4,970" in table and "2.66 MMAC" in table and "%" in table
    weights = out.split("final weights: ", 1)[1].splitlines()[0]
    assert (tmp_path / weights).exists()
    commands = [l.strip() for l in out.split("\nnext:\n", 1)[1].splitlines() if l.startswith("  netspec ")]
    assert [c.split()[1] for c in commands] == ["test", "test", "export", "draw"]
    assert "models/digits/deep_plain.prototxt" in commands[0]
    for command in commands:
        assert main(shlex.split(command)[1:]) == 0, command
    capsys.readouterr()
    assert (tmp_path / "anytime.svg").exists() and (tmp_path / "exit1_loss.caffemodel").exists()
    assert (tmp_path / "net.svg").exists()


def test_snapshot_after_train_false_is_honoured(tmp_path, monkeypatch, capsys):
    """Caffe writes no final snapshot when the solver says so; neither does netspec train."""
    (tmp_path / "models").symlink_to(ROOT / "models")
    solver = tmp_path / "solver.prototxt"
    text = (ROOT / "models/digits/solver_multiway.prototxt").read_text()
    solver.write_text(text.replace("snapshot_after_train: true", "snapshot_after_train: false")
                      .replace('net: "', 'net: "models/digits/').replace("max_iter: 400", "max_iter: 2"))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--solver", str(solver)]) == 0
    out = capsys.readouterr().out
    assert "final weights: not saved (the solver says snapshot_after_train: false)" in out
    assert not list(tmp_path.glob("*.netspec")) and "\nnext:\n" not in out
