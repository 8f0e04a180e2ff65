"""The gallery of malformed inputs: each file's diagnostics are a reviewed golden file.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 python -m pytest tests/test_gallery.py``
and review the diff like code.
"""
import os
import re
from pathlib import Path

import pytest

from netspec.cli.main import main

GALLERY = Path(__file__).parent / "gallery"
CASES = sorted(p.stem for p in GALLERY.glob("*.prototxt"))


def run_check(capsys, path: str, *extra) -> tuple[int, str, str]:
    code = main(["check", path, *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("name", CASES)
def test_gallery_case(name, capsys, repo_cwd):
    code, _, err = run_check(capsys, f"tests/gallery/{name}.prototxt")
    got = f"exit code {code}\n{err}"
    golden = GALLERY / f"{name}.expected"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(got)
    assert golden.exists(), f"no golden file for {name}; run with UPDATE_GOLDEN=1 and review it"
    assert got == golden.read_text()
    assert "Traceback" not in err


def test_gallery_is_large_enough_and_covers_every_error_code():
    assert len(CASES) >= 25
    seen = set()
    for p in GALLERY.glob("*.expected"):
        seen |= set(re.findall(r"(?:error|warning)\[(\w+)\]", p.read_text()))
    from netspec.diagnostics import CODES
    expected = {c for c in CODES if c[1] in "0" and c[:3] in
                {"E01", "E02", "E03", "E04", "E05", "E06", "W03", "W05"}}
    expected -= {"E0104", "E0601"}    # unreadable file / missing net for training: tests/test_cli.py
    assert expected - seen == set()


@pytest.mark.parametrize("name", ["graph_unknown_bottom", "schema_unknown_field"])
def test_json_format_has_the_same_diagnostics(name, capsys, repo_cwd):
    import json
    code = main(["check", "--format", "json", f"tests/gallery/{name}.prototxt"])
    err = capsys.readouterr().err
    diags = json.loads(err)
    assert code == 1
    text = (GALLERY / f"{name}.expected").read_text()
    for d in diags:
        assert f"{d['span']['path']}:{d['span']['line']}:{d['span']['col']}: {d['severity']}[{d['code']}]" in text
