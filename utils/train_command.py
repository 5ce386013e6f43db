"""The command line shared by ``mi_mnist_dropout.py`` and ``mi_cifar_dropout.py`` (which only set defaults).

Adilova, Geiger & Fischer (ICLR 2023): SGD with momentum 0.9 and weight decay, a cosine learning-rate
decay over the whole run, one dropout layer whose noise-free input is recorded every ``--save-every``
epochs; the training itself is :mod:`utils.keras_training`.

Everything a run needs from its user is checked before Keras (and TensorFlow or JAX) is imported: the
flags, the run folder and the data, so ``--help`` and bad input answer at once. Bad input ends with one
``<prog>: error: ...`` line on stderr and exit code 2 before any file is written. One process writes a
run folder at a time (an fcntl lock on ``<run>/.train.lock``; a second one names the holder's PID).
Re-running the same command resumes an interrupted run with the same numbers as an uninterrupted one;
a finished run is left as it is. TensorFlow's and JAX's native start-up messages are kept off the
terminal unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from mi_estimators.checks import DROPOUT_KINDS, InputError, gaussian_dropout_std
from utils import run_folder
from utils import run_folder_schema as schema
from utils.cli import CommandError, OneLineParser, float_arg, int_arg, native_logs_silenced, run_command
from utils.data import Dataset, DatasetUnavailableError, load_dataset
from utils.nets import NETS, family_choices

METRICS_SUBSET = 5000
"""Default number of training inputs behind the per-epoch KL / cross-entropy means (standard error of
a mean cross-entropy of spread ~0.5 nats: ~0.005 nats)."""
MAX_EPOCHS = 100_000
"""Sanity limit: a larger --epochs is a typo (the paper trains 200), not a run that could finish."""
MAX_COUNT = 10**9
"""Sanity limit of the size flags (batch, subsets, save interval): beyond any dataset this toolkit reads."""

_OWN_TEMPS = {
    ".": ("",),
    run_folder.REPR_DIR: ("",),
    run_folder.IP_DIR: tuple(f"{split}_" for split in run_folder.SPLITS),
}
"""Where training's atomic writes leave ``.<name>.<random>.tmp`` files when killed, and the names they
start with (the analysis writes IP/estimates.json beside them and keeps its own)."""


def _add_net_flags(add: Callable[..., Any], datasets: list[str], nets: list[str]) -> None:
    add("--dataset", choices=datasets, help="dataset (default: %(default)s)")
    add("--data-dir", help="folder with local copies of the dataset (never downloads when given; not for digits)")
    add("--net", choices=nets, help="network (default: %(default)s)")
    add("--dropout", choices=DROPOUT_KINDS, help="dropout kind (default: the net's own)")
    add(
        "--p",
        type=float_arg(),
        help="Gaussian/Bernoulli dropout rate; Gaussian noise std sqrt(p/(1-p)) (default: %(default)s)",
    )
    add(
        "--noise-std",
        type=float_arg(0.0, inclusive=False),
        help="Gaussian dropout: the noise's standard deviation sigma instead of --p (p = sigma^2 / (1 + sigma^2))",
    )
    add(
        "--beta",
        type=float_arg(0.0),
        default=3.0,
        help="information dropout: loss = CE + beta * KL / N_train (default: %(default)s)",
    )
    add(
        "--alpha-max",
        type=float_arg(0.0, inclusive=False),
        default=0.7,
        help="information dropout: largest alpha(x) (default: %(default)s)",
    )
    add(
        "--filters",
        type=float_arg(0.0, inclusive=False),
        default=1.0,
        help="fraction of conv filters, CIFAR-10 conv nets only (default: %(default)s)",
    )


def _add_schedule_flags(add: Callable[..., Any]) -> None:
    add("--epochs", type=int_arg(1, MAX_EPOCHS), help=f"training epochs, at most {MAX_EPOCHS:,} (default: %(default)s)")
    add("--batch-size", type=int_arg(1, MAX_COUNT), help="batch size, global over all replicas (default: %(default)s)")
    add(
        "--lr",
        type=float_arg(0.0, inclusive=False),
        help="initial learning rate, cosine decay to 0 over the run (default: %(default)s)",
    )
    add("--weight-decay", type=float_arg(0.0), help="SGD weight decay, decoupled (default: %(default)s)")
    add(
        "--save-every",
        type=int_arg(1, MAX_COUNT),
        help="save representations every N epochs, and at 0 and the last (default: %(default)s)",
    )
    # (at least 2: an information plane needs two inputs to tell apart)
    add("--train-subset", type=int_arg(2, MAX_COUNT), help="train on a fixed seeded subset of N training inputs")
    add(
        "--repr-subset",
        type=int_arg(2, MAX_COUNT),
        help="save the representations of a fixed seeded subset of N training inputs (default: all)",
    )
    add(
        "--metrics-subset",
        type=int_arg(1, MAX_COUNT),
        default=METRICS_SUBSET,
        help="saved training inputs behind the per-epoch KL and cross-entropy means (default: %(default)s)",
    )
    add(
        "--eval-batch-size",
        type=int_arg(1, MAX_COUNT),
        help="batch size of the callback's passes and the test loss (default: 16 x batch)",
    )


def build_parser(
    defaults: Mapping[str, Any], *, family: str, prog: str | None = None, description: str | None = None
) -> OneLineParser:
    """The command line of a training script; ``defaults`` sets dataset, net, lr, batch_size, epochs,
    p, weight_decay and save_every (and may set any other flag, such as ``analyze``)."""
    nets, datasets = family_choices(family)
    parser = OneLineParser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    _add_net_flags(add, datasets, nets)
    _add_schedule_flags(add)
    add(
        "--out",
        help="run folder (default: runs/<dataset>-<net>-<dropout>-p<p>-seed<seed>, "
        "beta<beta> in place of p<p> for information dropout)",
    )
    add(
        "--seed",
        type=int_arg(0),
        default=0,
        help="seed of weights, noise, input order and subsets (default: %(default)s)",
    )
    add(
        "--distribute",
        choices=("none", "mirrored"),
        default="none",
        help="mirrored: data parallel over all GPUs, else all logical CPUs (tf.distribute.MirroredStrategy "
        "on TensorFlow, keras.distribution.DataParallel on JAX) (default: %(default)s)",
    )
    add("--verbose", action="store_true", help="show TensorFlow's and JAX's native log messages (silenced by default)")
    add(
        "--analyze",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="after training, estimate the information plane (utils.analysis.information_plane with its "
        "defaults) and draw it under <run>/figures (default: %(default)s)",
    )
    parser.set_defaults(**defaults)
    return parser


def check_args(args: argparse.Namespace) -> argparse.Namespace:
    """Compatibility checks beyond argparse; fills ``--dropout`` from the net. CommandError on failure."""
    spec = NETS[args.net]
    if args.dropout is None:
        args.dropout = spec.default_dropout
    if args.dataset not in spec.datasets:
        raise CommandError(f"net {args.net!r} runs on {', '.join(spec.datasets)}, not on {args.dataset!r}")
    if args.dropout not in spec.dropouts:
        raise CommandError(f"net {args.net!r} cannot take {args.dropout} dropout; it takes {', '.join(spec.dropouts)}")
    sigma, given_p = args.__dict__.pop("noise_std", None), args.__dict__.pop("p_given", False)
    if sigma is not None:
        if args.dropout != "gaussian":
            raise CommandError(f"--noise-std is the noise of Gaussian dropout, not of {args.dropout} dropout; use --p")
        if given_p:
            raise CommandError("give --p (the dropout rate) or --noise-std (its noise's std), not both")
        args.p = gaussian_dropout_std(noise_std=sigma)[1]
    if args.p is None or not 0.0 < args.p < 1.0:
        raise CommandError(f"--p must lie strictly between 0 and 1, got {args.p}")
    if args.filters != 1.0 and spec.family != "cifar10":
        raise CommandError(f"--filters applies to the CIFAR-10 conv nets only, not to {args.net!r}")
    if args.data_dir is not None and args.dataset == "digits":
        raise CommandError(
            f"--data-dir does not apply to --dataset digits (bundled with scikit-learn), got --data-dir {args.data_dir}"
        )
    for flag in ("epochs", "batch_size", "save_every", "lr", "weight_decay"):
        if getattr(args, flag) is None:
            raise CommandError(f"--{flag.replace('_', '-')} has no default here; pass it")
    return args


def parse_args(
    argv: Sequence[str] | None,
    defaults: Mapping[str, Any],
    *,
    family: str,
    prog: str | None = None,
    description: str | None = None,
) -> argparse.Namespace:
    """Parse and check a training command line (CommandError with a one-line message on bad input)."""
    parser = build_parser(defaults, family=family, prog=prog, description=description)
    args = parser.parse_args(argv)
    args.p_given = any(a == "--p" or a.startswith("--p=") for a in (sys.argv[1:] if argv is None else argv))
    return check_args(args)


def run_name(args: argparse.Namespace) -> str:
    """``<dataset>-<net>-<dropout>-p<p>-seed<seed>``; information dropout has no p, its name has beta."""
    level = f"beta{args.beta:g}" if args.dropout == "information" else f"p{args.p:g}"
    return f"{args.dataset}-{args.net}-{args.dropout}-{level}-seed{args.seed}"


def run_dir_for(args: argparse.Namespace) -> Path:
    """``--out`` or ``runs/<run_name>``."""
    return Path(args.out) if args.out else Path("runs") / run_name(args)


def flags_of(args: argparse.Namespace) -> dict[str, Any]:
    """Every flag as JSON-ready values."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(args).items())}


def _is_leftover(name: str) -> bool:
    """The lock file and the temporary files of interrupted atomic writes, which do not make a folder a run."""
    return name == run_folder.TRAIN_LOCK_NAME or (name.startswith(".") and name.endswith(".tmp"))


def check_run_dir(run_dir: Path, flags: Mapping[str, Any]) -> bool:
    """True when ``run_dir`` holds this configuration already (resume), False when it is new or empty.

    CommandError when it is not a folder, is not empty without a config.json, or holds a config.json
    whose run-defining flags (:data:`utils.run_folder.DEFINING_FLAGS`) differ. Writes nothing.
    """
    config_path = run_dir / run_folder.CONFIG_NAME
    if run_dir.exists() and not run_dir.is_dir():
        raise CommandError(f"cannot write to --out {run_dir}: it is a file")
    if config_path.exists() or config_path.is_symlink():
        try:
            stored: Mapping[str, Any] = run_folder.load_config(run_dir).get("flags", {})
        except InputError as err:
            raise CommandError(f"{err} (repair it or choose another --out)") from None
        diff = [
            f"{k}: {stored.get(k)!r} there, {flags.get(k)!r} now"
            for k in run_folder.DEFINING_FLAGS
            if stored.get(k) != flags.get(k)
        ]
        if diff:
            raise CommandError(
                f"{run_dir} holds a run with a different configuration ({'; '.join(diff)}); "
                "repeat its flags to resume it or choose another --out"
            )
        return True
    if run_dir.is_dir() and any(not _is_leftover(p.name) for p in run_dir.iterdir()):
        raise CommandError(
            f"{run_dir} is not empty and holds no {run_folder.CONFIG_NAME}; choose an empty or new --out"
        )
    return False


def check_run_files(run_dir: Path) -> None:
    """Every file a training run reads or writes in ``run_dir``, checked before the lock is taken: no link or
    special file where the run writes (no write goes through a link out of the folder), and a resumed
    run's history, callback values and checkpoint readable. CommandError naming the file; writes nothing."""
    if not run_dir.is_dir():
        return
    try:
        for sub in (run_folder.REPR_DIR, run_folder.IP_DIR):
            folder = run_dir / sub
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                raise InputError(f"{folder} is a link or a file, not a folder of the run: refusing to write into it")
        for folder in (run_dir, run_dir / run_folder.REPR_DIR, run_dir / run_folder.IP_DIR):
            for child in folder.iterdir() if folder.is_dir() else ():
                if child.name == run_folder.TRAIN_LOCK_NAME:
                    if child.is_symlink() or not child.is_file():
                        raise InputError(f"{child} is a link or not a file: a lock is never taken through one")
                elif not child.is_dir() or child.is_symlink():
                    run_folder.check_write_target(child, root=run_dir)
        history = run_dir / run_folder.HISTORY_NAME
        if history.exists():
            run_folder.load_history(history)
        for path in sorted((run_dir / run_folder.IP_DIR).glob("*_*.json")):
            if path.name != run_folder.ESTIMATES_NAME:
                run_folder.load_json(path, schema.IPValues)
        if (run_dir / run_folder.CHECKPOINT_NAME).exists():
            run_folder.load_checkpoint(run_dir / run_folder.CHECKPOINT_NAME)
    except InputError as err:
        raise CommandError(str(err)) from None


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Create ``run_dir`` and hold an exclusive lock on ``<run_dir>/.train.lock`` (which then holds this
    process's PID) for the duration of the block. CommandError when another process holds it or the
    folder cannot be written; nothing else is written before the lock is held, and a folder this call
    created is removed again when the block leaves nothing but the lock file in it."""
    created = not run_dir.exists()
    lock = contextlib.ExitStack()
    try:
        lock.enter_context(
            run_folder.exclusive_lock(run_dir / run_folder.TRAIN_LOCK_NAME, wait=False, owner=f"PID {os.getpid()}")
        )
    except run_folder.LockedError as err:
        raise CommandError(
            f"{run_dir} is being written by another training process ({err.holder}); "
            "wait for it to finish or choose another --out"
        ) from None
    except OSError as err:
        raise CommandError(f"cannot write to --out {run_dir}: {err.strerror or err}") from None
    with lock:
        try:
            _check_writable(run_dir)
            yield
        finally:
            if created and os.listdir(run_dir) == [run_folder.TRAIN_LOCK_NAME]:
                _remove_empty(run_dir)


def _remove_empty(run_dir: Path) -> None:
    with contextlib.suppress(OSError):  # another process may have put its lock file there meanwhile
        (run_dir / run_folder.TRAIN_LOCK_NAME).unlink()
        run_dir.rmdir()


def _check_writable(run_dir: Path) -> None:
    try:
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as err:
        raise CommandError(f"cannot write to --out {run_dir}: {err.strerror or err}") from None


def remove_leftovers(run_dir: Path) -> None:
    """Delete the temporary files that a killed training process left behind (call with the lock held)."""
    for sub, prefixes in _OWN_TEMPS.items():
        folder = run_dir / sub
        names = os.listdir(folder) if folder.is_dir() else []
        for name in names:
            if name.endswith(".tmp") and any(name.startswith("." + prefix) for prefix in prefixes):
                (folder / name).unlink(missing_ok=True)


def load_run_data(args: argparse.Namespace) -> tuple[Dataset, np.ndarray]:
    """The dataset of the run and the rows of its training inputs whose representations are saved."""
    try:
        ds = load_dataset(args.dataset, args.data_dir, args.train_subset, seed=args.seed)
    except DatasetUnavailableError:
        raise  # its message names the files and --data-dir already
    except InputError as err:  # the flags name the dataset: only the subset size can be wrong here
        raise CommandError(f"--train-subset: {err}") from None
    n_train = len(ds.y_train)
    if args.repr_subset is not None and args.repr_subset > n_train:
        raise CommandError(f"--repr-subset {args.repr_subset} exceeds the {n_train} training inputs")
    return ds, run_folder.seeded_rows(n_train, args.repr_subset, args.seed)


def _start_keras(verbose: bool) -> ModuleType:
    """Import :mod:`utils.keras_training` (Keras and its backend, TensorFlow or JAX: seconds, so only once
    the input is known good) and start the backend's devices; CommandError naming KERAS_BACKEND when
    the backend cannot be imported."""
    try:
        with native_logs_silenced(verbose):
            from utils import keras_training

            keras_training.start_backend()
    except (ImportError, ValueError) as err:  # Keras: ValueError "Unable to import backend"
        backend = os.environ.get("KERAS_BACKEND", "the one in ~/.keras/keras.json")
        raise CommandError(f"cannot start Keras with the backend KERAS_BACKEND={backend} ({err})") from None
    return keras_training


def train(
    args: argparse.Namespace,
    *,
    prog: str | None = None,
    extra_callbacks: Sequence[Any] = (),
    verbose: int | None = None,
) -> Path:
    """Train as ``args`` says, writing (or resuming) the run folder; returns its path.

    Flags, run folder and data are checked first; then, with the folder locked, Keras is imported and
    :func:`utils.keras_training.train_run` trains. ``extra_callbacks`` (Keras callbacks) run first.
    """
    run_dir = run_dir_for(args)
    flags = flags_of(args)
    check_run_dir(run_dir, flags)
    check_run_files(run_dir)
    ds, repr_rows = load_run_data(args)
    with run_lock(run_dir):
        resume = check_run_dir(run_dir, flags)  # again: another process may have written it meanwhile
        remove_leftovers(run_dir)
        keras_training = _start_keras(args.verbose)
        plan = keras_training.RunPlan(
            args=args, run_dir=run_dir, flags=flags, resume=resume, data=ds, repr_rows=repr_rows, prog=prog
        )
        try:
            keras_training.train_run(plan, extra_callbacks=extra_callbacks, verbose=verbose)
        except keras_training.NonFiniteLossError as err:  # raised inside a Keras callback
            raise CommandError(str(err)) from None
    return run_dir


def _summary(run_dir: Path) -> str:
    rows = run_folder.load_history(run_dir / run_folder.HISTORY_NAME)
    last = rows[max(rows)] if rows else {}
    scores = ", ".join(
        f"{name} {float(last[key]):.4f}"
        for key, name in (("test_accuracy", "test accuracy"), ("test_loss", "test loss"))
        if last.get(key)
    )
    return f"done: {run_dir} after {max(rows, default=0)} epochs" + (f", {scores}" if scores else "")


def _analyze(run_dir: Path) -> None:
    """Estimate and draw the information plane of a finished run (the first command ends with a figure).
    Imported here: SciPy, scikit-learn and matplotlib would slow down --help and flag errors."""
    from utils.analysis.information_plane import analyze

    try:
        analyze(run_dir)
    except InputError as err:
        raise CommandError(f"analysis of {run_dir} failed: {err}") from None


def main(
    argv: Sequence[str] | None = None, *, defaults: Mapping[str, Any], family: str, description: str | None = None
) -> int:
    """Entry point of the training scripts; returns the exit code: 0, 2 with one ``error:`` line for bad
    input, 1 with the traceback for a bug (:func:`utils.cli.run_command`).

    With ``--analyze`` the information plane is estimated and drawn after training.
    """
    prog = Path(sys.argv[0]).name if argv is None else "train"

    def body() -> None:
        args = parse_args(argv, defaults, family=family, prog=prog, description=description)
        run_dir = train(args, prog=prog)
        print(_summary(run_dir), flush=True)
        if args.analyze:
            _analyze(run_dir)

    return run_command(prog, body, interrupted="interrupted; run the same command again to resume")
