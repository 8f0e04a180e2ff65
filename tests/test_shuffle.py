"""conftest's --shuffle: a seeded order that keeps every test and each file's tests together."""
from types import SimpleNamespace

from conftest import _shuffle


def _items():
    return [SimpleNamespace(nodeid=f"tests/test_{f}.py::test_{i}") for f in "abcd" for i in range(5)]


def test_shuffle_is_seeded_keeps_every_test_and_each_file_together():
    first, again, other = _items(), _items(), _items()
    for items, seed in ((first, 7), (again, 7), (other, 8)):
        _shuffle(items, seed)
    ids = [i.nodeid for i in first]
    assert ids == [i.nodeid for i in again] and ids != [i.nodeid for i in other]
    assert sorted(ids) == sorted(i.nodeid for i in _items()) and ids != [i.nodeid for i in _items()]
    files = [nid.split("::")[0] for nid in ids]
    assert len([f for k, f in enumerate(files) if k == 0 or f != files[k - 1]]) == 4     # contiguous
