"""Dataset loading from every supported source, pixel scaling, subsets and the missing-data error."""

import gzip
import pickle
import struct
from pathlib import Path

import keras
import numpy as np
import pytest

from mi_estimators.checks import InputError
from utils import data
from utils.data import IDX_FILES, DatasetUnavailableError, load_dataset

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Point the Keras cache at an empty folder and make any download attempt fail loudly."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(keras.utils, "get_file", refuse)
    monkeypatch.setattr(keras.datasets.mnist, "load_data", refuse)
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", refuse)


def _write_idx(path, array, compress):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path, "wb") if compress else open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def _fake_mnist(folder, compress, n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    arrays = [
        rng.integers(0, 256, (n_train, 28, 28)),
        rng.integers(0, 10, n_train),
        rng.integers(0, 256, (n_test, 28, 28)),
        rng.integers(0, 10, n_test),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in zip(IDX_FILES, arrays):
        _write_idx(folder / (stem + (".gz" if compress else "")), array, compress)
    return arrays


def _check_matches(ds, arrays):
    x_train, y_train, x_test, y_test = arrays
    np.testing.assert_array_equal(ds.x_train, (x_train.reshape(ds.x_train.shape) / 255.0).astype(np.float32))
    np.testing.assert_array_equal(ds.x_test, (x_test.reshape(ds.x_test.shape) / 255.0).astype(np.float32))
    np.testing.assert_array_equal(ds.y_train, y_train)
    np.testing.assert_array_equal(ds.y_test, y_test)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64


def test_digits_are_scaled_8x8_images_with_a_fixed_stratified_split():
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1347, 8, 8, 1) and ds.x_test.shape == (450, 8, 8, 1)
    assert ds.input_shape == (8, 8, 1) and ds.n_classes == 10
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    counts = np.bincount(np.concatenate([ds.y_train, ds.y_test]))
    assert np.all(np.abs(np.bincount(ds.y_test) - 0.25 * counts) <= 1)  # stratified
    np.testing.assert_array_equal(load_dataset("digits", seed=3).x_test, ds.x_test)  # split does not move


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason=f"{FASHION_DIR} absent (Debian package dataset-fashion-mnist)")
def test_fashion_mnist_from_debian_idx_files():
    ds = load_dataset("fashion_mnist", data_dir=FASHION_DIR)
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.x_train.min() == 0.0 and ds.x_train.max() == 1.0
    assert np.all(np.bincount(ds.y_train) == 6000) and np.all(np.bincount(ds.y_test) == 1000)
    mean, std = ds.channel_stats()
    assert mean[0] == pytest.approx(0.2860, abs=5e-4) and std[0] == pytest.approx(0.3530, abs=5e-4)


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("sub", ["", "mnist"])
def test_mnist_idx_files_read_back(tmp_path, compress, sub):
    arrays = _fake_mnist(tmp_path / "d" / sub, compress)
    ds = load_dataset("mnist", data_dir=tmp_path / "d")
    _check_matches(ds, arrays)
    assert ds.x_train.shape == (12, 28, 28, 1)


def test_fashion_mnist_from_the_keras_cache_without_download(tmp_path):
    arrays = _fake_mnist(tmp_path / "keras_home" / "datasets" / "fashion-mnist", compress=True)
    ds = load_dataset("fashion_mnist")
    _check_matches(ds, arrays)
    assert "fashion-mnist" in ds.source


def test_keras_npz_cache(tmp_path):
    rng = np.random.default_rng(1)
    arrays = [
        rng.integers(0, 256, (7, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 7, dtype=np.uint8),
        rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 3, dtype=np.uint8),
    ]
    (tmp_path / "keras_home" / "datasets").mkdir(parents=True)
    np.savez(
        tmp_path / "keras_home" / "datasets" / "mnist.npz",
        **dict(zip(("x_train", "y_train", "x_test", "y_test"), arrays)),
    )
    _check_matches(load_dataset("mnist"), arrays)


def _cifar_images(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def _planes(images):
    """CIFAR-10 stores each image as its R, G and B 32x32 planes, one after the other."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def _write_cifar_bin(path, images, labels):
    path.write_bytes(np.concatenate([labels[:, None], _planes(images)], axis=1).tobytes())


def _write_cifar_py3(path, images, labels):
    # A fixture in the format CIFAR-10 ships (a protocol-2 pickled dict); the loader never unpickles it.
    batch = {
        "batch_label": "testing batch",
        "labels": [int(v) for v in labels],
        "data": _planes(images),
        "filenames": [f"img_{i}.png" for i in range(len(labels))],
    }
    path.write_bytes(pickle.dumps(batch, protocol=2))


def _write_cifar_py2(path, images, labels):
    # The opcodes Python 2's cPickle writes for the released files: short keys, one BINSTRING of pixels.
    def key(text):
        return b"U" + bytes([len(text)]) + text.encode()

    pixels = _planes(images).tobytes()
    body = (
        key("batch_label")
        + key("training batch 1 of 5")
        + key("labels")
        + b"]("
        + b"".join(b"K" + bytes([int(v)]) for v in labels)
        + b"e"
        + key("data")
        + key("b")
        + b"T"
        + struct.pack("<i", len(pixels))
        + pixels
    )
    path.write_bytes(b"\x80\x02}(" + body + b"u.")


@pytest.mark.parametrize(
    "layout, writer, suffix",
    [
        ("cifar-10-batches-bin", _write_cifar_bin, ".bin"),
        ("", _write_cifar_bin, ".bin"),
        ("cifar-10-batches-py", _write_cifar_py3, ""),
        ("cifar-10-batches-py", _write_cifar_py2, ""),
    ],
)
def test_cifar10_batches_read_back(tmp_path, layout, writer, suffix):
    folder = tmp_path / "d" / layout
    folder.mkdir(parents=True, exist_ok=True)
    parts = [_cifar_images(3, seed) for seed in range(6)]
    for name, (images, labels) in zip([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], parts):
        writer(folder / (name + suffix), images, labels)
    ds = load_dataset("cifar10", data_dir=tmp_path / "d")
    expected = (np.concatenate([p[0] for p in parts[:5]]), np.concatenate([p[1] for p in parts[:5]]), *parts[5])
    _check_matches(ds, expected)
    assert ds.x_train.shape == (15, 32, 32, 3) and ds.input_shape == (32, 32, 3)


def test_corrupt_files_are_reported_by_name(tmp_path):
    _fake_mnist(tmp_path, compress=False)
    (tmp_path / IDX_FILES[0]).write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3i", 100, 28, 28) + b"\x00" * 10)
    with pytest.raises(DatasetUnavailableError, match=IDX_FILES[0]):
        load_dataset("mnist", data_dir=tmp_path)
    bad = tmp_path / "cifar"
    bad.mkdir()
    for name in data.CIFAR_BIN_FILES:
        (bad / name).write_bytes(b"\x01" * 3000)
    with pytest.raises(DatasetUnavailableError, match="data_batch_1.bin"):
        load_dataset("cifar10", data_dir=bad)


def test_pixels_outside_unit_range_are_refused(tmp_path):
    np.savez(
        tmp_path / "mnist.npz",
        x_train=np.full((2, 28, 28), 3.0),
        y_train=np.zeros(2, int),
        x_test=np.zeros((1, 28, 28)),
        y_test=np.zeros(1, int),
    )
    with pytest.raises(DatasetUnavailableError, match=r"\[0, 1\]"):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_data_dir_files_raise_one_paragraph_naming_data_dir(tmp_path, name):
    with pytest.raises(DatasetUnavailableError) as err:
        load_dataset(name, data_dir=tmp_path)
    message = str(err.value)
    assert "--data-dir" in message and str(tmp_path) in message and "\n" not in message
    assert ("test_batch.bin" if name == "cifar10" else "t10k-images-idx3-ubyte") in message
    with pytest.raises(DatasetUnavailableError, match="--data-dir"):
        load_dataset(name, data_dir=tmp_path / "absent")


def test_failed_download_raises_dataset_unavailable(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://example: None -- [Errno -3] name resolution")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(DatasetUnavailableError) as err:
        load_dataset("mnist")
    assert "download failed" in str(err.value) and "--data-dir" in str(err.value)
    assert isinstance(err.value, InputError)  # the user provides the data: one error line, exit 2


def test_train_subset_is_stratified_seeded_and_a_subset():
    full = load_dataset("digits")
    sub = load_dataset("digits", train_subset=200, seed=1)
    assert sub.x_train.shape == (200, 8, 8, 1)
    assert np.all(np.abs(np.bincount(sub.y_train) - 200 * np.bincount(full.y_train) / len(full.y_train)) <= 1)
    np.testing.assert_array_equal(load_dataset("digits", train_subset=200, seed=1).x_train, sub.x_train)
    assert not np.array_equal(load_dataset("digits", train_subset=200, seed=2).x_train, sub.x_train)
    rows = {r.tobytes() for r in full.x_train}
    assert all(r.tobytes() in rows for r in sub.x_train)
    np.testing.assert_array_equal(sub.x_test, full.x_test)
    tiny = load_dataset("digits", train_subset=5)  # fewer samples than classes: plain random subset
    assert len({r.tobytes() for r in tiny.x_train}) == 5


@pytest.mark.parametrize("n", [0, 1348, 2.5, True])
def test_bad_train_subset_raises(n):
    with pytest.raises(ValueError, match="train_subset"):
        load_dataset("digits", train_subset=n)


def test_unknown_dataset_raises():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        load_dataset("svhn")
