import os
import random
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# the Caffe zoo and oracle data live beside the checkout (../shared); NETSPEC_SHARED points
# elsewhere.  Where they are absent, the tests that need them skip, and the header says so.
SHARED = Path(os.environ.get("NETSPEC_SHARED") or REPO.parent / "shared")


def pytest_report_header(config):
    found = all((SHARED / d).is_dir() for d in ("caffe-zoo", "caffe-oracle"))
    return f"Caffe zoo and oracle data: {SHARED} ({'present' if found else 'ABSENT: the tests that need them skip'})"


def shared_path(*parts: str) -> Path:
    """A path under the shared Caffe data; skips the calling test when it is not there."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} absent (the Caffe zoo/oracle data; set NETSPEC_SHARED)")
    return path
sys.path.insert(0, str(TESTS))


def pytest_addoption(parser):
    parser.addoption("--shuffle", type=int, metavar="SEED", default=None,
                     help="run the test files, and the tests in each, in an order drawn from SEED "
                          "(finds tests that pass only after another; each file's tests stay together)")


def _shuffle(items: list, seed: int) -> None:
    rng = random.Random(seed)
    files: dict[str, list] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], []).append(item)
    order = list(files)
    rng.shuffle(order)
    for name in order:
        rng.shuffle(files[name])
    items[:] = [item for name in order for item in files[name]]


def pytest_collection_modifyitems(config, items):
    if config.getoption("--shuffle") is not None:
        _shuffle(items, config.getoption("--shuffle"))
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def repo_cwd(monkeypatch):
    """Run with the repository root as working directory (paths in goldens are relative)."""
    monkeypatch.chdir(REPO)
    return REPO


@pytest.fixture(autouse=True)
def _process_wide_torch_settings():
    """Scripts run in-process (benchmarks, experiments) may set torch's thread count; put it
    back so later tests neither crawl on one thread nor depend on the order they run in.
    Flushing denormals must never leak: hypothesis refuses to run with it on."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
    from netspec.solve.solver import _flushing_denormals
    assert not _flushing_denormals(), "a test left torch flushing denormals process-wide"
