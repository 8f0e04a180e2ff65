"""Atomic writes: all or nothing, never a stray temp file, a diagnostic instead of OSError."""
import pytest

from netspec.diagnostics import NetspecError
from netspec.fileio import atomic_writer, write_atomic


def test_text_and_bytes_replace_the_file_whole(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    write_atomic(path, "first")
    write_atomic(path, b"second")
    assert path.read_bytes() == b"second"
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]


def test_a_failure_mid_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "model.bin"
    write_atomic(path, b"good")
    with pytest.raises(KeyboardInterrupt):
        with atomic_writer(path) as f:
            f.write(b"half")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]


def test_an_unwritable_destination_is_a_diagnostic(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(NetspecError) as e:
        write_atomic(blocker / "out.txt", "x")
    d = e.value.diagnostics[0]
    assert d.code == "E0803" and str(blocker / "out.txt") in d.message
