"""Reading and writing run folders: one reader per file kind, checked against the declared format of
:mod:`utils.run_folder_schema` (``docs/run_folder.md`` is written from it).

A run folder holds ``config.json`` (flags, dataset, library versions and the analysed dropout layers:
the single source of truth for their noise level), ``history.csv``, ``checkpoint.npz``,
``representations/`` (float32 ``.npy`` files per saved epoch) and ``IP/`` (``{"<epoch>": value}`` JSON
dictionaries of the callback's per-epoch mean KL term and H(Y) - cross-entropy, a lower bound on I(Y;Z),
and ``estimates.json``).

Every reader opens regular files only (a FIFO, device or socket is refused before a byte is read),
checks the whole content (types, ranges, finite numbers, key formats; array dtype, dimensions and
size) and returns typed values, or raises one :class:`~mi_estimators.checks.InputError` naming the file
and the field. Every writer goes through a temporary file in the destination folder and ``os.replace``,
so an interrupted process never leaves a half-written file, and never writes through a link. Every
``.npy`` is loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import re
import stat
import tempfile
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, Callable, Iterator, cast

import numpy as np

from mi_estimators.checks import InputError
from utils import run_folder_schema as schema_
from utils.run_folder_schema import EntryKey, EstimatesFile, RunConfig

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # Windows: no advisory locks; single-process use is still safe
    fcntl = None

SPLITS = schema_.SPLITS
IP_QUANTITIES = ("mean_kl", "mi_zy")
"""What the callback logs per epoch in ``IP/``: the mean KL term of each dropout layer (the training
loss's I(X;Z) surrogate of information dropout, 0 for other layers: not an estimate of I(X;Z)) and
H(Y) - cross-entropy (a lower bound on I(Y;Z))."""
DEFINING_FLAGS = (
    "dataset",
    "net",
    "dropout",
    "p",
    "beta",
    "alpha_max",
    "filters",
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "save_every",
    "train_subset",
    "repr_subset",
    "metrics_subset",
    "seed",
)
"""The flags in ``config.json`` that define a run's numbers: a folder whose flags differ in any of them
holds another run (it is not resumed), and runs that differ only in ``seed`` form a group in a
comparison. The other flags say where the data and the output live, how to distribute, what to print
and whether to analyse."""
TRAIN_LOCK_NAME = ".train.lock"
"""The lock file of the one process allowed to train in a run folder; it holds that process's PID."""
CONFIG_NAME = "config.json"
HISTORY_NAME = "history.csv"
REPR_DIR = "representations"
IP_DIR = "IP"
_TAG = re.compile(schema_.NAME_PATTERN)

PathLike = str | os.PathLike


class MissingFileError(InputError, FileNotFoundError):
    """A file the run folder should hold is not there: an :class:`InputError` (one line from a command)
    that callers catching ``FileNotFoundError`` still catch."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()
"""mkstemp creates files readable by their owner only; written files get the usual permissions."""
_KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def open_regular(path: PathLike, max_bytes: int | None = None) -> BinaryIO:
    """``path`` opened for reading in binary mode, refused unless it is a regular file (a FIFO, device or
    socket would block or never end): it is opened without blocking and checked on the open descriptor,
    so a file swapped meanwhile is caught too. :class:`MissingFileError` when absent; InputError when it
    is no regular file, is unreadable or is larger than ``max_bytes``."""
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise MissingFileError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a file") from None
    except OSError as err:
        raise InputError(f"{path} cannot be read ({err.strerror or err})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise InputError(f"{path} is {_kind(info.st_mode)}, not a regular file: refused before reading it")
    if max_bytes is not None and info.st_size > max_bytes:
        os.close(fd)
        raise InputError(f"{path} has {info.st_size:,} bytes, more than a file of its kind can ({max_bytes:,})")
    if fcntl is not None:  # reads of a regular file never block; back to ordinary reads
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return os.fdopen(fd, "rb")


def check_write_target(path: PathLike, root: PathLike | None = None) -> Path:
    """``path`` if a file may be (re)written there: not a link, a folder or a special file, and (``root``)
    reached from ``root`` through real folders only, so no write goes through a link out of the run
    folder. InputError naming the link otherwise; nothing is created."""
    path = Path(path)
    if root is not None:
        root = Path(root)
        try:
            parts = path.relative_to(root).parts
        except ValueError:
            raise InputError(f"{path} lies outside {root}") from None
        current = root
        for part in parts[:-1]:
            current = current / part
            if current.is_symlink():
                raise InputError(f"{current} is a symbolic link: refusing to write through a link into another folder")
            if current.exists() and not current.is_dir():
                raise InputError(f"{current} is a file where a folder should be")
    if path.is_symlink():
        raise InputError(f"{path} is a symbolic link: refusing to replace it (move it away to write here)")
    if path.exists() and not path.is_file():
        raise InputError(f"{path} is {_kind(path.stat().st_mode)}, not a file that can be replaced")
    return path


def atomic_write(path: PathLike, write: Callable[[Any], None], mode: str) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path`` (opened with ``mode``), then rename it
    to ``path``: readers see the old file or the complete new one, never a partial one. A ``path`` that
    is a link, a folder or a special file is refused (:func:`check_write_target`)."""
    path = check_write_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_json(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically; NaN/inf are refused (ValueError)."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda fh: fh.write(text), "w")


def save_text(path: PathLike, text: str) -> None:
    """Write a text file atomically."""
    atomic_write(path, lambda fh: fh.write(text), "w")


def save_npy(path: PathLike, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` atomically (object arrays are refused: they would need pickle)."""
    arr = np.asarray(array)
    if arr.dtype == object:
        raise InputError(f"refusing to save an object array to {path}: it could only be read with pickle")
    atomic_write(path, lambda fh: np.save(fh, arr, allow_pickle=False), "wb")


def load_json(path: PathLike, schema: Any = None) -> Any:
    """Parsed JSON of the regular file ``path``, checked against ``schema`` (:mod:`utils.run_folder_schema`)
    when given; :class:`MissingFileError` when absent, InputError naming the file (and field) otherwise."""
    path = Path(path)
    with open_regular(path, schema_.MAX_JSON_BYTES) as fh:
        raw = fh.read()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise InputError(f"{path} is not valid JSON ({err})") from None
    return data if schema is None else schema_.validate(data, schema, str(path))


def _npy_header(fh: BinaryIO, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an open ``.npy``; InputError when the header is damaged, the dtype needs pickle
    or the file's size differs from what the header announces (truncated or padded)."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as err:
        raise InputError(f"{path} is not a readable .npy file ({err})") from None
    if dtype.hasobject:
        raise InputError(f"{path} holds Python objects (dtype {dtype}): it could only be read with pickle")
    expected = fh.tell() + math.prod(shape) * dtype.itemsize
    size = os.fstat(fh.fileno()).st_size
    if size != expected:
        raise InputError(
            f"{path} has {size:,} bytes but its header announces {expected:,} (a truncated or damaged file)"
        )
    return tuple(shape), dtype


def npy_shape(path: PathLike) -> tuple[int, ...]:
    """The shape of the ``.npy`` in ``path``, from its checked header (the data is not read)."""
    with open_regular(path) as fh:
        return _npy_header(fh, Path(path))[0]


def load_npy(path: PathLike, spec: schema_.ArraySpec | None = None) -> np.ndarray:
    """The array in the regular file ``path`` (``allow_pickle=False``; the size must match the header),
    checked against ``spec`` (dtype kind and dimensions) when given. :class:`MissingFileError` when absent,
    InputError naming the file otherwise."""
    path = Path(path)
    with open_regular(path) as fh:
        shape, dtype = _npy_header(fh, path)
        if spec is not None:
            if dtype.kind not in spec.kinds:
                raise InputError(f"{path} has dtype {dtype}; {spec.describe} must be {_KIND_NAMES[spec.kinds]} numbers")
            if len(shape) < spec.min_ndim or (spec.ndim is not None and len(shape) != spec.ndim):
                raise InputError(f"{path} has shape {shape}; {spec.describe} must have {spec.dims()}")
        fh.seek(0)
        try:
            return np.load(fh, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise InputError(f"{path} is not a readable .npy file ({err})") from None


_KIND_NAMES = {"f": "floating-point", "iu": "integer", "fiu": "floating-point or integer"}


def seeded_rows(n: int, k: int | None, seed: int) -> np.ndarray:
    """Sorted row indices of a fixed subset of ``k`` of ``n`` rows drawn with
    ``numpy.random.default_rng(seed)``; all rows when ``k`` is None or at least ``n``. The training
    script, the callback and the estimation command use it, so one seed names one subset."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    return split


def _file_tag(layer: str | None) -> str:
    if layer is None:
        return ""
    if not _TAG.match(layer):
        raise InputError(f"layer name {layer!r} cannot be used in a file name (letters, digits, _ . - only)")
    return f"_{layer}"


def _check_epoch(epoch: int) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise InputError(f"epoch must be an integer >= 0, got {epoch!r}")
    return int(epoch)


def representation_path(run_dir: PathLike, split: str, epoch: int, layer: str | None = None) -> Path:
    """``representations/no_noise_<split>_representations[_<layer>]_<epoch>.npy``.

    ``layer`` is given only for models with several analysed dropout layers (see the README).
    """
    name = f"no_noise_{_check_split(split)}_representations{_file_tag(layer)}_{_check_epoch(epoch)}.npy"
    return Path(run_dir) / REPR_DIR / name


def alpha_path(run_dir: PathLike, split: str, epoch: int, layer: str | None = None) -> Path:
    """``representations/alpha_<split>[_<layer>]_<epoch>.npy`` (information dropout only)."""
    name = f"alpha_{_check_split(split)}{_file_tag(layer)}_{_check_epoch(epoch)}.npy"
    return Path(run_dir) / REPR_DIR / name


def inputs_path(run_dir: PathLike, split: str) -> Path:
    """``representations/<split>_inputs.npy``."""
    return Path(run_dir) / REPR_DIR / f"{_check_split(split)}_inputs.npy"


def labels_path(run_dir: PathLike, split: str) -> Path:
    """``representations/<split>_labels.npy``."""
    return Path(run_dir) / REPR_DIR / f"{_check_split(split)}_labels.npy"


def ip_path(run_dir: PathLike, split: str, quantity: str, layer: str | None = None) -> Path:
    """``IP/<train|test>_<mean_kl|mi_zy>[_<layer>].json``.

    H(Y) - cross-entropy is a property of the model output and never takes a layer name; the mean KL
    takes one only for models with several analysed dropout layers.
    """
    if quantity not in IP_QUANTITIES:
        raise InputError(f"quantity must be one of {IP_QUANTITIES}, got {quantity!r}")
    tag = _file_tag(layer) if quantity == "mean_kl" else ""
    return Path(run_dir) / IP_DIR / f"{_check_split(split)}_{quantity}{tag}.json"


def load_config(run_dir: PathLike) -> RunConfig:
    """The run's ``config.json``, checked against :class:`~utils.run_folder_schema.RunConfig` (every layer
    with ``name``, ``dim``, ``dropout``, ``p`` and ``noise_std`` = sqrt(p/(1-p)) for Gaussian dropout;
    unique layer names). :class:`MissingFileError` (not a run folder) or InputError naming the file and
    the field."""
    path = Path(run_dir) / CONFIG_NAME
    try:
        config = cast(RunConfig, load_json(path, RunConfig))
    except MissingFileError:
        raise MissingFileError(f"{path} does not exist: is {run_dir} a run folder?") from None
    for i, layer in enumerate(config["layers"]):
        schema_.check_layer(layer, f"{path}: layers[{i}]")
    names = [layer["name"] for layer in config["layers"]]
    if len(set(names)) != len(names):
        raise InputError(f"{path}: layer names are not unique: {names}")
    return config


def file_layer(config: RunConfig, layer: str | None) -> str | None:
    """The layer tag used in file names for ``layer`` of the run described by ``config``.

    One analysed layer: None (no tag; ``layer`` may be None or its name). Several: ``layer`` must
    name one of them.
    """
    names = [entry["name"] for entry in config["layers"]]
    if len(names) == 1:
        if layer not in (None, names[0]):
            raise InputError(f"the run has one analysed dropout layer, {names[0]!r}, not {layer!r}")
        return None
    if layer not in names:
        raise InputError(f"the run has several analysed dropout layers; pass layer= one of {names}")
    return layer


def _epoch_files(config: RunConfig, split: str) -> list[re.Pattern]:
    """Per analysed layer the file-name patterns of one saved epoch of ``split`` (group 1: the epoch)."""
    several = len(config["layers"]) > 1
    patterns = []
    for entry in config["layers"]:
        tag = re.escape(_file_tag(entry["name"] if several else None))
        patterns.append(re.compile(rf"^no_noise_{split}_representations{tag}_(0|[1-9][0-9]*)\.npy$"))
        if entry["dropout"] == "information":
            patterns.append(re.compile(rf"^alpha_{split}{tag}_(0|[1-9][0-9]*)\.npy$"))
    return patterns


def saved_epochs(run_dir: PathLike, split: str) -> list[int]:
    """Epochs whose representation files (and alpha files, for information dropout) exist for every
    analysed layer of ``split``, sorted; read from ``config.json`` and the files present."""
    _check_split(split)
    config = load_config(run_dir)
    folder = Path(run_dir) / REPR_DIR
    names = set(os.listdir(folder)) if folder.is_dir() else set()
    complete: set[int] | None = None
    for pattern in _epoch_files(config, split):
        found = {int(m.group(1)) for m in map(pattern.match, names) if m}
        complete = found if complete is None else complete & found
    return sorted(complete or ())


def expected_epochs(config: RunConfig, done: int) -> list[int]:
    """The epochs whose representations a run of ``config`` saves in its first ``done`` epochs: 0, every
    ``save_every``-th and the last (``flags.epochs``); empty when the flags do not say."""
    flags = config.get("flags", {})
    every, last = flags.get("save_every"), flags.get("epochs")
    if every is None or last is None:
        return []
    return [e for e in range(min(done, last) + 1) if e % every == 0 or e == last]


def missing_epoch_files(run_dir: PathLike, config: RunConfig, epochs: list[int]) -> list[Path]:
    """The representation (and alpha) files of ``epochs`` that are not in the run folder."""
    several = len(config["layers"]) > 1
    missing = []
    for split in SPLITS:
        for epoch in epochs:
            for entry in config["layers"]:
                tag = entry["name"] if several else None
                files = [representation_path(run_dir, split, epoch, tag)]
                if entry["dropout"] == "information":
                    files.append(alpha_path(run_dir, split, epoch, tag))
                missing += [f for f in files if not f.is_file()]
    return missing


def load_representations(run_dir: PathLike, split: str, epoch: int, layer: str | None = None) -> np.ndarray:
    """float32 (n, dim) noise-free input f(x) of the dropout layer at ``epoch``."""
    path = representation_path(run_dir, split, epoch, file_layer(load_config(run_dir), layer))
    return load_npy(path, schema_.REPRESENTATION)


def load_alphas(run_dir: PathLike, split: str, epoch: int, layer: str | None = None) -> np.ndarray:
    """float32 (n, dim) alpha(x) of an information-dropout layer at ``epoch``."""
    config = load_config(run_dir)
    tag = file_layer(config, layer)
    entry = next(e for e in config["layers"] if tag in (None, e["name"]))
    if entry["dropout"] != "information":
        raise InputError(
            f"layer {entry['name']!r} is {entry['dropout']} dropout; alphas exist only for information dropout"
        )
    return load_npy(alpha_path(run_dir, split, epoch, tag), schema_.ALPHA)


def load_labels(run_dir: PathLike, split: str) -> np.ndarray:
    """The integer labels of the saved inputs of ``split`` (int64, one per row of ``<split>_inputs.npy``,
    all >= 0): InputError naming the file when they are fractional, negative or do not match the inputs."""
    path = labels_path(run_dir, split)
    labels = load_npy(path, schema_.LABELS)
    if labels.size == 0:
        raise InputError(f"{path} holds no labels")
    if labels.min() < 0 or labels.max() > np.iinfo(np.int64).max:
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise InputError(f"{path} holds the label {bad}: labels are class indices >= 0 (64-bit integers)")
    rows = npy_shape(inputs_path(run_dir, split))
    if not rows or rows[0] != len(labels):
        raise InputError(
            f"{inputs_path(run_dir, split)} has {rows[0] if rows else 0} rows but {path} has {len(labels)}"
        )
    return labels.astype(np.int64, copy=False)


def load_inputs_labels(run_dir: PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The inputs whose representations were saved and their integer labels (rows aligned)."""
    labels = load_labels(run_dir, split)
    return load_npy(inputs_path(run_dir, split), schema_.INPUTS), labels


def load_ip(run_dir: PathLike, split: str, quantity: str, layer: str | None = None) -> dict[int, float | None]:
    """The callback's ``{epoch: value}`` dictionary (missing file: empty), epochs as ints, sorted; checked
    against :data:`~utils.run_folder_schema.IPValues`."""
    path = ip_path(run_dir, split, quantity, layer)
    if not path.exists() and not path.is_symlink():
        return {}
    raw = load_json(path, schema_.IPValues)
    return {int(k): v for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}


HISTORY_COLUMNS = (
    "epoch",
    "loss",
    "accuracy",
    "test_loss",
    "test_accuracy",
    "learning_rate",
    "seconds",
    "callback_seconds",
)
"""The leading columns of ``history.csv``, in this order; any other metric follows by name."""


def save_history(path: PathLike, rows: dict[int, dict[str, str]]) -> None:
    """Write ``{epoch: row}`` as ``history.csv`` (epochs in order, :data:`HISTORY_COLUMNS` first), atomically."""
    keys = {k for r in rows.values() for k in r}
    columns = [c for c in HISTORY_COLUMNS if c in keys] + sorted(keys - set(HISTORY_COLUMNS))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows[e] for e in sorted(rows))
    save_text(path, buffer.getvalue())


def load_history(path: PathLike) -> dict[int, dict[str, str]]:
    """``history.csv`` as ``{epoch: row}`` with the cells as written (a resume rewrites them unchanged),
    checked: ``epoch`` a canonical integer >= 1, increasing, every other cell a finite number or empty.
    :class:`MissingFileError` when absent, InputError naming the file, row and column otherwise."""
    path = Path(path)
    with open_regular(path, schema_.MAX_JSON_BYTES) as fh:
        raw = fh.read()
    try:
        rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"), newline="")))
    except (csv.Error, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not a history file: not a CSV file ({err})") from None
    if not rows:
        raise InputError(f"{path} is not a history file: it holds no epoch (training writes one row per epoch)")
    out: dict[int, dict[str, str]] = {}
    for i, row in enumerate(rows, start=2):
        if None in row or any(v is None for v in row.values()):
            raise InputError(f"{path} is not a history file: line {i} has another number of cells than the header")
        epoch = row.get("epoch")
        if epoch is None or not re.match(r"^[1-9][0-9]*$", epoch) or (out and int(epoch) <= max(out)):
            raise InputError(
                f"{path} is not a history file with an integer 'epoch' column: line {i}: epoch must be an integer "
                f">= 1 above the line before, got {epoch!r}"
            )
        for column, cell in row.items():
            if column != "epoch" and cell != "":
                try:
                    value = float(cell)
                except ValueError:
                    value = math.nan
                if not math.isfinite(value):
                    raise InputError(
                        f"{path} is not a history file: line {i}, column {column!r}: not a finite number ({cell!r})"
                    )
        out[int(epoch)] = dict(row)
    return out


CHECKPOINT_NAME = "checkpoint.npz"


def load_checkpoint(path: PathLike) -> tuple[int, dict[str, np.ndarray]]:
    """``checkpoint.npz``: the completed epochs and the arrays ``model_<i>`` and ``optimizer_<i>``, checked
    (an integer ``epochs_done`` >= 0, array names of the schema, numeric and finite arrays, stored
    uncompressed as the toolkit writes them). :class:`MissingFileError` when absent; InputError naming
    the file otherwise."""
    path = Path(path)

    def damaged(why: str) -> InputError:
        return InputError(f"{path} is not a readable checkpoint ({why}); move it away to train from the start")

    with open_regular(path) as fh:
        try:
            with zipfile.ZipFile(fh) as archive:
                if any(info.compress_type != zipfile.ZIP_STORED for info in archive.infolist()):
                    raise damaged("compressed members: the toolkit writes none")
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zipfile.LargeZipFile) as err:
            if isinstance(err, InputError):
                raise
            raise damaged(str(err)) from None
    done = arrays.pop("epochs_done", None)
    if done is None or done.shape != () or done.dtype.kind not in "iu" or int(done) < 0:
        raise damaged("'epochs_done' must be an integer scalar >= 0")
    for key, array in arrays.items():
        if not schema_.CHECKPOINT_KEY.match(key):
            raise damaged(f"unknown array {key!r}")
        if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and not np.isfinite(array).all()):
            raise damaged(f"{key} is not an array of finite numbers")
    return int(done), arrays


def save_checkpoint(path: PathLike, epochs_done: int, arrays: dict[str, np.ndarray]) -> None:
    """Write ``checkpoint.npz`` (uncompressed): ``epochs_done`` and the arrays ``model_<i>`` and
    ``optimizer_<i>`` that :func:`load_checkpoint` reads back, atomically; ValueError on another name."""
    unknown = [key for key in arrays if not schema_.CHECKPOINT_KEY.match(key)]
    if unknown:
        raise ValueError(f"checkpoint arrays must be named model_<i> or optimizer_<i>, got {unknown[0]!r}")
    content: dict[str, Any] = {"epochs_done": np.asarray(epochs_done, dtype=np.int64), **arrays}
    atomic_write(path, lambda fh: np.savez(fh, **content), "wb")


# -- locks, fingerprints and the estimates file ---------------------------------------------------------

ESTIMATES_NAME = "estimates.json"
ESTIMATES_FORMAT = schema_.ESTIMATES_FORMAT
"""The layout of ``IP/estimates.json`` (``docs/run_folder.md``); a file of another format is refused."""


@contextlib.contextmanager
def exclusive_lock(path: PathLike, *, wait: bool = True, owner: str = "") -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``path`` (created if needed) for the ``with`` block.

    The lock file is opened without following links (``O_NOFOLLOW``): a lock path that is a link, or
    anything but a regular file, is an InputError and nothing is written through it. The holder writes
    ``owner`` (e.g. ``"PID 1234"``) into the file. ``wait=False`` raises :class:`LockedError` naming the
    holder instead of waiting. On systems without ``fcntl`` the block runs unlocked. The lock dies with
    its process, so a killed holder never leaves a stale lock.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), _FILE_MODE)
    except OSError:
        if path.is_symlink():
            raise InputError(f"{path} is a symbolic link: a lock is never taken through a link (remove it)") from None
        raise
    with os.fdopen(fd, "r+b"):  # closes fd, releasing the lock with it
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{path} is {_kind(info.st_mode)}, not a lock file (remove it)")
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                raise LockedError(path, holder) from None
        if owner:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (owner + "\n").encode(), 0)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)


class LockedError(InputError):
    """Another process holds a lock of the run folder the user chose; ``holder`` is what it wrote into
    the lock file."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path, self.holder = path, holder or "a process that has not written its name yet"
        super().__init__(f"{path.parent} is in use by another process ({self.holder})")


_FINGERPRINTS: dict[tuple[int, int, int, int], dict[str, Any]] = {}
"""Fingerprints by (device, inode, size, mtime): a file is hashed once per process (plan and identity)."""


def file_fingerprint(path: PathLike) -> dict[str, Any]:
    """``{"size", "blake2b"}`` of a regular file: what a cached estimate was computed from (a changed file
    is stale). A FIFO or device is refused before it is read."""
    with open_regular(path) as fh:
        info = os.fstat(fh.fileno())
        key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        if key not in _FINGERPRINTS:
            digest = hashlib.blake2b(digest_size=16)
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
            _FINGERPRINTS[key] = {"size": info.st_size, "blake2b": digest.hexdigest()}
    return dict(_FINGERPRINTS[key])


def run_identity(run_dir: PathLike) -> str:
    """A run's identity by content: a hash of what defines its numbers in ``config.json`` (the flags of
    :data:`DEFINING_FLAGS`, the seed, the dataset, the model, the analysed layers, the user's tags and the
    library versions). Training is reproducible bit for bit, so two folders with the same identity hold the
    same run however they were made (a copy, a partial copy, a re-run); a config without a seed adds the
    fingerprints of its label and representation files."""
    config = load_config(run_dir)
    flags = config.get("flags", {})
    content: dict[str, Any] = {
        "flags": {k: v for k, v in flags.items() if k in DEFINING_FLAGS},
        **{k: v for k, v in config.items() if k in ("dataset", "layers", "versions", "model", "seed", "tags")},
    }
    if "seed" not in flags and "seed" not in config:
        folder = Path(run_dir) / REPR_DIR
        names = sorted(os.listdir(folder)) if folder.is_dir() else []
        wanted = [n for n in names if n.endswith("_labels.npy") or n.startswith(("no_noise_", "alpha_"))]
        content["files"] = {n: file_fingerprint(folder / n) for n in wanted}
    return hashlib.blake2b(json.dumps(content, sort_keys=True).encode(), digest_size=16).hexdigest()


def estimates_path(run_dir: PathLike) -> Path:
    """``IP/estimates.json``."""
    return Path(run_dir) / IP_DIR / ESTIMATES_NAME


def load_estimates(run_dir: PathLike) -> EstimatesFile:
    """``IP/estimates.json``: ``{"format": 3, "estimates": {estimator: {layer: {split: {"<epoch>": entry}}}}}``
    (an empty structure when absent), every entry checked against :class:`~utils.run_folder_schema.Entry`;
    InputError naming the file and the field otherwise."""
    path = estimates_path(run_dir)
    if not path.exists() and not path.is_symlink():
        return {"format": ESTIMATES_FORMAT, "estimates": {}}
    data = load_json(path)
    if not isinstance(data, dict) or data.get("format") != ESTIMATES_FORMAT:
        found = f"format {data.get('format')!r}" if isinstance(data, dict) else "no estimates file"
        raise InputError(
            f"{path} is not an estimates file of format {ESTIMATES_FORMAT} ({found}); move it away and "
            f"re-run the estimation (python -m utils.analysis.information_plane {Path(run_dir)})"
        )
    checked = cast(EstimatesFile, schema_.validate(data, EstimatesFile, str(path)))
    schema_.check_entries(checked, str(path))
    return checked


def store_estimates(run_dir: PathLike, entries: dict[EntryKey, dict]) -> dict[str, Any]:
    """Merge ``{(estimator, layer, split, epoch): entry}`` into ``IP/estimates.json`` under the run's
    estimates lock (several processes may share out the epochs) and return the merged content. The
    entries are checked against the schema before the file is replaced."""
    with exclusive_lock(Path(run_dir) / IP_DIR / f".{ESTIMATES_NAME}.lock"):
        data = load_estimates(run_dir)
        changed = False
        estimates: dict[str, Any] = data["estimates"]
        for (name, layer, split, epoch), entry in entries.items():
            by_epoch = estimates.setdefault(name, {}).setdefault(layer, {}).setdefault(split, {})
            changed |= by_epoch.get(str(epoch)) != entry
            by_epoch[str(epoch)] = entry
        if changed:
            data["estimates"] = _canonical_order(data["estimates"])
            schema_.validate(data, EstimatesFile, f"new content of {estimates_path(run_dir)}")
            schema_.check_entries(data, f"new content of {estimates_path(run_dir)}")
            save_json(estimates_path(run_dir), data)
    return dict(data)


def _canonical_order(estimates: Any) -> Any:
    """Estimators, layers and splits by name, epochs by number: the file does not depend on the order in
    which entries were computed (processes sharing the epochs, a cluster's tasks finishing in any order)."""
    return {
        name: {
            layer: {
                split: dict(sorted(by_epoch.items(), key=lambda kv: int(kv[0])))
                for split, by_epoch in sorted(splits.items())
            }
            for layer, splits in sorted(layers.items())
        }
        for name, layers in sorted(estimates.items())
    }
