"""Training shared by ``mi_mnist_dropout.py`` and ``mi_cifar_dropout.py`` (which only set defaults).

Adilova, Geiger & Fischer (ICLR 2023): SGD with momentum 0.9 and weight decay, a cosine
learning-rate decay over the whole run, one dropout layer whose noise-free input is recorded every
``--save-every`` epochs by :class:`utils.callback.RepresentationCallback`. Keras' ``weight_decay`` is
decoupled (w <- w - lr * wd * w each step), unlike PyTorch's L2 term added to the gradient.

Bad input (flags out of range, a net that cannot take the dropout kind or dataset, an unwritable
``--out``, a missing dataset, a run folder holding another configuration) ends with one
``<prog>: error: ...`` message on stderr and exit code 2. Re-running the same command resumes an
interrupted run (Keras ``BackupAndRestore`` in ``<run>/backup``); a finished run is left as it is.
"""
from __future__ import annotations

import argparse
import csv
import math
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence

import numpy as np

from utils import run_folder as rf
from utils.data import DATASETS, DatasetUnavailableError, load_dataset

# TensorFlow and Keras are imported inside the functions that need them, so that checks which need
# neither (flags, run folder, local data files) answer before TensorFlow's start-up.

MOMENTUM = 0.9
METRICS_SUBSET = 5000
"""Default number of training inputs behind the per-epoch KL / cross-entropy means (standard error of
a mean cross-entropy of spread ~0.5 nats: ~0.005 nats)."""

RESUME_FLAGS = ("dataset", "net", "dropout", "p", "beta", "alpha_max", "filters", "epochs", "batch_size", "lr",
                "weight_decay", "save_every", "train_subset", "repr_subset", "metrics_subset", "seed")
"""Flags that define a run: a run folder whose config.json differs in any of them is not resumed."""


class RunError(Exception):
    """A user-facing error: printed as one ``<prog>: error: ...`` line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise RunError(message)


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value
    return parse


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def family_choices(family: str) -> tuple[list[str], list[str]]:
    """Nets of a dataset family (``"mnist"`` or ``"cifar10"``) and the datasets they run on."""
    from utils.models import NETS

    nets = [name for name, spec in NETS.items() if spec.family == family]
    datasets = sorted({d for name in nets for d in NETS[name].datasets}, key=list(DATASETS).index)
    return nets, datasets


def build_parser(defaults: Mapping[str, Any], *, family: str, prog: str | None = None,
                 description: str | None = None) -> argparse.ArgumentParser:
    """The command line of a training script; ``defaults`` sets dataset, net, lr, batch_size, epochs,
    p, weight_decay and save_every (and may set any other flag)."""
    from utils.models import DROPOUT_KINDS

    nets, datasets = family_choices(family)
    parser = _Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--dataset", choices=datasets, help="dataset (default: %(default)s)")
    add("--data-dir", help="folder with local copies of the dataset (never downloads when given)")
    add("--net", choices=nets, help="network (default: %(default)s)")
    add("--dropout", choices=DROPOUT_KINDS, help="dropout kind (default: the net's own)")
    add("--p", type=_finite_float,
        help="Gaussian/Bernoulli dropout rate; Gaussian noise std sqrt(p/(1-p)) (default: %(default)s)")
    add("--beta", type=_finite_float, default=3.0,
        help="information dropout: loss = CE + beta * KL / N_train (default: %(default)s)")
    add("--alpha-max", type=_finite_float, default=0.7,
        help="information dropout: largest alpha(x) (default: %(default)s)")
    add("--filters", type=_finite_float, default=1.0,
        help="fraction of conv filters, CIFAR-10 conv nets only (default: %(default)s)")
    add("--epochs", type=_int_at_least(1), help="training epochs (default: %(default)s)")
    add("--batch-size", type=_int_at_least(1), help="batch size, global over all replicas (default: %(default)s)")
    add("--lr", type=_finite_float, help="initial learning rate, cosine decay to 0 over the run (default: %(default)s)")
    add("--weight-decay", type=_finite_float, help="SGD weight decay, decoupled (default: %(default)s)")
    add("--save-every", type=_int_at_least(1),
        help="save representations every N epochs, and at 0 and the last (default: %(default)s)")
    add("--train-subset", type=_int_at_least(1), help="train on a fixed seeded subset of N training inputs")
    add("--repr-subset", type=_int_at_least(1),
        help="save the representations of a fixed seeded subset of N training inputs (default: all)")
    add("--metrics-subset", type=_int_at_least(1), default=METRICS_SUBSET,
        help="saved training inputs behind the per-epoch KL and cross-entropy means (default: %(default)s)")
    add("--eval-batch-size", type=_int_at_least(1), help="batch size of the callback's passes (default: 16 x batch)")
    add("--out", help="run folder (default: runs/<dataset>-<net>-<dropout>-p<p>-seed<seed>, "
                      "beta<beta> in place of p<p> for information dropout)")
    add("--seed", type=_int_at_least(0), default=0,
        help="seed of weights, noise, shuffling and subsets (default: %(default)s)")
    add("--distribute", choices=("none", "mirrored"), default="none",
        help="mirrored: tf.distribute.MirroredStrategy over all GPUs, else all logical CPUs (default: %(default)s)")
    add("--analyze", action=argparse.BooleanOptionalAction, default=False,
        help="after training, estimate the information plane (mi_estimators.information_plane with its "
             "defaults) and draw it under <run>/figures (default: %(default)s)")
    parser.set_defaults(**defaults)
    return parser


def check_args(args: argparse.Namespace) -> argparse.Namespace:
    """Range and compatibility checks beyond argparse; fills ``--dropout`` from the net. RunError on failure."""
    from utils.models import NETS

    spec = NETS[args.net]
    if args.dropout is None:
        args.dropout = spec.default_dropout
    if args.dataset not in spec.datasets:
        raise RunError(f"net {args.net!r} runs on {', '.join(spec.datasets)}, not on {args.dataset!r}")
    if args.dropout not in spec.dropouts:
        raise RunError(f"net {args.net!r} cannot take {args.dropout} dropout; it takes {', '.join(spec.dropouts)}")
    if args.p is None or not 0.0 < args.p < 1.0:
        raise RunError(f"--p must lie strictly between 0 and 1, got {args.p}")
    for flag, value, ok, need in (("--lr", args.lr, args.lr is not None and args.lr > 0, "> 0"),
                                  ("--weight-decay", args.weight_decay,
                                   args.weight_decay is not None and args.weight_decay >= 0, ">= 0"),
                                  ("--beta", args.beta, args.beta >= 0, ">= 0"),
                                  ("--alpha-max", args.alpha_max, args.alpha_max > 0, "> 0"),
                                  ("--filters", args.filters, args.filters > 0, "> 0")):
        if not ok:
            raise RunError(f"{flag} must be {need}, got {value}")
    if args.filters != 1.0 and spec.family != "cifar10":
        raise RunError(f"--filters applies to the CIFAR-10 conv nets only, not to {args.net!r}")
    for flag in ("epochs", "batch_size", "save_every"):
        if getattr(args, flag) is None:
            raise RunError(f"--{flag.replace('_', '-')} has no default here; pass it")
    return args


def parse_args(argv: Sequence[str] | None, defaults: Mapping[str, Any], *, family: str,
               prog: str | None = None, description: str | None = None) -> argparse.Namespace:
    """Parse and check a training command line (RunError with a one-line message on bad input)."""
    return check_args(build_parser(defaults, family=family, prog=prog, description=description).parse_args(argv))


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


def check_run_dir(run_dir: Path, flags: Mapping[str, Any]) -> bool:
    """True when ``run_dir`` holds this configuration already (resume), False when it is new or empty.

    RunError when it is not a folder, is not empty without a config.json, or holds a config.json whose
    run-defining flags (:data:`RESUME_FLAGS`) differ. Writes nothing.
    """
    config_path = run_dir / rf.CONFIG_NAME
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"cannot write to --out {run_dir}: it is a file")
    if config_path.exists():
        try:
            stored = rf.load_json(config_path).get("flags", {})
        except (ValueError, OSError, AttributeError) as err:
            raise RunError(f"cannot read {config_path} ({err}); choose another --out") from None
        diff = [f"{k}: {stored.get(k)!r} there, {flags.get(k)!r} now" for k in RESUME_FLAGS
                if stored.get(k) != flags.get(k)]
        if diff:
            raise RunError(f"{run_dir} holds a run with a different configuration ({'; '.join(diff)}); "
                           "repeat its flags to resume it or choose another --out")
        return True
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise RunError(f"{run_dir} is not empty and holds no {rf.CONFIG_NAME}; choose an empty or new --out")
    return False


def make_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` and check that files can be written there (RunError otherwise)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as err:
        raise RunError(f"cannot write to --out {run_dir}: {err.strerror or err}") from None


def make_strategy(kind: str) -> Any:
    """The default (no-op) strategy, or MirroredStrategy over all GPUs, else over all logical CPUs."""
    import tensorflow as tf

    if kind == "none":
        return tf.distribute.get_strategy()
    devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def _library_versions() -> dict[str, str]:
    import keras
    import scipy
    import sklearn
    import tensorflow as tf

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__}


def train(args: argparse.Namespace, *, extra_callbacks: Sequence[Any] = (), verbose: int | None = None,
          prog: str | None = None) -> Path:
    """Train as ``args`` says, writing (or resuming) the run folder; returns its path.

    ``extra_callbacks`` (Keras callbacks) run before the run's own.
    """
    run_dir = run_dir_for(args)
    flags = flags_of(args)
    resume = check_run_dir(run_dir, flags)
    try:
        ds = load_dataset(args.dataset, args.data_dir, args.train_subset, seed=args.seed)
    except ValueError as err:
        raise RunError(f"--train-subset: {err}") from None
    import keras

    from utils.callback import HistoryCSV, RepresentationCallback, layer_entries
    from utils.models import NETS, build_model

    keras.utils.set_random_seed(args.seed)
    n_train = len(ds.y_train)
    if args.repr_subset is not None and args.repr_subset > n_train:
        raise RunError(f"--repr-subset {args.repr_subset} exceeds the {n_train} training inputs")
    repr_rows = rf.seeded_rows(n_train, args.repr_subset, args.seed)
    make_run_dir(run_dir)
    strategy = make_strategy(args.distribute)
    steps_per_epoch = math.ceil(n_train / args.batch_size)
    with strategy.scope():
        try:
            model = build_model(args.net, dropout=args.dropout, p=args.p, input_shape=ds.input_shape,
                                n_classes=ds.n_classes, n_train=n_train, beta=args.beta, alpha_max=args.alpha_max,
                                filters=args.filters,
                                normalization=ds.channel_stats() if NETS[args.net].family == "cifar10" else None)
        except ValueError as err:
            raise RunError(str(err)) from None
        schedule = keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=args.epochs * steps_per_epoch)
        optimizer = keras.optimizers.SGD(schedule, momentum=MOMENTUM, weight_decay=args.weight_decay)
        # The learned log-normal prior of information dropout is part of the KL term, not a weight.
        optimizer.exclude_from_weight_decay(var_names=["prior_mean", "prior_log_std"])
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    recorder = RepresentationCallback(
        run_dir, (ds.x_train[repr_rows], ds.y_train[repr_rows]), (ds.x_test, ds.y_test),
        save_every=args.save_every, metrics_subset=args.metrics_subset, seed=args.seed,
        batch_size=args.eval_batch_size or 16 * args.batch_size, verbose=True)
    if not resume:
        rf.save_json(run_dir / rf.CONFIG_NAME, {
            "script": prog, "flags": flags,
            "dataset": {"name": ds.name, "source": ds.source, "n_train": n_train, "n_test": len(ds.y_test),
                        "n_classes": ds.n_classes, "input_shape": list(ds.input_shape),
                        "n_repr_train": len(repr_rows), "n_repr_test": len(ds.y_test),
                        "n_metrics_train": min(args.metrics_subset, len(repr_rows))},
            "model": {"name": model.name, "n_params": int(model.count_params()),
                      "replicas": int(strategy.num_replicas_in_sync)},
            "versions": _library_versions(),
            "layers": layer_entries(model),
        })
    print(f"{'resuming' if resume else 'starting'} {run_dir}: {args.net} with {args.dropout} dropout on "
          f"{ds.name} ({n_train} train / {len(ds.y_test)} test, {strategy.num_replicas_in_sync} replica(s))",
          flush=True)
    callbacks = [*extra_callbacks, recorder, HistoryCSV(run_dir / rf.HISTORY_NAME),
                 # last, so that a backup exists only once the epoch's files are written
                 keras.callbacks.BackupAndRestore(str(run_dir / "backup"), double_checkpoint=True,
                                                  delete_checkpoint=False)]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    model.fit(ds.x_train, ds.y_train, batch_size=args.batch_size, epochs=args.epochs,
              validation_data=(ds.x_test, ds.y_test), callbacks=callbacks, verbose=verbose)
    return run_dir


def _summary(run_dir: Path) -> str:
    path = run_dir / rf.HISTORY_NAME
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    last = rows[-1]
    return (f"done: {run_dir} after {last['epoch']} epochs, test accuracy {float(last['test_accuracy']):.4f}, "
            f"test loss {float(last['test_loss']):.4f}")


def main(argv: Sequence[str] | None = None, *, defaults: Mapping[str, Any], family: str,
         description: str | None = None) -> int:
    """Entry point of the training scripts; returns the exit code (2 for bad input)."""
    prog = Path(sys.argv[0]).name if argv is None else None
    try:
        args = parse_args(argv, defaults, family=family, prog=prog, description=description)
        run_dir = train(args, prog=prog)
    except (RunError, DatasetUnavailableError) as err:
        print(f"{prog or 'train'}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog or 'train'}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print(_summary(run_dir), flush=True)
    if args.analyze:
        return _analyze(run_dir, prog)
    return 0


def _analyze(run_dir: Path, prog: str | None) -> int:
    """Estimate and draw the information plane of a finished run (issue: the first command ends with a figure)."""
    from mi_estimators.information_plane import analyze

    try:
        analyze(run_dir)
    except (ValueError, FileNotFoundError) as err:
        print(f"{prog or 'train'}: error: analysis of {run_dir} failed: {err}", file=sys.stderr)
        return 2
    return 0
