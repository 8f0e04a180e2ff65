"""Every layer and net case of ../shared/caffe-oracle (real BVLC Caffe 1.0) through netspec.

New cases in the manifest are picked up automatically.  A mismatch is a netspec bug.
"""
import pytest

from oracle_harness import ORACLE, manifest, run_case

CASES = [c for c in manifest() if c["kind"] in ("layer", "net")]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_oracle_case(case, monkeypatch):
    case_dir = ORACLE / case["dir"]
    monkeypatch.chdir(case_dir)          # Caffe resolves relative paths (H.binaryproto) from the cwd
    mismatches = run_case(case_dir)
    assert not mismatches, "\n".join(map(str, mismatches))


def test_the_oracle_is_present_and_complete():
    if not ORACLE.exists():
        pytest.skip("../shared/caffe-oracle is not present")
    counts = {}
    for c in manifest():
        counts[c["kind"]] = counts.get(c["kind"], 0) + 1
    assert counts.get("layer", 0) >= 125 and counts.get("net", 0) >= 8 and counts.get("solver", 0) >= 10
