"""The Keras side of a training run, on any Keras 3 backend (TensorFlow, JAX): the model and its
optimiser, epochs whose random streams depend on (seed, epoch) only, a checkpoint after every epoch,
and ``model.fit``. :mod:`utils.train_command` checks the command line and calls :func:`train_run`.

Adilova, Geiger & Fischer (ICLR 2023): SGD with momentum 0.9 and weight decay (Keras' is decoupled,
w <- w - lr * wd * w each step, unlike PyTorch's L2 term added to the gradient) and a cosine decay of
the learning rate to 0 over the whole run.

Bit-identical resume. Every random number of epoch e comes from a key (seed, stream, e): the order of
the training inputs (``numpy.random.default_rng([seed, SHUFFLE, e]).permutation``), the noise and
augmentation of the training steps (every ``keras.random.SeedGenerator`` of the model set from
(seed, TRAINING_NOISE, e) when the epoch starts) and the callback's noisy passes. Once an epoch's
files (representations, IP/*.json, history.csv) are written, ``<run>/checkpoint.npz`` is replaced,
atomically, by every model variable, every optimiser variable (iterations, momenta) and the epoch
count. A run killed at any point starts again from its last checkpoint and computes the same numbers:
the files of the epochs it repeats are rewritten with the same bytes. (Keras' ``BackupAndRestore``
keeps neither the SeedGenerator states nor the input order.) A NaN or infinite training loss stops
the run before anything of that epoch is written.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np

from mi_estimators.checks import InputError
from utils import run_folder
from utils.callback import RepresentationCallback
from utils.data import Dataset
from utils.layers import SHUFFLE, TRAINING_NOISE, reseed
from utils.models import build_model
from utils.nets import NETS

MOMENTUM = 0.9
CHECKPOINT_NAME = run_folder.CHECKPOINT_NAME


@dataclass(frozen=True)
class RunPlan:
    """A checked training request: its flags, its (locked) run folder and the data it trains on."""

    args: argparse.Namespace
    run_dir: Path
    flags: dict[str, Any]
    resume: bool
    data: Dataset
    repr_rows: np.ndarray
    prog: str | None = None


@dataclass(frozen=True)
class Placement:
    """Where the model lives: a tf.distribute scope (TensorFlow) or nothing, and the replica count."""

    scope: contextlib.AbstractContextManager
    replicas: int


@dataclass(frozen=True)
class RunCallbacks:
    """The run's own callbacks, in the order Keras must call them."""

    guard: keras.callbacks.Callback
    seeds: keras.callbacks.Callback
    recorder: RepresentationCallback
    checkpoint: keras.callbacks.Callback

    def ordered(self) -> list[keras.callbacks.Callback]:
        # The guard first, so that nothing of a non-finite epoch is written; the checkpoint last, so
        # that it exists only once the epoch's files (the recorder's, history.csv included) do.
        return [self.guard, self.seeds, self.recorder, self.checkpoint]


def start_backend() -> None:
    """Start the backend's devices now (the caller silences their native start-up messages)."""
    keras.ops.convert_to_numpy(keras.ops.zeros((1,)))


def _seed_initialisers(seed: int) -> None:
    """Seed the initial weights: Keras' initialisers and seed generators take their seeds from Python's
    random module."""
    if keras.backend.backend() == "tensorflow":
        keras.utils.set_random_seed(seed)  # also TensorFlow's own seed
    else:  # keras.utils.set_random_seed would import TensorFlow (seconds) only to seed it
        random.seed(seed)
        np.random.seed(seed)


def make_placement(kind: str) -> Placement:
    """``"none"``; or ``"mirrored"``: data parallel over all GPUs, else all logical CPUs, as
    tf.distribute.MirroredStrategy (TensorFlow) or keras.distribution.DataParallel (JAX)."""
    backend = keras.backend.backend()
    if kind == "none":
        return Placement(contextlib.nullcontext(), 1)
    if backend == "tensorflow":
        import tensorflow as tf  # the backend itself, imported by Keras already

        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        strategy = tf.distribute.MirroredStrategy(devices or [d.name for d in tf.config.list_logical_devices("CPU")])
        return Placement(strategy.scope(), int(strategy.num_replicas_in_sync))
    if backend == "jax":
        devices = keras.distribution.list_devices()  # the GPUs (or TPUs), else the CPUs
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        return Placement(contextlib.nullcontext(), len(devices))
    raise InputError(f"--distribute {kind} needs the tensorflow or jax backend, not {backend}")


def check_even_split(plan: RunPlan, replicas: int) -> None:
    """JAX's DataParallel splits every batch evenly over the devices: InputError naming the flags whose
    batches do not split (TensorFlow's MirroredStrategy splits any batch)."""
    if replicas == 1 or keras.backend.backend() != "jax":
        return
    args, n_train, n_repr = plan.args, len(plan.data.y_train), len(plan.repr_rows)
    evaluation = args.eval_batch_size or 16 * args.batch_size
    sizes = {
        "--batch-size": args.batch_size,
        "the last training batch": n_train % args.batch_size,
        "--eval-batch-size": evaluation,
        "the last batch of the saved training inputs": n_repr % evaluation,
        "the last batch of the --metrics-subset": min(args.metrics_subset, n_repr) % evaluation,
        "the last test batch": len(plan.data.y_test) % evaluation,
    }
    odd = [f"{name} ({size})" for name, size in sizes.items() if size % replicas]
    if odd:
        raise InputError(
            f"--distribute mirrored on JAX splits every batch evenly over the {replicas} devices; "
            f"not a multiple of {replicas}: {', '.join(odd)}; choose --batch-size, "
            "--eval-batch-size or --train-subset to fit"
        )


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the n training inputs in epoch ``epoch``:
    ``numpy.random.default_rng([seed, SHUFFLE, epoch]).permutation(n)``."""
    return np.random.default_rng([seed, SHUFFLE, epoch]).permutation(n)


@dataclass(frozen=True)
class Feed:
    """The training batches of the epochs ``first`` to the last, one stream, and the batches per epoch."""

    batches: Any
    steps: int


class EpochBatches(keras.utils.PyDataset):
    """Batch i of the stream: batch i % steps of epoch first + i // steps, in :func:`epoch_order`."""

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, first: int) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.seed, self.first = x, y, batch_size, seed, first
        self.steps = math.ceil(len(y) / batch_size)
        self._order = (-1, np.arange(0))

    @property
    def num_batches(self) -> None:
        return None  # one stream over all epochs: fit's steps_per_epoch cuts it into epochs

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        epoch, step = divmod(index, self.steps)
        if self._order[0] != self.first + epoch:
            self._order = (self.first + epoch, epoch_order(self.seed, self.first + epoch, len(self.y)))
        rows = self._order[1][step * self.batch_size : (step + 1) * self.batch_size]
        return self.x[rows], self.y[rows]


def _tf_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, first: int, epochs: int) -> Any:
    """The same stream as a tf.data pipeline built like Keras' own for arrays (batches of row indices,
    tf.gather, prefetch): on TensorFlow a Python dataset costs ~10% of an fc epoch."""
    import tensorflow as tf  # the backend itself, imported by Keras already

    orders = tf.data.Dataset.from_generator(
        lambda: (epoch_order(seed, e, len(y)) for e in range(first, epochs)),
        output_signature=tf.TensorSpec((len(y),), tf.int64),
    )
    rows = orders.flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(batch_size))
    arrays = tf.data.Dataset.from_tensors((x, y)).repeat()  # not captured as a constant: no copy per epoch
    return (
        tf.data.Dataset.zip((rows, arrays))
        .map(lambda r, xy: (tf.gather(xy[0], r), tf.gather(xy[1], r)), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def training_feed(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, first: int, epochs: int) -> Feed:
    """The training batches of epochs ``first`` .. ``epochs - 1``, each epoch in :func:`epoch_order`."""
    if keras.backend.backend() == "tensorflow":
        return Feed(_tf_batches(x, y, batch_size, seed, first, epochs), math.ceil(len(y) / batch_size))
    batches = EpochBatches(x, y, batch_size, seed, first)
    return Feed(batches, batches.steps)


class SeededEpochs(keras.callbacks.Callback):
    """When epoch e starts: every SeedGenerator of the model from (seed, TRAINING_NOISE, e)
    (utils.layers.reseed), so that the noise and augmentation of epoch e depend on (seed, e) only."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        reseed(self.model, (self.seed, TRAINING_NOISE, epoch))


class NonFiniteLossError(Exception):
    """The training or test loss became NaN or infinite: training stopped, the run folder keeps the last
    good epoch. The command line reports it as a user error (a smaller --lr helps)."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """:class:`NonFiniteLossError` at the first NaN or infinite training or test loss, raised before the
    callbacks after this one see the epoch's end: the run folder keeps the last good epoch."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._check(logs, "loss", f"step {batch + 1} of epoch {self.epoch + 1}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key in ("loss", "val_loss"):
            self._check(logs, key, f"the end of epoch {epoch + 1}")

    def _check(self, logs: dict | None, key: str, where: str) -> None:
        value = float((logs or {}).get(key, 0.0))
        if not math.isfinite(value):
            name = "test loss" if key.startswith("val_") else "training loss"
            raise NonFiniteLossError(
                f"the {name} is {value} at {where}; training stopped, {self.run_dir} keeps "
                f"the last good epoch, {self.epoch} (lower --lr?)"
            )


def save_checkpoint(path: Path, model: keras.Model, epochs_done: int) -> None:
    """Write every model and optimiser variable and ``epochs_done`` to ``path``
    (:func:`utils.run_folder.save_checkpoint`)."""
    arrays: dict[str, np.ndarray] = {}
    for prefix, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
        arrays.update({f"{prefix}_{i:05d}": keras.ops.convert_to_numpy(v.value) for i, v in enumerate(variables)})
    run_folder.save_checkpoint(path, epochs_done, arrays)


def _assign(path: Path, prefix: str, variables: Sequence[keras.Variable], arrays: dict[str, np.ndarray]) -> None:
    keys = sorted(k for k in arrays if k.startswith(prefix + "_"))
    shapes = [arrays[k].shape for k in keys]
    if shapes != [tuple(v.shape) for v in variables]:
        raise InputError(
            f"{path} holds {len(keys)} {prefix} variables that do not fit this run's "
            f"{len(variables)}; move it away to train from the start"
        )
    for key, variable in zip(keys, variables):
        variable.assign(arrays[key])


def load_checkpoint(path: Path, model: keras.Model) -> int:
    """Put the variables saved in ``path`` back into ``model`` and its (built) optimiser; returns the
    completed epochs (0 without a checkpoint). InputError naming the file when it is damaged
    (:func:`utils.run_folder.load_checkpoint`) or belongs to another model."""
    if not path.exists() and not path.is_symlink():
        return 0
    epochs_done, arrays = run_folder.load_checkpoint(path)
    _assign(path, "model", model.variables, arrays)
    _assign(path, "optimizer", model.optimizer.variables, arrays)
    return epochs_done


ANNOUNCE_SECONDS = 60.0
"""Training predicted (from its first epoch) to need more than this is announced on stderr."""


class AnnounceDuration(keras.callbacks.Callback):
    """After the first epoch of this process: the time the remaining epochs will take, on stderr whether or not
    it is a terminal, when that is more than :data:`ANNOUNCE_SECONDS` (Keras prints a line per epoch after it)."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.first: int | None = None
        self.start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.first is None:
            self.first, self.start = epoch, time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch != self.first:
            return
        seconds = time.monotonic() - self.start
        left = (self.params or {}).get("epochs", epoch + 1) - epoch - 1
        if seconds * left > ANNOUNCE_SECONDS:
            print(
                f"{self.run_dir}: epoch {epoch + 1} took {seconds:.0f} s; the remaining {left} epochs will take "
                f"about {seconds * left / 60:.0f} min",
                file=sys.stderr,
                flush=True,
            )


class Checkpoint(keras.callbacks.Callback):
    """:func:`save_checkpoint` after every epoch."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        save_checkpoint(self.path, self.model, epoch + 1)


def _compiled_model(plan: RunPlan, placement: Placement) -> keras.Model:
    """The net, compiled with SGD + momentum, decoupled weight decay and cosine decay; optimiser built."""
    args, ds = plan.args, plan.data
    with placement.scope:
        model = build_model(
            args.net,
            dropout=args.dropout,
            p=args.p,
            input_shape=ds.input_shape,
            n_classes=ds.n_classes,
            n_train=len(ds.y_train),
            beta=args.beta,
            alpha_max=args.alpha_max,
            filters=args.filters,
            normalization=ds.channel_stats() if NETS[args.net].family == "cifar10" else None,
        )
        steps = args.epochs * math.ceil(len(ds.y_train) / args.batch_size)
        optimizer = keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(args.lr, decay_steps=steps),
            momentum=MOMENTUM,
            weight_decay=args.weight_decay,
        )
        # The learned log-normal prior of information dropout is part of the KL term, not a weight.
        optimizer.exclude_from_weight_decay(var_names=["prior_mean", "prior_log_std"])
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
        optimizer.build(model.trainable_variables)  # its variables must exist before a checkpoint fills them
    return model


def _callbacks(plan: RunPlan) -> RunCallbacks:
    args, ds, rows = plan.args, plan.data, plan.repr_rows
    run_info = {
        "script": plan.prog,
        "flags": plan.flags,
        "dataset": {"name": ds.name, "source": ds.source, "n_train": len(ds.y_train), "n_test": len(ds.y_test)},
    }
    recorder = RepresentationCallback(
        plan.run_dir,
        (ds.x_train[rows], ds.y_train[rows]),
        (ds.x_test, ds.y_test),
        save_every=args.save_every,
        metrics_subset=args.metrics_subset,
        seed=args.seed,
        batch_size=args.eval_batch_size or 16 * args.batch_size,
        from_logits=False,
        run_info=run_info,
        verbose=True,
    )
    return RunCallbacks(
        StopOnNonFiniteLoss(plan.run_dir),
        SeededEpochs(args.seed),
        recorder,
        Checkpoint(plan.run_dir / CHECKPOINT_NAME),
    )


def _check_backend(plan: RunPlan) -> None:
    """A run continues on the backend it started on."""
    if not plan.resume:
        return
    stored = run_folder.load_config(plan.run_dir).get("versions", {}).get("backend")
    if stored is not None and stored != keras.backend.backend():
        raise InputError(
            f"{plan.run_dir} was trained with the {stored} backend, this is {keras.backend.backend()}; "
            f"resume it with KERAS_BACKEND={stored}"
        )


def _restore(plan: RunPlan, model: keras.Model, callbacks: RunCallbacks) -> int:
    """Read what the run folder holds already (checkpoint, history, IP files): the completed epochs.
    InputError naming a damaged file; writes nothing."""
    callbacks.recorder.set_model(model)
    callbacks.recorder.prepare()
    return load_checkpoint(plan.run_dir / CHECKPOINT_NAME, model) if plan.resume else 0


def _check_state(plan: RunPlan, callbacks: RunCallbacks, done: int) -> None:
    """A resumed run continues only when the files of its first ``done`` epochs are there (representations
    of the saved epochs, the callback's values, the history): they cannot be recomputed from the last
    checkpoint. InputError listing what is missing and how to recover; writes nothing."""
    if not plan.resume or done == 0:
        return
    config = run_folder.load_config(plan.run_dir)
    missing = [
        p.relative_to(plan.run_dir).as_posix()
        for p in run_folder.missing_epoch_files(
            plan.run_dir, config, [e for e in run_folder.expected_epochs(config, done)]
        )
    ]
    missing += [
        f"{split} inputs/labels"
        for split in run_folder.SPLITS
        if not run_folder.labels_path(plan.run_dir, split).is_file()
    ]
    lacking = sorted({e for d in callbacks.recorder.ip.values() for e in range(done + 1) if e not in d})
    if lacking:
        missing.append(f"the callback's values of epochs {_ranges(lacking)} in {run_folder.IP_DIR}/")
    rows = set(callbacks.recorder.history.rows)
    if any(e not in rows for e in range(1, done + 1)):
        missing.append(f"history.csv rows of epochs {_ranges([e for e in range(1, done + 1) if e not in rows])}")
    if missing:
        raise InputError(
            f"{plan.run_dir} has trained {done} epochs (checkpoint.npz), but {len(missing)} of their files are "
            f"missing ({', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}); they cannot be made from "
            f"the checkpoint: move {CHECKPOINT_NAME} away and run the same command to train again from the "
            "start (the same flags give the same numbers)"
        )


def _ranges(epochs: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    parts: list[list[int]] = []
    for e in epochs:
        if parts and e == parts[-1][1] + 1:
            parts[-1][1] = e
        else:
            parts.append([e, e])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def train_run(
    plan: RunPlan, *, extra_callbacks: Sequence[keras.callbacks.Callback] = (), verbose: int | None = None
) -> None:
    """Train (or resume) the run of ``plan``; ``extra_callbacks`` run before the run's own."""
    args, ds = plan.args, plan.data
    _check_backend(plan)
    _seed_initialisers(args.seed)
    placement = make_placement(args.distribute)
    check_even_split(plan, placement.replicas)
    model = _compiled_model(plan, placement)
    callbacks = _callbacks(plan)
    done = _restore(plan, model, callbacks)
    _check_state(plan, callbacks, done)
    if done >= args.epochs:
        print(f"{plan.run_dir} is complete ({done} epochs); nothing to do", flush=True)
        return
    print(
        f"{'resuming' if plan.resume else 'starting'} {plan.run_dir} at epoch {done}: {args.net} with "
        f"{args.dropout} dropout on {ds.name} ({len(ds.y_train)} train / {len(ds.y_test)} test, "
        f"{placement.replicas} replica(s), {keras.backend.backend()})",
        flush=True,
    )
    feed = training_feed(ds.x_train, ds.y_train, args.batch_size, args.seed, done, args.epochs)
    model.fit(
        feed.batches,
        steps_per_epoch=feed.steps,
        epochs=args.epochs,
        initial_epoch=done,
        shuffle=False,
        validation_data=(ds.x_test, ds.y_test),
        validation_batch_size=callbacks.recorder.batch_size,
        callbacks=[*extra_callbacks, *callbacks.ordered(), AnnounceDuration(plan.run_dir)],
        verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose,
    )
