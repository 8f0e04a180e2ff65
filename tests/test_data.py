"""Data layers on real files (h5, LMDB, PNG lists, MNIST raw files), transforms,
sampling orders (class-aware balance included) and data errors."""
from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

from netspec.check import check_net, load                      # noqa: E402
from netspec.data import Feeder                                  # noqa: E402
from netspec.data import samplers                                # noqa: E402
from netspec.diagnostics import NetspecError                     # noqa: E402
from netspec.lower import NetState                               # noqa: E402
from netspec.proto import caffe_pb2                              # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CLASSIFIER = """
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: %d } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    """Caffe resolves data paths against the working directory: run where the files are."""
    monkeypatch.chdir(tmp_path)


def checked(tmp_path: Path, layers: str, phase: str = "TRAIN", classes: int | None = None):
    text = 'name: "t"\n' + layers + (CLASSIFIER % classes if classes else "")
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    _, src = load(path)
    return check_net(src, NetState.of(phase))


def feed(tmp_path, layers, phase="TRAIN", classes=None, **kw) -> Feeder:
    return Feeder(checked(tmp_path, layers, phase, classes), seed=kw.pop("seed", 0), num_workers=kw.pop("workers", 0), **kw)


def take(feeder, n):
    return [next(feeder) for _ in range(n)]


def write_h5(path: Path, **datasets) -> Path:
    with h5py.File(path, "w") as f:
        for name, a in datasets.items():
            f.create_dataset(name, data=a)
    return path


def hdf5_layer(source, batch, extra="", top2="label"):
    return (f'layer {{ name: "src" type: "HDF5Data" top: "data" top: "{top2}" {extra}\n'
            f'  hdf5_data_param {{ source: "{source}" batch_size: {batch} {""} }} }}\n')


@pytest.fixture
def two_files(tmp_path):
    """Records 0..9 in two files (6 + 4 rows); data value = record id."""
    ids = np.arange(10, dtype=np.float32)
    write_h5(tmp_path / "a.h5", data=ids[:6, None, None, None] * np.ones((6, 1, 2, 2), np.float32),
             label=ids[:6] % 3)
    write_h5(tmp_path / "b.h5", data=ids[6:, None, None, None] * np.ones((4, 1, 2, 2), np.float32),
             label=ids[6:] % 3)
    (tmp_path / "list.txt").write_text("a.h5\n\nb.h5\n")
    return tmp_path


def ids_of(batch) -> list[int]:
    return batch["data"][:, 0, 0, 0].int().tolist()


# -- HDF5Data ----------------------------------------------------------------------------
def test_hdf5_sequential_crosses_files_and_wraps(two_files):
    f = feed(two_files, hdf5_layer(two_files / "list.txt", 4))
    assert [ids_of(b) for b in take(f, 3)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    assert f.records() == {"src": 10}


def test_hdf5_shape_inference_reads_dataset_shapes(two_files):
    net = checked(two_files, hdf5_layer(two_files / "list.txt", 4), classes=3)
    shapes = {str(b): s for b, s in net.shapes.items()}
    assert shapes["data"] == (4, 1, 2, 2) and shapes["label"] == (4,) and shapes["ip"] == (4, 3)


def test_hdf5_shuffle_permutes_files_and_rows_per_epoch(two_files):
    layer = hdf5_layer(two_files / "list.txt", 5).replace("batch_size: 5", "batch_size: 5 shuffle: true")
    ids = sum((ids_of(b) for b in take(feed(two_files, layer), 8)), [])
    epochs = [ids[i:i + 10] for i in range(0, 40, 10)]
    for e in epochs:
        assert sorted(e) == list(range(10))                 # each epoch: every record once
        first = set(e[:6]) if e[0] < 6 else set(e[:4])      # a file's rows stay together
        assert first in ({0, 1, 2, 3, 4, 5}, {6, 7, 8, 9})
    assert len({tuple(e) for e in epochs}) > 1               # reshuffled between epochs
    again = sum((ids_of(b) for b in take(feed(two_files, layer), 8)), [])
    assert ids == again                                      # deterministic for a seed
    other = sum((ids_of(b) for b in take(feed(two_files, layer, seed=1), 8)), [])
    assert other != ids


def test_hdf5_wrong_dataset_name_names_file_and_suggests(two_files):
    with pytest.raises(NetspecError) as e:
        feed(two_files, hdf5_layer(two_files / "list.txt", 4, top2="lable"))
    text = e.value.render()
    assert "a.h5" in text and "no dataset 'lable'" in text and "did you mean 'label'" in text
    assert "net.prototxt:" in text


def test_hdf5_missing_files_point_at_source_field(two_files):
    with pytest.raises(NetspecError) as e:
        feed(two_files, hdf5_layer("nowhere.txt", 4))
    d = e.value.diagnostics[0]
    assert d.code == "E0104" and "nowhere.txt" in d.message
    assert d.span.line == 3 and d.span.path.endswith("net.prototxt")   # the source: line
    (two_files / "list.txt").write_text("a.h5\ngone.h5\n")
    with pytest.raises(NetspecError, match=r"'gone.h5' \(line 2 of"):
        feed(two_files, hdf5_layer(two_files / "list.txt", 4))


def test_relative_source_resolves_next_to_prototxt(two_files, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))   # not found from the working directory
    f = feed(two_files, hdf5_layer("list.txt", 2))
    assert ids_of(next(f)) == [0, 1]


def test_shape_inference_falls_back_to_the_prototxt_folder(two_files, tmp_path_factory, monkeypatch):
    from netspec.layers.data import HDF5Data
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    lp = caffe_pb2.LayerParameter(name="src", type="HDF5Data", top=["data", "label"])
    lp.hdf5_data_param.source, lp.hdf5_data_param.batch_size = "list.txt", 3
    layer = HDF5Data(lp)
    assert layer.infer([]) == [None, None]                  # not found from the working directory
    layer.net_path = str(two_files / "net.prototxt")        # set by lowering: the prototxt's path
    assert layer.infer([]) == [(3, 1, 2, 2), (3,)]


def test_two_data_layers_feed_one_batch(tmp_path):
    write_h5(tmp_path / "x.h5", data=np.arange(8, dtype=np.float32).reshape(4, 2))
    write_h5(tmp_path / "y.h5", label=np.array([3, 1, 2, 0], np.float32))
    (tmp_path / "x.txt").write_text("x.h5\n")
    (tmp_path / "y.txt").write_text("y.h5\n")
    layers = ('layer { name: "x" type: "HDF5Data" top: "data" hdf5_data_param { source: "x.txt" batch_size: 2 } }\n'
              'layer { name: "y" type: "HDF5Data" top: "label" hdf5_data_param { source: "y.txt" batch_size: 2 } }\n')
    f = feed(tmp_path, layers)
    b = next(f)
    assert sorted(f.tops) == ["data", "label"]
    assert b["data"].tolist() == [[0, 1], [2, 3]] and b["label"].tolist() == [3, 1]


# -- labels ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, word", [(3.0, "label 3"), (-1.0, "label -1"), (1.5, "label 1.5")])
def test_bad_labels_name_the_record(tmp_path, bad, word):
    labels = np.array([0, 1, bad, 2], np.float32)
    write_h5(tmp_path / "d.h5", data=np.zeros((4, 1, 2, 2), np.float32), label=labels)
    (tmp_path / "l.txt").write_text("d.h5\n")
    f = feed(tmp_path, hdf5_layer("l.txt", 4), classes=3)
    with pytest.raises(NetspecError) as e:
        next(f)
    text = e.value.render()
    assert word in text and "row 2 of" in text and "d.h5" in text and "[0, 2]" in text


def test_ignore_label_is_accepted(tmp_path):
    write_h5(tmp_path / "d.h5", data=np.zeros((2, 1, 2, 2), np.float32), label=np.array([255, 1], np.float32))
    (tmp_path / "l.txt").write_text("d.h5\n")
    layers = hdf5_layer("l.txt", 2) + CLASSIFIER.replace('top: "loss"', 'top: "loss" loss_param { ignore_label: 255 }') % 3
    assert next(feed(tmp_path, layers))["label"].tolist() == [255, 1]


# -- transforms --------------------------------------------------------------------------
def image_records(tmp_path, n=4, c=3, h=6, w=5):
    """Records with distinct values, in an HDF5 list; returns the raw array."""
    x = np.arange(n * c * h * w, dtype=np.float32).reshape(n, c, h, w)
    write_h5(tmp_path / "img.h5", data=x, label=np.zeros(n, np.float32))
    (tmp_path / "img.txt").write_text("img.h5\n")
    return x


def with_transform(tp: str, batch=4):
    return hdf5_layer("img.txt", batch).replace('top: "label"', f'top: "label" transform_param {{ {tp} }}')


def test_mean_value_then_scale(tmp_path):
    x = image_records(tmp_path)
    b = next(feed(tmp_path, with_transform("scale: 0.5 mean_value: 1 mean_value: 2 mean_value: 3")))
    want = (x - np.array([1, 2, 3], np.float32)[:, None, None]) * 0.5
    np.testing.assert_allclose(b["data"].numpy(), want)
    b = next(feed(tmp_path, with_transform("mean_value: 10")))
    np.testing.assert_allclose(b["data"].numpy(), x - 10)


def test_mean_file_binaryproto(tmp_path):
    x = image_records(tmp_path)
    mean = np.random.default_rng(0).normal(size=(1, 3, 6, 5)).astype(np.float32)
    blob = caffe_pb2.BlobProto(num=1, channels=3, height=6, width=5, data=mean.ravel().tolist())
    (tmp_path / "mean.binaryproto").write_bytes(blob.SerializeToString())
    b = next(feed(tmp_path, with_transform('mean_file: "mean.binaryproto" scale: 2 crop_size: 4'), "TEST"))
    np.testing.assert_allclose(b["data"].numpy(), ((x - mean) * 2)[:, :, 1:5, 0:4], rtol=1e-6)


def test_mean_file_of_wrong_shape_is_an_error(tmp_path):
    image_records(tmp_path)
    blob = caffe_pb2.BlobProto(shape=caffe_pb2.BlobShape(dim=[1, 3, 2, 2]), data=[0.0] * 12)
    (tmp_path / "mean.binaryproto").write_bytes(blob.SerializeToString())
    with pytest.raises(NetspecError, match=r"mean file has shape \(3, 2, 2\)"):
        next(feed(tmp_path, with_transform('mean_file: "mean.binaryproto"')))


def test_centre_crop_in_test_random_crop_in_train(tmp_path):
    x = image_records(tmp_path, n=4, c=1, h=7, w=7)
    b = next(feed(tmp_path, with_transform("crop_size: 3"), "TEST"))
    np.testing.assert_array_equal(b["data"].numpy(), x[:, :, 2:5, 2:5])
    offsets = set()
    for batch in take(feed(tmp_path, with_transform("crop_size: 3")), 25):
        for k, crop in enumerate(batch["data"].numpy()):
            i = int(round(crop[0, 0, 0])) - int(x[0, 0, 0, 0])
            rec, rem = divmod(i, 49)
            top, left = divmod(rem, 7)
            np.testing.assert_array_equal(crop, x[rec, :, top:top + 3, left:left + 3])
            offsets.add((top, left))
    assert offsets == {(t, l) for t in range(5) for l in range(5)}   # every offset Rand(7-3+1) can draw


def test_mirror_flips_about_half_in_both_phases(tmp_path):
    x = image_records(tmp_path, n=4, c=2, h=3, w=4)
    for phase in ("TRAIN", "TEST"):                   # Caffe mirrors in TEST too when mirror: true
        flips = 0
        for batch in take(feed(tmp_path, with_transform("mirror: true"), phase), 50):
            for rec, got in zip(range(4), batch["data"].numpy()):
                same, flipped = np.array_equal(got, x[rec]), np.array_equal(got, x[rec][:, :, ::-1])
                assert same != flipped
                flips += flipped
        assert 60 < flips < 140                        # binomial(200, 1/2): mean 100, sd 7.1


def test_mean_file_and_mean_value_together_fail_the_check(tmp_path):
    image_records(tmp_path)
    with pytest.raises(NetspecError, match="mean_file and mean_value cannot both be given"):
        checked(tmp_path, with_transform('mean_file: "m.binaryproto" mean_value: 1'))


def test_window_data_is_refused_clearly(tmp_path):
    layer = ('layer { name: "w" type: "WindowData" top: "data" top: "label"\n'
             '  window_data_param { source: "w.txt" batch_size: 2 crop_size: 4 } }\n')
    with pytest.raises(NetspecError, match="cannot read WindowData"):
        feed(tmp_path, layer)


def test_crop_larger_than_record(tmp_path):
    image_records(tmp_path, h=3, w=3)
    with pytest.raises(NetspecError, match=r"crop_size 9 is larger than row 0 of .*img.h5' \(3 x 3\)"):
        next(feed(tmp_path, with_transform("crop_size: 9")))


def test_random_transforms_identical_with_workers(tmp_path):
    image_records(tmp_path, n=8, c=1, h=6, w=6)
    layer = with_transform("crop_size: 4 mirror: true", batch=3)
    serial = take(feed(tmp_path, layer, seed=5), 6)
    parallel = take(feed(tmp_path, layer, seed=5, workers=2), 6)
    for a, b in zip(serial, parallel):
        assert np.array_equal(a["data"].numpy(), b["data"].numpy())


# -- ImageData ---------------------------------------------------------------------------
def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image
    Image.fromarray(array).save(path)


@pytest.fixture
def image_list(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "imgs").mkdir()
    pixels = [rng.integers(0, 256, (5, 4, 3), dtype=np.uint8) for _ in range(3)]
    for i, p in enumerate(pixels):
        write_png(tmp_path / "imgs" / f"im {i}.png", p)           # a space in the name: split at the last one
    (tmp_path / "list.txt").write_text("im 0.png 2\nim 1.png 0\nim 2.png 1\n")
    return tmp_path, pixels


def image_layer(extra="", batch=3):
    return ('layer { name: "img" type: "ImageData" top: "data" top: "label"\n'
            f'  image_data_param {{ source: "list.txt" root_folder: "imgs/" batch_size: {batch} {extra} }} }}\n')


def test_image_data_decodes_bgr_with_labels(image_list):
    tmp, pixels = image_list
    b = next(feed(tmp, image_layer()))
    assert b["label"].tolist() == [2, 0, 1]
    want = np.stack([p[:, :, ::-1].transpose(2, 0, 1) for p in pixels]).astype(np.float32)
    np.testing.assert_array_equal(b["data"].numpy(), want)
    net = checked(tmp, image_layer())                              # shape from the first image
    assert {str(k): v for k, v in net.shapes.items()}["data"] == (3, 3, 5, 4)


def test_image_data_grey_resize_and_shuffle(image_list):
    tmp, pixels = image_list
    from PIL import Image
    b = next(feed(tmp, image_layer("is_color: false new_height: 3 new_width: 2")))
    grey = [np.asarray(Image.fromarray(p).convert("L").resize((2, 3), Image.BILINEAR)) for p in pixels]
    np.testing.assert_array_equal(b["data"].numpy(), np.stack(grey)[:, None].astype(np.float32))
    labels = [next(feed(tmp, image_layer("shuffle: true", 3), seed=s))["label"].tolist() for s in range(6)]
    assert all(sorted(l) == [0, 1, 2] for l in labels) and len({tuple(l) for l in labels}) > 1


def test_corrupt_image_names_file_and_line(image_list):
    tmp, _ = image_list
    (tmp / "imgs" / "im 1.png").write_bytes(b"not a png at all")
    with pytest.raises(NetspecError) as e:
        next(feed(tmp, image_layer()))
    assert "im 1.png" in e.value.render() and "line 2 of" in e.value.render()


def test_image_list_bad_line(image_list):
    tmp, _ = image_list
    (tmp / "list.txt").write_text("im 0.png 2\nim 1.png\n")
    with pytest.raises(NetspecError, match="line 2 of .* is not 'path label'"):
        feed(tmp, image_layer())


# -- Data (LMDB) -------------------------------------------------------------------------
def write_lmdb(path: Path, records: dict[bytes, bytes]) -> Path:
    import lmdb
    with lmdb.open(str(path), map_size=1 << 24) as env:
        with env.begin(write=True) as txn:
            for k, v in records.items():
                txn.put(k, v)
    return path


def png_bytes(array) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def lmdb_layer(batch, extra=""):
    return ('layer { name: "db" type: "Data" top: "data" top: "label" ' + extra +
            f'\n  data_param {{ source: "db" batch_size: {batch} backend: LMDB }} }}\n')


def test_lmdb_raw_encoded_and_float_datums(tmp_path):
    pytest.importorskip("lmdb")
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)          # CHW, as Caffe stores it
    rgb = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    flt = rng.normal(size=(3, 4, 5)).astype(np.float32)
    datums = {
        b"00000000_a": caffe_pb2.Datum(channels=3, height=4, width=5, data=raw.tobytes(), label=7),
        b"00000001_b": caffe_pb2.Datum(data=png_bytes(rgb), encoded=True, label=3),
        b"00000002_c": caffe_pb2.Datum(channels=3, height=4, width=5, float_data=flt.ravel().tolist(), label=1),
    }
    write_lmdb(tmp_path / "db", {k: d.SerializeToString() for k, d in datums.items()})
    b = next(feed(tmp_path, lmdb_layer(3)))
    assert b["label"].tolist() == [7, 3, 1]
    np.testing.assert_array_equal(b["data"][0].numpy(), raw)
    np.testing.assert_array_equal(b["data"][1].numpy(), rgb[:, :, ::-1].transpose(2, 0, 1))
    np.testing.assert_allclose(b["data"][2].numpy(), flt)
    net = checked(tmp_path, lmdb_layer(3, 'transform_param { crop_size: 2 }'))
    assert {str(k): v for k, v in net.shapes.items()}["data"] == (3, 3, 2, 2)


def test_lmdb_corrupt_datum_names_key(tmp_path):
    pytest.importorskip("lmdb")
    good = caffe_pb2.Datum(channels=1, height=2, width=2, data=bytes(4), label=0).SerializeToString()
    short = caffe_pb2.Datum(channels=1, height=2, width=2, data=bytes(3), label=0).SerializeToString()
    write_lmdb(tmp_path / "db", {b"k0": good, b"k1": b"\xff\xff\xff garbage", b"k2": short})
    f = feed(tmp_path, lmdb_layer(1))
    next(f)
    with pytest.raises(NetspecError, match=r"record 1 \(key 'k1'\) of LMDB .* is not a Caffe Datum"):
        next(f)
    with pytest.raises(NetspecError, match=r"key 'k2'.* is corrupt: 3 data bytes"):
        next(f)


def test_lmdb_missing_database(tmp_path):
    with pytest.raises(NetspecError, match="LMDB 'db' does not exist"):
        feed(tmp_path, lmdb_layer(1))


# -- MemoryData --------------------------------------------------------------------------
MEMORY = ('layer { name: "mem" type: "MemoryData" top: "data" top: "label"\n'
          '  memory_data_param { batch_size: 2 channels: 1 height: 2 width: 3 } }\n')


def test_memory_data_set_from_python(tmp_path):
    f = feed(tmp_path, MEMORY)
    with pytest.raises(NetspecError, match="has no data yet"):
        next(f)
    with pytest.raises(NetspecError, match=r"shape \(N, 1, 2, 3\)"):
        f.set_memory_data("mem", np.zeros((3, 1, 3, 2)), np.zeros(3))
    x = np.arange(18, dtype=np.float32).reshape(3, 1, 2, 3)
    f.set_memory_data("mem", x, [0, 1, 2])
    b1, b2 = take(f, 2)
    np.testing.assert_array_equal(b1["data"].numpy(), x[:2])
    assert b2["label"].tolist() == [2, 0]                            # wraps around
    f.set_memory_data("mem", x, [0, 1, 2])                            # Reset starts again
    assert next(f)["label"].tolist() == [0, 1]


# -- TorchvisionData ---------------------------------------------------------------------
def write_fake_mnist(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    n = len(images)
    for split in ("train", "t10k"):
        (raw / f"{split}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())


def test_torchvision_mnist_on_disk(tmp_path):
    pytest.importorskip("torchvision")
    images = np.random.default_rng(2).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([4, 0, 9, 1, 1], np.uint8)
    write_fake_mnist(tmp_path / "tv", images, labels)
    layer = ('layer { name: "mnist" type: "TorchvisionData" top: "data" top: "label"\n'
             '  transform_param { scale: 0.00390625 }\n'
             '  torchvision_param { dataset: "MNIST" root: "tv" train: true batch_size: 4 } }\n')
    net = checked(tmp_path, layer, classes=10)
    assert {str(k): v for k, v in net.shapes.items()}["data"] == (4, 1, 28, 28)
    b1, b2 = take(Feeder(net, num_workers=0), 2)
    np.testing.assert_allclose(b1["data"].numpy(), images[:4, None] / 256.0)
    assert b1["label"].tolist() == [4, 0, 9, 1] and b2["label"].tolist() == [1, 4, 0, 9]


def test_torchvision_missing_dataset_never_downloads(tmp_path):
    (tmp_path / "empty").mkdir()
    layer = ('layer { name: "c" type: "TorchvisionData" top: "data" top: "label"\n'
             '  torchvision_param { dataset: "CIFAR10" root: "empty" batch_size: 2 } }\n')
    with pytest.raises(NetspecError, match="no CIFAR10 dataset under") as e:
        feed(tmp_path, layer)
    assert "never downloads" in e.value.render()


# -- sampling ----------------------------------------------------------------------------
def test_class_aware_balances_an_imbalanced_set():
    labels = np.repeat([0, 1, 2, 3], [400, 40, 8, 2])                 # 200:20:4:1
    rng = np.random.default_rng(7)
    draws = np.array([next(it) for it in [samplers.class_aware(labels, rng)] for _ in range(4000)])
    classes = labels[draws]
    # at every prefix no class is ahead of another by more than one full class-list pass
    counts = np.stack([np.cumsum(classes == c) for c in range(4)])
    assert (counts.max(0) - counts.min(0)).max() <= 2
    # chi-square against uniform (3 dof, 0.1% critical value 16.27) ...
    chi2 = (((np.bincount(classes, minlength=4) - 1000) ** 2) / 1000).sum()
    assert chi2 < 16.27
    # ... which plain shuffling fails by orders of magnitude on the same labels
    shuffled = labels[[next(it) for it in [samplers.shuffled(len(labels), rng)] for _ in range(4000)]]
    assert (((np.bincount(shuffled, minlength=4) - 1000) ** 2) / 1000).sum() > 1000
    # within a class every record is used equally: class 1 has 40 records, drawn 1000 times
    per_record = np.bincount(draws[classes == 1] - 400, minlength=40)
    assert per_record.min() >= 24 and per_record.max() <= 26
    # and the class order is random, not a fixed rotation
    assert len({tuple(classes[i:i + 4]) for i in range(0, 400, 4)}) > 10


def test_class_aware_through_the_feeder_is_seeded(tmp_path):
    labels = np.repeat([0, 1, 2], [90, 9, 1]).astype(np.float32)
    write_h5(tmp_path / "d.h5", data=np.arange(100, dtype=np.float32)[:, None], label=labels)
    (tmp_path / "l.txt").write_text("d.h5\n")
    layer = hdf5_layer("l.txt", 30).replace('top: "label"', 'top: "label" sampling_param { mode: CLASS_AWARE seed: 3 }')
    got = np.concatenate([b["label"].numpy() for b in take(feed(tmp_path, layer), 4)]).astype(int)
    assert np.bincount(got).tolist() == [40, 40, 40]
    again = np.concatenate([b["data"].numpy() for b in take(feed(tmp_path, layer, seed=99), 4)])
    first = np.concatenate([b["data"].numpy() for b in take(feed(tmp_path, layer), 4)])
    assert np.array_equal(again, first)                               # sampling_param.seed wins


def test_class_aware_needs_integer_labels(tmp_path):
    write_h5(tmp_path / "d.h5", data=np.zeros((3, 1), np.float32), label=np.array([0, 0.5, 1], np.float32))
    (tmp_path / "l.txt").write_text("d.h5\n")
    layer = hdf5_layer("l.txt", 2).replace('top: "label"', 'top: "label" sampling_param { mode: CLASS_AWARE }')
    with pytest.raises(NetspecError, match=r"integer labels, but row 1 of .*d.h5' has label 0.5"):
        next(feed(tmp_path, layer))


# -- the bundled digits --------------------------------------------------------------------
@pytest.mark.parametrize("split, records", [("train", 1500), ("test", 297)])
def test_bundled_digits_load(tmp_path, split, records, monkeypatch):
    monkeypatch.chdir(REPO)
    f = feed(tmp_path, hdf5_layer(f"models/digits/{split}.txt", 100), classes=10)
    assert f.records() == {"src": records}
    batches = take(f, -(-records // 100))
    data = np.concatenate([b["data"].numpy() for b in batches])[:records]
    labels = np.concatenate([b["label"].numpy() for b in batches])[:records]
    assert data.shape == (records, 1, 8, 8) and data.min() == 0 and data.max() == 1
    assert np.array_equal(np.unique(labels), np.arange(10))
    assert np.bincount(labels.astype(int)).min() >= records // 10 - 6   # stratified split
    assert len(np.unique(data * 16)) == 17                              # 0..16 grey levels
