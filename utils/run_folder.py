"""Reading and writing run folders (the format is documented in the README, "Run folder format").

A run folder holds ``config.json`` (flags, dataset, library versions and the analysed dropout layers:
the single source of truth for their noise level), ``history.csv``, ``representations/`` (float32
``.npy`` files per saved epoch) and ``IP/`` (``{"<epoch>": value}`` JSON dictionaries of the
callback's per-epoch mean KL term and H(Y) - cross-entropy, a lower bound on I(Y;Z)).

Every writer goes through a temporary file in the destination folder and ``os.replace``, so an
interrupted process never leaves a half-written file. Every ``.npy`` is loaded with
``allow_pickle=False``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; single-process use is still safe
    fcntl = None

import numpy as np

from mi_estimators.checks import DROPOUT_KINDS, InputError

SPLITS = ("train", "test")
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
_TAG = re.compile(r"^[A-Za-z0-9_.-]+$")

PathLike = str | os.PathLike


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()
"""mkstemp creates files readable by their owner only; written files get the usual permissions."""


def atomic_write(path: PathLike, write: Callable[[Any], None], mode: str) -> None:
    """Call ``write(fh)`` on a temporary file beside ``path`` (opened with ``mode``), then rename it
    to ``path``: readers see the old file or the complete new one, never a partial one."""
    path = Path(path)
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


def load_json(path: PathLike) -> Any:
    """Parsed JSON of ``path``; FileNotFoundError/InputError naming the file when missing or corrupt."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path} is not valid JSON ({err})") from None


def load_npy(path: PathLike) -> np.ndarray:
    """The array in ``path`` (``allow_pickle=False``); FileNotFoundError/InputError naming the file."""
    path = Path(path)
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{path} is not a readable .npy file ({err})") from None


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


def _config_error(path: Path, what: str) -> InputError:
    return InputError(f"{path}: {what}")


def _check_layer_entry(path: Path, i: int, entry: Any) -> None:
    if not isinstance(entry, dict):
        raise _config_error(path, f"layers[{i}] is not an object")
    for key in ("name", "dim", "dropout", "p", "noise_std"):
        if key not in entry:
            raise _config_error(path, f"layers[{i}] lacks {key!r}")
    if not isinstance(entry["name"], str) or not _TAG.match(entry["name"]):
        raise _config_error(path, f"layers[{i}].name {entry['name']!r} is not a valid layer name")
    if isinstance(entry["dim"], bool) or not isinstance(entry["dim"], int) or entry["dim"] < 1:
        raise _config_error(path, f"layers[{i}].dim must be a positive integer, got {entry['dim']!r}")
    kind = entry["dropout"]
    if kind not in DROPOUT_KINDS:
        raise _config_error(path, f"layers[{i}].dropout must be one of {DROPOUT_KINDS}, got {kind!r}")
    if kind == "information":
        for key in ("alpha_max", "beta", "prior"):
            if key not in entry:
                raise _config_error(path, f"layers[{i}] (information dropout) lacks {key!r}")
        return
    p = entry["p"]
    if not isinstance(p, (int, float)) or not 0.0 < p < 1.0:
        raise _config_error(path, f"layers[{i}].p must be a number in (0, 1), got {p!r}")
    if kind == "gaussian":
        std = entry["noise_std"]
        if not isinstance(std, (int, float)) or not math.isclose(std, math.sqrt(p / (1.0 - p)), rel_tol=1e-9):
            raise _config_error(path, f"layers[{i}].noise_std {std!r} is not sqrt(p/(1-p)) for p = {p}")


def load_config(run_dir: PathLike) -> dict:
    """The run's ``config.json``, checked: ``layers`` is a non-empty list of entries with ``name``,
    ``dim``, ``dropout``, ``p`` and ``noise_std`` (= sqrt(p/(1-p)) for Gaussian dropout).

    Raises FileNotFoundError (not a run folder) or InputError naming the file and the defect.
    """
    path = Path(run_dir) / CONFIG_NAME
    try:
        config = load_json(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a run folder?") from None
    if not isinstance(config, dict):
        raise _config_error(path, "the top level is not a JSON object")
    layers = config.get("layers")
    if not isinstance(layers, list) or not layers:
        raise _config_error(path, "'layers' must be a non-empty list of the analysed dropout layers")
    for i, entry in enumerate(layers):
        _check_layer_entry(path, i, entry)
    names = [entry["name"] for entry in layers]
    if len(set(names)) != len(names):
        raise _config_error(path, f"layer names are not unique: {names}")
    return config


def file_layer(config: dict, layer: str | None) -> str | None:
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


def saved_epochs(run_dir: PathLike, split: str) -> list[int]:
    """Epochs whose representation files (and alpha files, for information dropout) exist for every
    analysed layer of ``split``, sorted; read from ``config.json`` and the files present."""
    _check_split(split)
    config = load_config(run_dir)
    folder = Path(run_dir) / REPR_DIR
    names = set(os.listdir(folder)) if folder.is_dir() else set()
    several = len(config["layers"]) > 1
    complete = None
    for entry in config["layers"]:
        tag = _file_tag(entry["name"] if several else None)
        patterns = [re.compile(rf"^no_noise_{split}_representations{re.escape(tag)}_(\d+)\.npy$")]
        if entry["dropout"] == "information":
            patterns.append(re.compile(rf"^alpha_{split}{re.escape(tag)}_(\d+)\.npy$"))
        for pattern in patterns:
            found = {int(m.group(1)) for m in map(pattern.match, names) if m}
            complete = found if complete is None else complete & found
    return sorted(complete)


def load_representations(run_dir: PathLike, split: str, epoch: int, layer: str | None = None) -> np.ndarray:
    """float32 (n, dim) noise-free input f(x) of the dropout layer at ``epoch``."""
    return load_npy(representation_path(run_dir, split, epoch, file_layer(load_config(run_dir), layer)))


def load_alphas(run_dir: PathLike, split: str, epoch: int, layer: str | None = None) -> np.ndarray:
    """float32 (n, dim) alpha(x) of an information-dropout layer at ``epoch``."""
    config = load_config(run_dir)
    tag = file_layer(config, layer)
    entry = next(e for e in config["layers"] if tag in (None, e["name"]))
    if entry["dropout"] != "information":
        raise InputError(
            f"layer {entry['name']!r} is {entry['dropout']} dropout; alphas exist only for information dropout"
        )
    return load_npy(alpha_path(run_dir, split, epoch, tag))


def load_inputs_labels(run_dir: PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The inputs whose representations were saved and their integer labels (rows aligned)."""
    x, y = load_npy(inputs_path(run_dir, split)), load_npy(labels_path(run_dir, split))
    if len(x) != len(y):
        raise InputError(
            f"{inputs_path(run_dir, split)} has {len(x)} rows but {labels_path(run_dir, split)} has {len(y)}"
        )
    return x, y


def load_ip(run_dir: PathLike, split: str, quantity: str, layer: str | None = None) -> dict[int, float]:
    """The callback's ``{epoch: value}`` dictionary (missing file: empty), epochs as ints, sorted."""
    path = ip_path(run_dir, split, quantity, layer)
    if not path.exists():
        return {}
    raw = load_json(path)
    if not isinstance(raw, dict):
        raise InputError(f"{path} must hold a JSON object {{epoch: value}}")
    try:
        return {int(k): (None if v is None else float(v)) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}
    except (TypeError, ValueError):
        raise InputError(f"{path} must map integer epochs to numbers") from None


# -- locks, fingerprints and the estimates file ---------------------------------------------------------

ESTIMATES_NAME = "estimates.json"
ESTIMATES_FORMAT = 3
"""The layout of ``IP/estimates.json`` (README, "Run folder format"); a file of another format is refused."""


@contextlib.contextmanager
def exclusive_lock(path: PathLike, *, wait: bool = True, owner: str = "") -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``path`` (created if needed) for the ``with`` block.

    The holder writes ``owner`` (e.g. ``"PID 1234"``) into the file. ``wait=False`` raises
    :class:`LockedError` naming the holder instead of waiting. On systems without ``fcntl`` the block
    runs unlocked. The lock dies with its process, so a killed holder never leaves a stale lock.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        if fcntl is not None:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                fh.seek(0)
                raise LockedError(path, fh.read().strip()) from None
        if owner:
            fh.seek(0)
            fh.truncate()
            fh.write(owner + "\n")
            fh.flush()
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)


class LockedError(InputError):
    """Another process holds a lock of the run folder the user chose; ``holder`` is what it wrote into
    the lock file."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path, self.holder = path, holder or "a process that has not written its name yet"
        super().__init__(f"{path.parent} is in use by another process ({self.holder})")


def file_fingerprint(path: PathLike) -> dict[str, Any]:
    """``{"size", "blake2b"}`` of a file: what a cached estimate was computed from (a changed file is stale)."""
    path = Path(path)
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            digest.update(chunk)
    return {"size": path.stat().st_size, "blake2b": digest.hexdigest()}


def estimates_path(run_dir: PathLike) -> Path:
    """``IP/estimates.json``."""
    return Path(run_dir) / IP_DIR / ESTIMATES_NAME


def load_estimates(run_dir: PathLike) -> dict[str, Any]:
    """``IP/estimates.json``: ``{"format": 3, "estimates": {estimator: {layer: {split: {"<epoch>": entry}}}}}``
    (an empty structure when absent; InputError naming the file when it is not an estimates file)."""
    path = estimates_path(run_dir)
    if not path.exists():
        return {"format": ESTIMATES_FORMAT, "estimates": {}}
    data = load_json(path)
    if (
        not isinstance(data, dict)
        or data.get("format") != ESTIMATES_FORMAT
        or not isinstance(data.get("estimates"), dict)
    ):
        found = f"format {data.get('format')!r}" if isinstance(data, dict) else "no estimates file"
        raise InputError(
            f"{path} is not an estimates file of format {ESTIMATES_FORMAT} ({found}); move it away and "
            f"re-run the estimation (python -m utils.analysis.information_plane {Path(run_dir)})"
        )
    return data


def store_estimates(run_dir: PathLike, entries: dict[tuple[str, str, str, int], dict]) -> dict[str, Any]:
    """Merge ``{(estimator, layer, split, epoch): entry}`` into ``IP/estimates.json`` under the run's
    estimates lock (several processes may share out the epochs) and return the merged content."""
    with exclusive_lock(Path(run_dir) / IP_DIR / f".{ESTIMATES_NAME}.lock"):
        data = load_estimates(run_dir)
        changed = False
        for (name, layer, split, epoch), entry in entries.items():
            by_epoch = data["estimates"].setdefault(name, {}).setdefault(layer, {}).setdefault(split, {})
            changed |= by_epoch.get(str(epoch)) != entry
            by_epoch[str(epoch)] = entry
        if changed:
            data["estimates"] = _canonical_order(data["estimates"])
            save_json(estimates_path(run_dir), data)
    return data


def _canonical_order(estimates: dict) -> dict:
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
