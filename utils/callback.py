"""The Keras callback that records dropout representations and information-plane surrogates.

Adilova, Geiger & Fischer (ICLR 2023): at epoch 0 (before training), every
``save_every`` epochs and at the last epoch it saves, in inference mode and on un-augmented inputs,
the noise-free input f(x) of every dropout layer (and alpha(x) for information dropout) for a fixed set
of training inputs and for the test inputs. The estimators draw the noise again from ``config.json``.

Every epoch it also records the paper's cheap information-plane coordinates on both splits:

* the mean over inputs of KL(p(z|x) || prior), summed over units (``IP/<split>_mean_kl.json``): the
  I(X;Z) surrogate of information dropout's loss (Achille & Soatto 2018), an upper bound, not an
  estimate; 0 for Gaussian and Bernoulli dropout, which have no such term;
* I(Y;Z) >= H(Y) - cross-entropy (a variational lower bound), H(Y) from that split's label counts.

Both are evaluated at the end of the epoch on fixed inputs (not averaged over the training batches),
with the dropout noise on, as in the paper, but with every other layer (batch norm, augmentation) in
inference mode: the model is cloned with its own layers shared (same weights) and each dropout layer
wrapped so that it always draws noise. When no dropout layer lies downstream of another, the dropout
inputs of that noisy pass are the noise-free f(x), so one pass gives both. The noise of epoch e's pass
comes from the key (seed, CALLBACK_NOISE, e) and the model's own random streams are put back after it,
so the callback neither depends on nor changes the training noise (an interrupted and resumed run
records the same values). Runs on any Keras 3 backend; on TensorFlow under a tf.distribute strategy and
on JAX under a keras.distribution, the passes are split over the replicas.

The callback writes a complete run folder by itself: ``config.json`` (the analysed layers with their noise
kind and level, the model's name and size, the seed, the inputs, the user's tags), ``history.csv``
(:class:`HistoryCSV`, one row per epoch, rewritten atomically, resume-safe), ``representations/`` and
``IP/``; the training scripts make their run folders through it too.
"""

from __future__ import annotations

import contextlib
import importlib
import platform
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
from scipy.special import log_softmax
from tqdm.auto import tqdm

from mi_estimators.checks import NOISE_KINDS, InputError, check_bool, check_int
from mi_estimators.discrete import discrete_entropy
from utils import run_folder
from utils.layers import CALLBACK_NOISE, InformationDropout, dropout_layers, noise_spec, reseeded, upstream_noise

BACKEND_MODULES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib"), "torch": ("torch",)}
"""The libraries behind each Keras backend, whose versions config.json records."""
PROBABILITY_SLACK = 1e-3
"""Output rows further than this from the probability simplex are not class probabilities."""
SAME_RUN_KEYS = ("layers", "seed", "tags")
"""The parts of ``config.json`` that must agree for a run folder to be continued (with the model's name and size)."""

PROB_FLOOR = 1e-7
"""Probabilities are clipped here before the log, as Keras' cross-entropy does."""


class _AlwaysNoisy(keras.layers.Layer):
    """Calls the wrapped dropout layer in training mode whatever mode the model runs in.

    ``call`` takes no ``training`` argument, so a functional model never overrides it.
    """

    def __init__(self, layer: keras.layers.Layer) -> None:
        super().__init__(name=f"{layer.name}_always_noisy")
        self.inner = layer

    def call(self, inputs: Any) -> Any:
        return self.inner(inputs, training=True)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.inner.compute_output_shape(input_shape)


class _Alpha(keras.layers.Layer):
    """alpha(x) of an information-dropout layer from its [f, alpha_logits] inputs."""

    def __init__(self, layer: InformationDropout) -> None:
        super().__init__(name=f"{layer.name}_alpha")
        self.inner = layer

    def call(self, inputs: Any) -> Any:
        return self.inner.alpha(inputs[1])

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[1]


class _KL(keras.layers.Layer):
    """Per-sample KL term of an information-dropout layer from its [f, alpha_logits] inputs."""

    def __init__(self, layer: InformationDropout) -> None:
        super().__init__(name=f"{layer.name}_kl")
        self.inner = layer

    def call(self, inputs: Any) -> Any:
        return self.inner.kl_divergence(inputs[0], self.inner.alpha(inputs[1]))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0][0],)


def _f_tensor(inputs: Any) -> Any:
    return inputs[0] if isinstance(inputs, (list, tuple)) else inputs


def analysed_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The dropout layers of ``model`` the callback analyses (``utils.layers.dropout_layers``).

    Raises InputError when there is none, when one sits inside a nested model or is called more than
    once (its input would be ambiguous), or when the model has more than one output.
    """
    layers = dropout_layers(model)
    if not layers:
        found = ", ".join(f"{layer.name} ({type(layer).__name__})" for layer in model.layers) or "none"
        raise InputError(
            f"model {model.name!r} has no noise layer to analyse; its layers: {found}. Supported: "
            "keras.layers.GaussianDropout (Gaussian dropout), utils.layers.InformationDropout (information "
            "dropout), keras.layers.Dropout (Bernoulli dropout: binning only) and keras.layers.GaussianNoise "
            f"(additive Gaussian noise), i.e. the kinds {', '.join(NOISE_KINDS)}"
        )
    top = {id(layer) for layer in model.layers}
    for layer in layers:
        if id(layer) not in top:
            raise InputError(
                f"dropout layer {layer.name!r} sits inside a nested model; the callback needs "
                "dropout layers at the top level of the model"
            )
        try:
            layer.input
        except (AttributeError, ValueError) as err:
            raise InputError(f"dropout layer {layer.name!r} must be called exactly once ({err})") from None
    if len(model.outputs) != 1:
        raise InputError(f"the callback needs a model with one output (class scores), got {len(model.outputs)}")
    return layers


def layer_entries(model: keras.Model) -> list[dict]:
    """``config.json`` ``layers``: per analysed layer its name, dim (units per sample), shape of f(x)
    and the fields of :func:`utils.layers.noise_spec` (the one source of the noise level)."""
    entries = []
    for layer in analysed_layers(model):
        shape = [int(s) for s in _f_tensor(layer.input).shape[1:]]
        spec = noise_spec(layer) or {}  # an analysed layer always has one
        entry = {"name": layer.name, "dim": int(np.prod(shape)), "shape": shape, **spec}
        upstream = upstream_noise(model, layer)
        if upstream:
            entry["upstream_noise"] = upstream
        entries.append(entry)
    return entries


def library_versions() -> dict[str, str]:
    """Python, the Keras backend and the versions of the libraries a run depends on."""
    backend = keras.backend.backend()
    modules = {
        "keras": "keras",
        "numpy": "numpy",
        "scipy": "scipy",
        "scikit-learn": "sklearn",
        **{name: name for name in BACKEND_MODULES.get(backend, ())},
    }
    return {
        "python": platform.python_version(),
        "backend": backend,
        **{name: importlib.import_module(module).__version__ for name, module in modules.items()},
    }


def compiled_from_logits(model: keras.Model) -> bool:
    """Whether the model was compiled with a loss that takes logits (``from_logits=True``); False for a loss
    given by name, whose Keras default takes probabilities."""
    return bool(getattr(getattr(model, "loss", None), "from_logits", False))


def _check_tags(tags: Mapping[str, Any] | None) -> dict[str, Any]:
    if tags is None:
        return {}
    if not isinstance(tags, Mapping) or not all(isinstance(k, str) for k in tags):
        raise InputError(f"tags must be a mapping of names to values, got {tags!r}")
    bad = [k for k, v in tags.items() if not isinstance(v, (str, int, float, bool)) or v != v]
    if bad:
        raise InputError(f"tags must have string, number or boolean values (JSON); {bad[0]!r} has {tags[bad[0]]!r}")
    return dict(tags)


def replicas(model: keras.Model) -> int:
    """Devices a model's passes are split over: the tf.distribute strategy's replicas (TensorFlow) or the
    devices of the keras.distribution in force (JAX); 1 otherwise."""
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is not None:
        return int(strategy.num_replicas_in_sync)
    distribution = keras.distribution.distribution()
    return 1 if distribution is None else int(np.size(distribution.device_mesh.devices))


def _scope(model: keras.Model) -> contextlib.AbstractContextManager:
    """The tf.distribute strategy scope of ``model`` (TensorFlow), else nothing."""
    strategy = getattr(model, "distribute_strategy", None)
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def _check_xy(x: np.ndarray, y: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y).reshape(-1)
    if len(x) != len(y) or len(x) == 0:
        raise InputError(f"{split} inputs and labels must be non-empty and of equal length, got {len(x)} and {len(y)}")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"{split} labels must be integer class indices, got dtype {y.dtype}")
    return x, y.astype(np.int64)


class RepresentationCallback(keras.callbacks.Callback):
    """Makes ``run_dir`` a complete run folder of any Keras model with noise layers: its ``config.json``,
    ``history.csv``, the representations of the saved epochs and the per-epoch IP surrogates.

    ``train`` and ``test`` are ``(inputs, labels)``: the (un-augmented) inputs whose representations are
    saved, labels as integer classes. At epoch 0 (before training), every ``save_every`` epochs and at the
    last epoch it saves the noise-free input f(x) of every noise layer (``keras.layers.GaussianDropout``,
    ``utils.layers.InformationDropout``, ``keras.layers.Dropout``, ``keras.layers.GaussianNoise``; found by
    ``utils.layers.dropout_layers``; top-level layers called once). ``metrics_subset`` fixes how many of
    the training inputs (a seeded subset) enter the per-epoch KL/cross-entropy means; None uses all.
    ``seed`` picks that subset and the noise of the noisy passes. ``from_logits`` says whether the model's
    single output is logits (None: as its compiled loss says). ``tags`` are free-form values stored in
    ``config.json``; runs whose configuration agrees but for the seed are the seeds of one group, named by
    its ``name`` tag. ``run_info`` adds fields to ``config.json`` (the training scripts' flags). Epochs are
    counted as completed epochs: 0 is before training, e after e epochs. A folder already holding another
    run is refused; the same run continues where ``fit`` starts (``initial_epoch``, or Keras'
    ``BackupAndRestore``, which restores the weights too), and ``resumed_at`` records where.

    Example (the README's "your own model")::

        recorder = RepresentationCallback("runs/mine", (x_train, y_train), (x_test, y_test), tags={"name": "cnn"})
        model.fit(x_train, y_train, epochs=15, callbacks=[recorder])
        # then: python -m utils.analysis.information_plane runs/mine
    """

    def __init__(
        self,
        run_dir: str | Path,
        train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray],
        *,
        save_every: int = 1,
        metrics_subset: int | None = None,
        seed: int = 0,
        batch_size: int = 1024,
        from_logits: bool | None = None,
        tags: Mapping[str, Any] | None = None,
        run_info: Mapping[str, Any] | None = None,
        verbose: bool = False,
    ) -> None:
        super().__init__()
        self.save_every = check_int(save_every, "save_every")
        self.batch_size = check_int(batch_size, "batch_size")
        self.seed = check_int(seed, "seed", minimum=0)
        self.run_dir = Path(run_dir)
        self.data = {"train": _check_xy(*train, "train"), "test": _check_xy(*test, "test")}
        n_train = len(self.data["train"][1])
        if metrics_subset is not None:
            metrics_subset = check_int(metrics_subset, "metrics_subset")
        self.metric_rows = (
            None
            if metrics_subset is None or metrics_subset >= n_train
            else run_folder.seeded_rows(n_train, metrics_subset, seed)
        )
        self.given_from_logits = None if from_logits is None else check_bool(from_logits, "from_logits")
        self.user_tags = _check_tags(tags)
        self.run_info = dict(run_info or {})
        self.history = HistoryCSV(self.run_dir / run_folder.HISTORY_NAME)
        self.verbose = verbose
        self.seconds: dict[int, float] = {}
        self.warnings: list[str] = []
        self._prepared = False
        self._first_epoch: int | None = None

    @property
    def from_logits(self) -> bool:
        if self.given_from_logits is not None:
            return self.given_from_logits
        return compiled_from_logits(self.model) if getattr(self, "model", None) is not None else False

    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        self.history.set_model(model)

    def run_config(self) -> dict[str, Any]:
        """``config.json`` of this run (before any resume): what :func:`utils.run_folder.load_config` reads."""
        model, (x_train, y_train), (_, y_test) = self.model, self.data["train"], self.data["test"]
        dataset = {
            "n_classes": int(max(y_train.max(), y_test.max())) + 1,
            "input_shape": [int(n) for n in x_train.shape[1:]],
            "n_repr_train": len(y_train),
            "n_repr_test": len(y_test),
            "n_metrics_train": len(y_train) if self.metric_rows is None else len(self.metric_rows),
            **self.run_info.get("dataset", {}),
        }
        return {
            "script": sys.argv[0] or None,
            **{k: v for k, v in self.run_info.items() if k != "dataset"},
            "dataset": dataset,
            "model": {"name": model.name, "n_params": int(model.count_params()), "replicas": replicas(model)},
            "versions": library_versions(),
            "layers": layer_entries(model),
            "seed": self.seed,
            "tags": self.user_tags,
            "from_logits": self.from_logits,
        }

    def _check_same_run(self, stored: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        differ = [k for k in SAME_RUN_KEYS if k in stored and stored[k] != new[k]]
        model_of = {k: stored.get("model", {}).get(k) for k in ("name", "n_params")}
        if model_of != {k: new["model"][k] for k in ("name", "n_params")}:
            differ.append("model")
        if differ:
            raise InputError(
                f"{self.run_dir} holds another run (its config.json differs in {', '.join(differ)}); "
                "write this one into another folder"
            )

    def write_config(self) -> None:
        """``config.json``: written for a new run; for a run that continues, checked against this one.
        InputError (nothing written) for another run."""
        new = self.run_config()
        path = self.run_dir / run_folder.CONFIG_NAME
        if not path.exists() and not path.is_symlink():
            run_folder.save_json(path, new)
        else:
            self._check_same_run(run_folder.load_config(self.run_dir), new)

    def _update_config(self, change: Callable[[dict[str, Any]], Any]) -> None:
        """Rewrite ``config.json`` (read through its checked reader) after ``change`` edits it."""
        config: dict[str, Any] = dict(run_folder.load_config(self.run_dir))
        change(config)
        run_folder.save_json(self.run_dir / run_folder.CONFIG_NAME, config)

    def _note_resume(self, epoch: int) -> None:
        """``resumed_at`` of ``config.json`` gains ``epoch``, the completed epochs where ``fit`` continues."""
        self._update_config(lambda config: config.update(resumed_at=[*config.get("resumed_at", []), epoch]))

    def _store_warnings(self) -> None:
        """Add the set-up's warnings to ``config.json``, where the estimation puts them on the callback's
        entries (and so on the figures)."""
        self._update_config(
            lambda config: config.update(warnings=sorted({*config.get("warnings", []), *self.warnings}))
        )

    # -- set-up ---------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Build the noisy and the saving model and read the IP files already in ``run_dir`` (resume);
        InputError for an unusable model or a damaged file. Done once, by ``on_train_begin`` at the
        latest; a caller may run it earlier to check a run folder before training."""
        if self._prepared:
            return
        self._build()
        self.history.load()
        self.ip = {
            (split, q, tag): run_folder.load_ip(self.run_dir, split, q, tag)
            for split in run_folder.SPLITS
            for q, tag in self._ip_keys()
        }
        # Converted once: predict_on_batch on tensor slices saves a numpy-to-tensor copy per pass.
        as_input = keras.ops.convert_to_tensor if replicas(self.model) == 1 else np.asarray
        self._x = {split: as_input(x) for split, (x, _) in self.data.items()}
        self._x_metric: Any = None if self.metric_rows is None else as_input(self.data["train"][0][self.metric_rows])
        self._prepared = True

    def _build(self) -> None:
        model = self.model
        layers = analysed_layers(model)
        layer_inputs = [layer.input for layer in layers]
        self.tags = [layer.name if len(layers) > 1 else None for layer in layers]
        self.is_info = [isinstance(layer, InformationDropout) for layer in layers]
        dropout_ids = {id(layer) for layer in layers}
        # A dropout input computed downstream of another (noisy) dropout layer is not noise-free.
        roots = all(
            not any(id(a) in dropout_ids for a in keras.Model(model.inputs, inp).layers) for inp in layer_inputs
        )
        with _scope(model):
            wrapped = {}

            def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
                if id(layer) in dropout_ids:
                    wrapped[id(layer)] = _AlwaysNoisy(layer)
                    return wrapped[id(layer)]
                return layer  # shared, so the clone computes with the current weights

            # Cloned through an uncompiled view of the same graph: cloning a compiled model copies its
            # compile config, whose serialisation imports TensorFlow even on the JAX backend.
            noisy = keras.models.clone_model(keras.Model(model.inputs, model.outputs), clone_function=clone)
            noisy_inputs = [wrapped[id(layer)].input for layer in layers]
            kl = [_KL(layer)(inp) for layer, inp, info in zip(layers, noisy_inputs, self.is_info) if info]
            self._metric_model = keras.Model(noisy.inputs, [noisy.outputs[0], *kl])
            reprs = []
            for layer, inp, info in zip(layers, noisy_inputs if roots else layer_inputs, self.is_info):
                reprs.extend([inp[0], _Alpha(layer)(inp)] if info else [inp])
            if roots:
                self._save_model = keras.Model(noisy.inputs, [noisy.outputs[0], *kl, *reprs])
            else:
                self._save_model = keras.Model(model.inputs, reprs)
        self._combined = roots

    # -- Keras hooks ----------------------------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        self.prepare()
        self.write_config()
        self._first_epoch = None
        for split, (x, y) in self.data.items():
            if not run_folder.inputs_path(self.run_dir, split).exists():
                run_folder.save_npy(run_folder.inputs_path(self.run_dir, split), x)
            if not run_folder.labels_path(self.run_dir, split).exists():
                run_folder.save_npy(run_folder.labels_path(self.run_dir, split), y)
        if not self._epoch_complete(0):
            self.record(0, save=True)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self._first_epoch is None:
            self._first_epoch = epoch
            if epoch > 0:
                self._note_resume(epoch)
        self.history.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = epoch + 1
        last = self.params.get("epochs") if self.params else None
        seconds = self.record(done, save=done % self.save_every == 0 or done == last)
        logs = {} if logs is None else logs
        logs["callback_seconds"] = seconds
        self.history.on_epoch_end(epoch, logs)

    # -- work -----------------------------------------------------------------------------------
    def _ip_keys(self) -> list[tuple[str, str | None]]:
        return [("mean_kl", tag) for tag in self.tags] + [("mi_zy", None)]

    def _epoch_complete(self, epoch: int) -> bool:
        files = [
            run_folder.representation_path(self.run_dir, s, epoch, t) for s in run_folder.SPLITS for t in self.tags
        ]
        files += [
            run_folder.alpha_path(self.run_dir, s, epoch, t)
            for s in run_folder.SPLITS
            for t, info in zip(self.tags, self.is_info)
            if info
        ]
        return all(p.exists() for p in files) and all(epoch in d for d in self.ip.values())

    def _predict(self, model: keras.Model, x: np.ndarray) -> list[np.ndarray]:
        if replicas(model) > 1:
            # predict() splits each batch over the replicas; predict_on_batch() would not.
            out = model.predict(x, batch_size=self.batch_size, verbose=0)
            return list(out) if isinstance(out, (list, tuple)) else [out]
        # A loop of predict_on_batch skips predict()'s tf.data pipeline: half the time for the fc net.
        starts = range(0, len(x), self.batch_size)
        parts = []
        for i in tqdm(
            starts,
            desc="representations",
            unit="batch",
            leave=False,
            disable=True if not self.verbose or len(starts) < 20 else None,
        ):
            out = model.predict_on_batch(x[i : i + self.batch_size])
            parts.append(list(out) if isinstance(out, (list, tuple)) else [out])
        return [np.concatenate(arrays) for arrays in zip(*parts)]

    def _cross_entropy(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        if self.from_logits:
            return -log_softmax(scores.astype(np.float64), axis=1)[np.arange(len(y)), y]
        p = scores.astype(np.float64)
        off = (p < -PROBABILITY_SLACK).any() or np.abs(p.sum(axis=1) - 1.0).max(initial=0.0) > PROBABILITY_SLACK
        if off and not self.warnings:
            self.warnings.append(
                "the model's outputs are not class probabilities (negative, or rows not summing to 1) but it "
                "was not compiled with from_logits=True: the callback's I(Y;Z) bound H(Y) - cross-entropy is "
                "meaningless; pass from_logits=True (or end the model with a softmax)"
            )
            warnings.warn(self.warnings[-1], stacklevel=2)
            self._store_warnings()
        p = p / p.sum(axis=1, keepdims=True)
        return -np.log(np.clip(p[np.arange(len(y)), y], PROB_FLOOR, 1.0))

    def _surrogates(self, split: str, outputs: list[np.ndarray], y: np.ndarray) -> None:
        """Queue mean KL per layer and H(Y) - mean cross-entropy of ``split`` from the noisy outputs."""
        kls = iter(outputs[1:])
        self._pending[(split, "mi_zy", None)] = discrete_entropy(y) - float(np.mean(self._cross_entropy(outputs[0], y)))
        for tag, info in zip(self.tags, self.is_info):
            self._pending[(split, "mean_kl", tag)] = float(np.mean(next(kls))) if info else 0.0

    def _save_representations(self, split: str, epoch: int, arrays: list[np.ndarray]) -> None:
        it = iter(arrays)
        for tag, info in zip(self.tags, self.is_info):
            f = next(it)
            run_folder.save_npy(
                run_folder.representation_path(self.run_dir, split, epoch, tag),
                f.reshape(len(f), -1).astype(np.float32, copy=False),
            )
            if info:
                alpha = next(it)
                run_folder.save_npy(
                    run_folder.alpha_path(self.run_dir, split, epoch, tag),
                    alpha.reshape(len(alpha), -1).astype(np.float32, copy=False),
                )

    def _passes(self, epoch: int, save: bool) -> None:
        """Queue both splits' surrogates and, with ``save``, write their representations."""
        n_metric = 1 + sum(self.is_info)
        for split, (_, y) in self.data.items():
            x = self._x[split]
            rows = self.metric_rows if split == "train" else None
            if save and self._combined:
                outputs = self._predict(self._save_model, x)
                metric_outputs, reprs = outputs[:n_metric], outputs[n_metric:]
                if rows is not None:
                    metric_outputs = [a[rows] for a in metric_outputs]
            else:
                metric_outputs = self._predict(self._metric_model, x if rows is None else self._x_metric)
                reprs = self._predict(self._save_model, x) if save else []
            self._surrogates(split, metric_outputs, y if rows is None else y[rows])
            if save:
                self._save_representations(split, epoch, reprs)

    def record(self, epoch: int, *, save: bool) -> float:
        """Compute and write the surrogates of ``epoch`` (and, with ``save``, the representations);
        returns the seconds taken. Called by the Keras hooks (after ``on_train_begin``). The noise of the
        noisy passes comes from the key (seed, CALLBACK_NOISE, epoch); the model's random streams are
        left as they were."""
        start = time.perf_counter()
        self._pending: dict[tuple, float] = {}
        with reseeded(self.model, (self.seed, CALLBACK_NOISE, epoch)):
            self._passes(epoch, save)
        for key, value in self._pending.items():
            self.ip[key][epoch] = value if np.isfinite(value) else None
            split, quantity, tag = key
            run_folder.save_json(
                run_folder.ip_path(self.run_dir, split, quantity, tag),
                {str(e): v for e, v in sorted(self.ip[key].items())},
            )
        seconds = time.perf_counter() - start
        self.seconds[epoch] = seconds
        if self.verbose and save:
            print(f"representations of epoch {epoch} saved to {self.run_dir} ({seconds:.1f} s)", flush=True)
        return seconds


class HistoryCSV(keras.callbacks.Callback):
    """``history.csv``: one row per completed epoch (train and test loss/accuracy, learning rate, wall
    seconds of the epoch and of the representation callback). The file is rewritten atomically each
    epoch; epochs run again after a resume replace their rows, so no epoch appears twice."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.rows: dict[int, dict[str, str]] = {}

    def load(self) -> None:
        """Read the rows already in the file (resume); InputError naming the file when it is damaged."""
        if not self.path.exists() and not self.path.is_symlink():
            self.rows = {}
            return
        self.rows = run_folder.load_history(self.path)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.load()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        done = epoch + 1
        row = {
            "epoch": str(done),
            "seconds": repr(time.perf_counter() - self._start),
            "learning_rate": repr(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))),
        }
        for key, value in (logs or {}).items():
            name = "test_" + key[4:] if key.startswith("val_") else key
            row[name] = repr(float(value))
        self.rows = {e: r for e, r in self.rows.items() if e < done}
        self.rows[done] = row
        run_folder.save_history(self.path, self.rows)
