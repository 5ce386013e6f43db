"""Datasets: MNIST, Fashion-MNIST, CIFAR-10 and scikit-learn's 8x8 digits, as float32 pixels in [0, 1].

Where the data come from, in order:

* ``data_dir`` given: only local files there (or in the usual sub-folder, see ``DATASETS[name].subdirs``),
  never a download: MNIST-format ``idx``/``idx.gz`` files, a Keras-style ``<name>.npz``, CIFAR-10 binary
  batches, or the CIFAR-10 python-version batches.
* otherwise the Keras cache (``$KERAS_HOME`` or ``~/.keras``, then ``datasets/``) if it holds the data,
  else a download through Keras (``keras.datasets`` for MNIST/Fashion-MNIST, ``keras.utils.get_file``
  with Keras' CIFAR-10 archive).

Nothing is unpickled: the CIFAR-10 python-version batches are pickles, which are scanned with
``pickletools.genops`` (an opcode disassembler that never builds objects or imports modules) to pick out
the pixel bytes and the label list.
"""

from __future__ import annotations

import gzip
import os
import pickletools
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mi_estimators.checks import InputError, check_int

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_BIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
CIFAR_PY_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR_ORIGIN = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


class DatasetUnavailableError(InputError):
    """The dataset is neither on disk nor downloadable, or a file of it is damaged; the message says which
    files to provide."""


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: image shape, classes and where local copies may lie."""

    shape: tuple[int, int, int]
    n_classes: int
    subdirs: tuple[str, ...]
    files: str


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo(
        (28, 28, 1),
        10,
        ("", "mnist"),
        f"the four MNIST idx files ({', '.join(IDX_FILES)}, optionally .gz) or mnist.npz",
    ),
    "fashion_mnist": DatasetInfo(
        (28, 28, 1),
        10,
        ("", "fashion-mnist", "fashion_mnist"),
        f"the four Fashion-MNIST idx files ({', '.join(IDX_FILES)}, optionally .gz) or fashion_mnist.npz",
    ),
    "cifar10": DatasetInfo(
        (32, 32, 3),
        10,
        ("", "cifar-10-batches-bin", "cifar-10-batches-py", "cifar-10-batches-py-target/cifar-10-batches-py"),
        f"the CIFAR-10 binary batches ({', '.join(CIFAR_BIN_FILES)}), the python-version "
        f"batches ({', '.join(CIFAR_PY_FILES)}) or cifar10.npz",
    ),
    "digits": DatasetInfo((8, 8, 1), 10, (), "nothing (bundled with scikit-learn)"),
}


@dataclass
class Dataset:
    """Train and test split: x float32 in [0, 1] shaped (n, H, W, C), y int64 class indices."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    source: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and standard deviation of x_train (for input normalisation)."""
        pixels = self.x_train.reshape(-1, self.x_train.shape[-1]).astype(np.float64)
        return pixels.mean(axis=0), pixels.std(axis=0)


def _unavailable(name: str, reason: str, data_dir: Path | None) -> DatasetUnavailableError:
    info = DATASETS[name]
    where = f"in {data_dir} " if data_dir is not None else ""
    subdirs = [s for s in info.subdirs if s]
    sub = f" (or its sub-folder {' or '.join(subdirs)})" if subdirs else ""
    return DatasetUnavailableError(
        f"Dataset {name!r} is not available {where}({reason}). Pass --data-dir DIR with {info.files} in "
        f"DIR{sub}, or run once with internet access so that Keras can download it into its cache."
    )


def _keras_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "datasets"


_READ_ERRORS = (OSError, EOFError, zlib.error)
"""What reading a damaged file raises: OSError (unreadable, gzip.BadGzipFile), EOFError (truncated .gz)
and zlib.error (corrupt deflate stream)."""


def _read_bytes(path: Path) -> bytes:
    """The bytes of ``path`` (decompressed when it ends in .gz); DatasetUnavailableError naming the file
    when it cannot be read."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except _READ_ERRORS as err:
        raise DatasetUnavailableError(f"{path} cannot be read ({err})") from None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An MNIST-format idx file of unsigned bytes (magic 0x0000 08 <ndim>, big-endian int32 sizes)."""
    raw = _read_bytes(path)
    if len(raw) < 4 + 4 * ndim or raw[:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] != ndim:
        raise DatasetUnavailableError(f"{path} is not an idx file of {ndim}-D unsigned bytes (bad header)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetUnavailableError(f"{path} holds {data.size} bytes of data, its header promises {dims}")
    return data.reshape(dims)


def _find_idx(folder: Path) -> list[Path] | None:
    paths = []
    for stem in IDX_FILES:
        hits = [folder / (stem + ext) for ext in ("", ".gz") if (folder / (stem + ext)).is_file()]
        if not hits:
            return None
        paths.append(hits[0])
    return paths


def _load_idx(paths: list[Path]) -> tuple[np.ndarray, ...]:
    x_train, y_train, x_test, y_test = (_read_idx(p, 3 if "images" in p.name else 1) for p in paths)
    return x_train[..., None], y_train, x_test[..., None], y_test


def _load_npz(path: Path) -> tuple[np.ndarray, ...]:
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise DatasetUnavailableError(f"{path} lacks the arrays {', '.join(missing)}")
            arrays = [f[k] for k in keys]
    except (*_READ_ERRORS, ValueError, zipfile.BadZipFile) as err:
        raise DatasetUnavailableError(f"{path} is not a readable .npz file ({err})") from None
    if arrays[0].ndim == 3:
        arrays[0], arrays[2] = arrays[0][..., None], arrays[2][..., None]
    return tuple(arrays)


def _cifar_records(raw: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 binary batch: records of 1 label byte + 3072 pixel bytes (R, G, B planes of 32x32)."""
    if len(raw) == 0 or len(raw) % 3073:
        raise DatasetUnavailableError(f"{path} is not a CIFAR-10 binary batch (size {len(raw)} bytes)")
    records = np.frombuffer(raw, np.uint8).reshape(-1, 3073)
    return records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), records[:, 0]


_STRING_OPS = {
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
    "BINBYTES",
    "SHORT_BINBYTES",
    "BINBYTES8",
    "BYTEARRAY8",
}
_INT_OPS = {"BININT", "BININT1", "BININT2", "INT", "LONG1"}


def _as_bytes(arg: Any) -> bytes:
    # Python 2 str and Python 3 protocol-2 bytes both reach us as latin-1 text.
    return arg.encode("latin-1") if isinstance(arg, str) else bytes(arg)


def _read_cifar_py(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10 python-version batch (a pickled dict with 'data' and 'labels'), read without unpickling:
    the pixels are the first byte string of n * 3072 bytes after the key 'data' (short strings in between
    describe the numpy array), the labels the integers between the key 'labels' and the next string."""
    data: bytes | None = None
    labels: list[int] = []
    want_data, in_labels = False, False
    try:
        for opcode, arg, _ in pickletools.genops(_read_bytes(path)):
            if opcode.name in _STRING_OPS:
                value = _as_bytes(arg)
                if want_data and len(value) >= 3072 and len(value) % 3072 == 0:
                    data, want_data = value, False
                    continue
                in_labels = value == b"labels"
                want_data = want_data or (value == b"data" and data is None)
                if in_labels:
                    labels = []
            elif in_labels and opcode.name in _INT_OPS:
                labels.append(int(arg))  # type: ignore[arg-type]  # an int opcode's argument is an int
    except ValueError as err:
        raise DatasetUnavailableError(f"{path} is not a CIFAR-10 python-version batch ({err})") from err
    if data is None or not labels or len(data) != 3072 * len(labels):
        raise DatasetUnavailableError(
            f"{path} is not a CIFAR-10 python-version batch (no matching 'data' and 'labels' entries)"
        )
    pixels = np.frombuffer(data, np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return pixels, np.asarray(labels, dtype=np.int64)


def _load_cifar(folder: Path, names: tuple[str, ...], binary: bool) -> tuple[np.ndarray, ...]:
    parts = []
    for name in names:
        path = folder / name
        parts.append(_cifar_records(_read_bytes(path), path) if binary else _read_cifar_py(path))
    x_train = np.concatenate([x for x, _ in parts[:-1]])
    y_train = np.concatenate([y for _, y in parts[:-1]])
    return x_train, y_train, parts[-1][0], parts[-1][1]


def _load_local(name: str, root: Path) -> tuple[tuple[np.ndarray, ...], str] | None:
    """Arrays and a description of their source, from the first supported layout found under root."""
    for sub in DATASETS[name].subdirs:
        folder = root / sub
        if not folder.is_dir():
            continue
        npz = folder / f"{name}.npz"
        if npz.is_file():
            return _load_npz(npz), f"{npz}"
        if name == "cifar10":
            for files, binary in ((CIFAR_BIN_FILES, True), (CIFAR_PY_FILES, False)):
                if all((folder / f).is_file() for f in files):
                    kind = "binary" if binary else "python-version"
                    return _load_cifar(folder, files, binary), f"CIFAR-10 {kind} batches in {folder}"
        else:
            paths = _find_idx(folder)
            if paths is not None:
                return _load_idx(paths), f"idx files in {folder}"
    return None


def _download(name: str) -> tuple[tuple[np.ndarray, ...], str]:
    import keras  # only here: loading local files should not pay for importing Keras

    if name == "cifar10":
        folder = keras.utils.get_file(
            fname="cifar-10-batches-py-target", origin=CIFAR_ORIGIN, extract=True, file_hash=CIFAR_SHA256
        )
        folder = Path(folder) / "cifar-10-batches-py"
        return _load_cifar(folder, CIFAR_PY_FILES, binary=False), f"Keras download into {folder}"
    loader = keras.datasets.mnist if name == "mnist" else keras.datasets.fashion_mnist
    (x_train, y_train), (x_test, y_test) = loader.load_data()
    return (x_train[..., None], y_train, x_test[..., None], y_test), "Keras download"


def _load_digits() -> tuple[tuple[np.ndarray, ...], str]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=DIGITS_TEST_FRACTION, stratify=digits.target, random_state=DIGITS_SPLIT_SEED
    )
    return (x_train, y_train, x_test, y_test), "scikit-learn load_digits (bundled)"


def _finish(name: str, arrays: tuple[np.ndarray, ...], source: str) -> Dataset:
    """Scale pixels to [0, 1] float32, labels to int64, and check shapes and label range."""
    info = DATASETS[name]
    x_train, y_train, x_test, y_test = arrays
    out: list[np.ndarray] = []
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        y = np.asarray(y).reshape(-1).astype(np.int64)
        if x.shape[1:] != info.shape or len(x) != len(y):
            raise DatasetUnavailableError(
                f"{source}: {split} split has images {x.shape} and {len(y)} labels; "
                f"expected (n, {', '.join(map(str, info.shape))}) and n labels"
            )
        if y.size and (y.min() < 0 or y.max() >= info.n_classes):
            raise DatasetUnavailableError(f"{source}: {split} labels outside 0..{info.n_classes - 1}")
        x = x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x.astype(np.float32)
        if not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
            raise DatasetUnavailableError(f"{source}: {split} pixels are not uint8 or floats in [0, 1]")
        out.extend((x, y))
    return Dataset(name, out[0], out[1], out[2], out[3], info.n_classes, source)


def _subset(ds: Dataset, n: int, seed: int) -> Dataset:
    """A fixed subset of n training examples: stratified by class when every class can be represented
    (scikit-learn StratifiedShuffleSplit), uniformly random otherwise; original order kept."""
    n_train = len(ds.y_train)
    n = check_int(n, "train_subset", minimum=1, maximum=n_train)
    if n == n_train:
        return ds
    counts = np.bincount(ds.y_train, minlength=ds.n_classes)
    present = int((counts > 0).sum())
    if present <= n <= n_train - present and counts[counts > 0].min() >= 2:
        from sklearn.model_selection import StratifiedShuffleSplit

        split = StratifiedShuffleSplit(n_splits=1, train_size=int(n), random_state=seed)
        idx, _ = next(split.split(np.zeros(n_train), ds.y_train))
    else:
        idx = np.random.default_rng(seed).choice(n_train, size=int(n), replace=False)
    idx = np.sort(idx)
    return Dataset(
        ds.name,
        ds.x_train[idx],
        ds.y_train[idx],
        ds.x_test,
        ds.y_test,
        ds.n_classes,
        f"{ds.source}, training subset of {n} (seed {seed})",
    )


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, train_subset: int | None = None, seed: int = 0
) -> Dataset:
    """Load ``name`` (a key of :data:`DATASETS`) with pixels in [0, 1] as float32 (n, H, W, C).

    ``train_subset=N`` keeps a fixed seeded subset of N training examples (the test split stays whole).
    Raises InputError for an unknown name, a ``data_dir`` for the bundled digits or a bad subset size,
    and :class:`DatasetUnavailableError` (message naming --data-dir and the expected files, or the
    damaged file) when the data cannot be had.
    """
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if name == "digits" and data_dir is not None:
        raise InputError(f"data_dir does not apply to 'digits' (bundled with scikit-learn), got {str(data_dir)!r}")
    if name == "digits":
        ds = _finish(name, *_load_digits())
    elif data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise _unavailable(name, f"{root} is not a folder", root)
        found = _load_local(name, root)
        if found is None:
            raise _unavailable(name, "none of the expected files found", root)
        ds = _finish(name, *found)
    else:
        found = _load_local(name, _keras_cache()) if _keras_cache().is_dir() else None
        if found is None:
            try:
                found = _download(name)
            except Exception as err:  # Keras wraps network failures in a bare Exception
                raise _unavailable(name, f"no local copy and the download failed: {err}", None) from err
        ds = _finish(name, *found)
    return ds if train_subset is None else _subset(ds, train_subset, seed)
