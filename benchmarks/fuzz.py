"""Fuzz netspec with hypothesis-driven mutations of real Caffe files (not part of CI).

    python benchmarks/fuzz.py [--cases 10000] [--out fuzz-crashes] [--seed 0]

Mutates every zoo net and solver file (``../shared/caffe-zoo``: lines deleted or
duplicated, tokens replaced by other tokens or by extreme values, random characters,
truncation) and runs ``netspec check`` on each; mutates every oracle ``.caffemodel``
(``../shared/caffe-oracle``: bytes flipped, deleted, inserted, truncated) and loads it into
its compiled net.  A *crash* is anything other than a netspec diagnostic: an exception that
escapes the command, or a traceback in its output.  Each distinct crash (exception type and
innermost netspec frame) is shrunk by hypothesis, and the minimal input is saved to
``--out`` with its traceback; found cases belong in ``tests/gallery/``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("NETSPEC_SHARED") or REPO.parent / "shared")

from hypothesis import HealthCheck, Phase, given, seed as fix_seed, settings, strategies as st  # noqa: E402

TOKEN = re.compile(r'"[^"\n]*"|[A-Za-z_][\w.]*|-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|[{}:<>\[\],;#]')
EXTREMES = ["0", "-1", "1e40", "-1e40", "nan", "inf", "-inf", "4294967296", "-2147483649",
            "99999999999999999999", "0x7fffffff", '""', '"\\x"', '"', "{", "}", ":", "[]", "[", "#",
            "1.5", "true", "-0", "'a'", "\u00e9", "\x00", "layer", "top", "bottom"]


class Crash(Exception):
    """A new crash signature (hypothesis shrinks the case that raised it)."""


@dataclass
class Campaign:
    found: dict = field(default_factory=dict)      # signature -> saved path
    cases: int = 0


# -- mutations --------------------------------------------------------------------------

def mutate_text(text: str, ops: list) -> str:
    for op, pos, pick in ops:
        lines = text.split("\n")
        toks = list(TOKEN.finditer(text))
        if op == "delete_line" and lines:
            del lines[pos % len(lines)]
            text = "\n".join(lines)
        elif op == "dup_line" and lines:
            i = pos % len(lines)
            lines.insert(i, lines[i])
            text = "\n".join(lines)
        elif op in ("swap_token", "extreme") and toks:
            m = toks[pos % len(toks)]
            new = EXTREMES[pick % len(EXTREMES)] if op == "extreme" else toks[pick % len(toks)].group()
            text = text[:m.start()] + new + text[m.end():]
        elif op == "truncate":
            text = text[:pos % (len(text) + 1)]
        elif op == "insert":
            i = pos % (len(text) + 1)
            text = text[:i] + EXTREMES[pick % len(EXTREMES)] + text[i:]
    return text


def mutate_bytes(data: bytes, ops: list) -> bytes:
    b = bytearray(data)
    for op, pos, pick in ops:
        if not b:
            break
        i = pos % len(b)
        if op == "flip":
            b[i] ^= 1 << (pick % 8)
        elif op == "set":
            b[i] = pick % 256
        elif op == "delete":
            del b[i:i + 1 + pick % 64]
        elif op == "insert":
            b[i:i] = bytes([pick % 256]) * (1 + pick % 8)
        elif op == "truncate":
            del b[i:]
    return bytes(b)


TEXT_OPS = st.lists(st.tuples(st.sampled_from(["delete_line", "dup_line", "swap_token", "extreme",
                                               "truncate", "insert"]),
                              st.integers(0, 10**6), st.integers(0, 10**6)), min_size=1, max_size=4)
BYTE_OPS = st.lists(st.tuples(st.sampled_from(["flip", "set", "delete", "insert", "truncate"]),
                              st.integers(0, 10**8), st.integers(0, 10**6)), min_size=1, max_size=4)


# -- targets ----------------------------------------------------------------------------

def signature(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/netspec/" in f.filename]
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return f"{type(exc).__name__} at {where}"


def check_text(text: str, name: str, tmp: Path) -> tuple[str, str] | None:
    """Run ``netspec check`` on ``text`` and, for a net that passes, ``netspec convert``
    (code generation); (signature, traceback) for a crash, else None."""
    path = tmp / name
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    got, code = _command(["check", str(path)])
    if got is None and code == 0:
        got, _ = _command(["convert", str(path), "-o", str(tmp / "out.py")])
    return got


def _command(argv: list[str]) -> tuple[tuple[str, str] | None, int]:
    from netspec.cli.main import main
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except Exception as e:  # noqa: BLE001  (the point: anything escaping is a crash)
        return (signature(e), traceback.format_exc()), 1
    if "Traceback" in err.getvalue():
        return ("traceback in output", err.getvalue()), 1
    return None, code


_COMPILED: dict = {}


def load_weights(data: bytes, net_path: Path, tmp: Path) -> tuple[str, str] | None:
    """Load mutated caffemodel bytes into ``net_path``'s compiled net (compiled once)."""
    from netspec.diagnostics import NetspecError
    from netspec.interop.caffemodel import load_caffemodel
    if net_path not in _COMPILED:
        _COMPILED[net_path] = _compile(net_path)
    compiled = _COMPILED[net_path]
    if compiled is None:
        return None
    path = tmp / "weights.caffemodel"
    path.write_bytes(data)
    try:
        load_caffemodel(compiled, path)
    except NetspecError:
        return None
    except Exception as e:  # noqa: BLE001
        return signature(e), traceback.format_exc()
    return None


def _compile(net_path: Path):
    from netspec.check import check_net, load
    from netspec.compile.module import compile_net
    from netspec.diagnostics import NetspecError
    from netspec.lower import NetState
    try:
        _, src = load(net_path)
        for phase in ("TRAIN", "TEST"):
            try:
                return compile_net(check_net(src, NetState.of(phase)), seed=0)
            except NetspecError:
                continue
    except NetspecError:
        return None
    return None


# -- the campaign ---------------------------------------------------------------------------

def run(kind: str, files: list[Path], n: int, out: Path, camp: Campaign, seed: int | None) -> None:
    """``n`` cases of one kind ('text' or 'bytes'); each new crash is shrunk and saved
    (``seed``: reproduce a campaign; None draws a new one)."""
    if not files or n <= 0:
        return
    blobs = {p: (p.read_bytes() if kind == "bytes" else p.read_text(errors="replace")) for p in files}
    remaining = n
    while remaining > 0:
        state = {"count": 0, "last": None}

        @settings(max_examples=remaining, database=None, deadline=None, derandomize=False,
                  report_multiple_bugs=False, suppress_health_check=list(HealthCheck),
                  phases=[Phase.generate, Phase.shrink])
        @given(src=st.sampled_from(files), ops=BYTE_OPS if kind == "bytes" else TEXT_OPS)
        def case(src, ops):
            state["count"] += 1
            with tempfile.TemporaryDirectory() as tmp:
                if kind == "bytes":
                    data = mutate_bytes(blobs[src], ops)
                    got = load_weights(data, src.parent / "net.prototxt", Path(tmp))
                else:
                    data = mutate_text(blobs[src], ops)
                    got = check_text(data, src.name, Path(tmp))
            if got is not None and got[0] not in camp.found:
                state["last"] = (src, data, got)
                raise Crash(got[0])

        if seed is not None:
            case = fix_seed(seed + len(camp.found))(case)
        try:
            case()
            remaining -= state["count"]
            camp.cases += state["count"]
            return
        except Crash:
            src, data, (sig, tb) = state["last"]       # the last raise is the shrunk case
            if kind == "text":
                data = minimise_lines(data, sig, src.name)
            camp.found[sig] = save(out, len(camp.found), src, data, sig, tb)
            print(f"crash {len(camp.found)}: {sig} ({src.name}) -> {camp.found[sig]}", flush=True)
            remaining -= state["count"]
            camp.cases += state["count"]


def minimise_lines(text: str, sig: str, name: str) -> str:
    """Delta debugging over lines: drop chunks (halving their size) while the same crash
    signature reproduces; hypothesis has already shrunk the mutations themselves."""
    lines = text.split("\n")
    chunk = max(1, len(lines) // 2)
    with tempfile.TemporaryDirectory() as tmp:
        while chunk >= 1:
            i, changed = 0, False
            while i < len(lines):
                trial = lines[:i] + lines[i + chunk:]
                got = check_text("\n".join(trial), name, Path(tmp))
                if got is not None and got[0] == sig:
                    lines, changed = trial, True
                else:
                    i += chunk
            if not changed:
                chunk //= 2
    return "\n".join(lines)


def save(out: Path, i: int, src: Path, data, sig: str, tb: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"crash{i:03d}_{src.stem}"
    if isinstance(data, bytes):
        path = stem.with_suffix(".caffemodel")
        path.write_bytes(data)
    else:
        path = stem.with_suffix(".prototxt")
        path.write_text(data, encoding="utf-8", errors="surrogateescape")
    stem.with_suffix(".txt").write_text(f"{sig}\nfrom {src}\n\n{tb}")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10_000, help="total cases (default 10,000)")
    ap.add_argument("--out", type=Path, default=Path("fuzz-crashes"), help="where crashes are saved")
    ap.add_argument("--seed", type=int, help="hypothesis seed, to reproduce a campaign")
    args = ap.parse_args(argv)
    zoo = sorted((SHARED / "caffe-zoo").rglob("*.prototxt"))
    models = sorted((SHARED / "caffe-oracle").rglob("*.caffemodel"))
    models = [m for m in models if (m.parent / "net.prototxt").exists()]
    if not zoo and not models:
        print(f"no Caffe files under {SHARED}; set NETSPEC_SHARED", file=sys.stderr)
        return 2
    camp = Campaign()
    text_share = args.cases * len(zoo) // max(1, len(zoo) + len(models))
    run("text", zoo, text_share, args.out, camp, args.seed)
    run("bytes", models, args.cases - text_share, args.out, camp, args.seed)
    print(f"{camp.cases} cases ({len(zoo)} zoo files, {len(models)} caffemodels): "
          f"{len(camp.found)} distinct crash(es)")
    for sig, path in camp.found.items():
        print(f"  {sig}: {path}")
    return 1 if camp.found else 0


if __name__ == "__main__":
    sys.exit(main())
