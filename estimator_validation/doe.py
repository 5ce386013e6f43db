"""Difference-of-Entropies (DoE) estimate of I(X;Z) (McAllester & Stratos 2020, AISTATS).

"Formal Limitations on the Measurement of Mutual Information": I(X;Z) = H(Z) - H(Z|X), and each
entropy is bounded above by a cross-entropy, H(Z) <= E[-log q(Z)] and H(Z|X) <= E[-log q(Z|X)]. Both
models are fitted by minimising the sum of the two cross-entropies on a training part of the data
and evaluated on a held-out part:

* marginal q(z): factorised, one learned location and log-scale per dimension (as in the authors'
  code); the true marginal of the toy problem is factorised when ``fdim == dim``;
* conditional q(z|x): a small Keras MLP of x giving a location and a log-scale per dimension.

``family`` picks Gaussian or logistic densities for both. The estimate is the held-out difference
of the two cross-entropies; its standard error is that of the mean of the paired per-row
differences, clustered by group (input) when one input has several noise draws. DoE is not a
guaranteed bound (a difference of two upper bounds): a loose marginal model pushes it up, a loose
conditional model pushes it down.

Only ``keras`` and ``keras.ops`` are used, so the estimate runs on any Keras backend
(``KERAS_BACKEND=tensorflow`` or ``jax``); the backend is recorded in ``params``.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

import numpy as np

from mi_estimators.checks import LOG_SQRT_2PI, as_samples, check_same_length
from mi_estimators.results import MIResult
from utils.cli import native_logs_silenced

if TYPE_CHECKING:  # Keras is imported only when a model is fitted
    import keras

FAMILIES = ("gaussian", "logistic")
_COMPILED: dict[tuple[str, int, int, int, int], keras.Model] = {}
"""Compiled models by (family, dim, fdim, hidden, layers). A fit reuses one with fresh weights and optimizer
state: tracing the training step costs seconds, often more than the fit itself."""


@functools.cache
def _started_keras():
    """Keras, imported and its backend's devices started once, with their native start-up lines (oneDNN,
    cuInit) off the terminal, as :func:`utils.keras_training.start_backend` does for training."""
    with native_logs_silenced(verbose=False):
        import keras

        keras.ops.convert_to_numpy(keras.ops.zeros((1,)))
    return keras


def _nll(family: str, z, loc, log_scale):
    """-log q(z) summed over dimensions, for a Gaussian or logistic density (Keras ops)."""
    from keras import ops

    log_scale = ops.clip(log_scale, -12.0, 12.0)
    u = (z - loc) * ops.exp(-log_scale)
    if family == "gaussian":
        per_dim = LOG_SQRT_2PI + log_scale + 0.5 * u * u
    else:
        per_dim = log_scale + u + 2.0 * ops.softplus(-u)
    return ops.sum(per_dim, axis=-1)


def _build_model(family: str, dim: int, fdim: int, hidden: int, layers: int, seed: int) -> keras.Model:
    """Keras model [x, z] -> (batch, 2): the two per-row cross-entropy terms, marginal first.

    The hidden layers' Glorot-uniform weights are seeded one by one from ``seed`` (not through
    ``keras.utils.set_random_seed``, which would import TensorFlow on every backend)."""
    import keras

    class Marginal(keras.layers.Layer):
        def build(self, input_shape):
            self.loc = self.add_weight(shape=(fdim,), initializer="zeros", name="loc")
            self.log_scale = self.add_weight(shape=(fdim,), initializer="zeros", name="log_scale")

        def call(self, z):
            return _nll(family, z, self.loc, self.log_scale)

    class Conditional(keras.layers.Layer):
        def call(self, z, params):
            return _nll(family, z, params[:, :fdim], params[:, fdim:])

    x_in, z_in = keras.Input((dim,), name="x"), keras.Input((fdim,), name="z")
    h = x_in
    for i, layer_seed in enumerate(np.random.SeedSequence(seed).generate_state(layers)):
        init = keras.initializers.GlorotUniform(seed=int(layer_seed))
        h = keras.layers.Dense(hidden, activation="relu", kernel_initializer=init, name=f"hidden{i}")(h)
    params = keras.layers.Dense(2 * fdim, kernel_initializer="zeros", name="loc_log_scale")(h)
    terms = keras.layers.Concatenate()(
        [
            keras.layers.Reshape((1,))(Marginal(name="marginal")(z_in)),
            keras.layers.Reshape((1,))(Conditional(name="conditional")(z_in, params)),
        ]
    )
    return keras.Model([x_in, z_in], terms)


def _cluster_stderr(values: np.ndarray, groups: np.ndarray) -> float:
    """Standard error of the mean of ``values`` when rows of one group are correlated (cluster-robust).

    var = G / (G - 1) * sum_g (S_g - n_g * mean)^2 / n^2 with S_g, n_g the sum and size of group g; for
    one row per group this is the usual s^2 / n. Several noise draws of one input are not independent
    evidence about the population of inputs, so they must not count as separate inputs.
    """
    _, inverse = np.unique(groups, return_inverse=True)
    sums, counts = np.bincount(inverse, weights=values), np.bincount(inverse)
    g = sums.size
    var = g / (g - 1) * float(np.sum((sums - counts * values.mean()) ** 2)) / values.size**2
    return math.sqrt(var)


def _predict(model, x: np.ndarray, z: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """The (rows, 2) cross-entropy terms of the model, evaluated in batches, float64."""
    parts = [
        np.asarray(model.predict_on_batch([x[i : i + batch_size], z[i : i + batch_size]]), dtype=np.float64)
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts)


def _fit(model, train: tuple, val: tuple, *, epochs: int, batch_size: int, patience: int, seed: int) -> int:
    """Adam on the summed cross-entropies; early stopping on the validation loss, best weights kept.

    ``train_on_batch`` runs the backend's compiled step (TensorFlow, JAX, ...): no backend-specific
    code here, and for models this small it avoids ``Model.fit``'s per-epoch overhead.
    """
    rng = np.random.default_rng(seed)
    n = len(train[0])
    dummy = np.zeros((min(n, batch_size), 1), dtype=np.float32)  # the loss ignores its target
    best, best_weights, waited, epoch = math.inf, model.get_weights(), 0, 0
    for epoch in range(1, epochs + 1):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            model.train_on_batch([train[0][batch], train[1][batch]], dummy[: len(batch)])
        loss = float(_predict(model, *val).sum(axis=1).mean())
        if loss < best - 1e-4:
            best, best_weights, waited = loss, model.get_weights(), 0
        else:
            waited += 1
            if waited >= patience:
                break
    model.set_weights(best_weights)
    return epoch


def _compiled_model(
    family: str, dim: int, fdim: int, hidden: int, layers: int, learning_rate: float, seed: int
) -> keras.Model:
    """A compiled model in the state of a new one built with ``seed``."""
    import keras
    from keras import ops

    fresh = _build_model(family, dim, fdim, hidden, layers, seed)
    model = _COMPILED.get((family, dim, fdim, hidden, layers))
    if model is None:
        fresh.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=_summed_terms)
        _COMPILED[(family, dim, fdim, hidden, layers)] = fresh
        return fresh
    model.set_weights(fresh.get_weights())
    for variable in model.optimizer.variables:  # step count, learning rate, Adam moments
        variable.assign(ops.zeros(variable.shape, dtype=variable.dtype))
    model.optimizer.learning_rate = learning_rate
    return model


def _summed_terms(_, terms):
    """Training loss per row: the sum of the two cross-entropy terms (marginal + conditional)."""
    from keras import ops

    return ops.sum(terms, axis=-1)


def _split(groups: np.ndarray, test_fraction: float, val_fraction: float, seed: int) -> tuple[np.ndarray, int]:
    """Part of each row (0 train, 1 validation, 2 test), whole groups at a time, and the test group count."""
    if not (0 < test_fraction < 1 and 0 < val_fraction < 1 and test_fraction + val_fraction < 1):
        raise ValueError("test_fraction and val_fraction must be in (0, 1) with a sum below 1")
    ids = np.unique(groups)
    ids = ids[np.random.default_rng(seed).permutation(ids.size)]
    n_test, n_val = round(test_fraction * ids.size), round(val_fraction * ids.size)
    if n_test < 1 or n_val < 1 or ids.size - n_test - n_val < 2:
        raise ValueError(f"DoE needs more groups to split into train/validation/test, got {ids.size}")
    part = np.zeros(groups.shape, dtype=np.int8)
    part[np.isin(groups, ids[:n_test])] = 2
    part[np.isin(groups, ids[n_test : n_test + n_val])] = 1
    return part, n_test


def _standardise(a: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a`` standardised with the mean and std of ``rows`` (float32), and that std."""
    std = a[rows].std(0) + 1e-12
    return ((a - a[rows].mean(0)) / std).astype(np.float32), std


def doe_mi(
    x: np.ndarray,
    z: np.ndarray,
    *,
    family: str = "gaussian",
    groups: np.ndarray | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    hidden: int = 64,
    layers: int = 2,
    epochs: int = 300,
    batch_size: int = 512,
    learning_rate: float = 5e-3,
    patience: int = 15,
    seed: int = 0,
) -> MIResult:
    """DoE estimate of I(X;Z) in nats (``mi``, ``mi_stderr``; ``h_z``, ``h_z_given_x``: the held-out bounds).

    ``groups`` (one id per row, e.g. the input index when each input has several noise draws) keeps
    all rows of a group in the same part, so the held-out inputs are unseen. A validation part of the
    training rows stops training early (best weights restored). Inputs and outputs are standardised
    per dimension for training; the Jacobian of that map is added back to both entropies.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown DoE family {family!r}; choose one of {FAMILIES}")
    x = as_samples(x, "x", min_rows=10)
    z = as_samples(z, "z", min_rows=10)
    check_same_length(x=x, z=z)
    groups = np.arange(len(x)) if groups is None else np.asarray(groups)
    if groups.shape != (len(x),):
        raise ValueError(f"groups must have one entry per row ({len(x)}), got shape {groups.shape}")
    keras = _started_keras()
    part, n_test = _split(groups, test_fraction, val_fraction, seed)
    train, val, test = part == 0, part == 1, part == 2
    xs, _ = _standardise(x, train)
    zs, z_std = _standardise(z, train)

    model = _compiled_model(family, x.shape[1], z.shape[1], hidden, layers, learning_rate, seed)
    epochs_run = _fit(
        model,
        (xs[train], zs[train]),
        (xs[val], zs[val]),
        epochs=epochs,
        batch_size=batch_size,
        patience=patience,
        seed=seed,
    )
    terms = _predict(model, xs[test], zs[test])
    log_jacobian = float(np.log(z_std).sum())
    diff = terms[:, 0] - terms[:, 1]
    return MIResult(
        method=f"doe_{family}",
        mi=float(diff.mean()),
        mi_stderr=_cluster_stderr(diff, groups[test]),
        h_z=float(terms[:, 0].mean()) + log_jacobian,
        h_z_stderr=_cluster_stderr(terms[:, 0], groups[test]),
        h_z_given_x=float(terms[:, 1].mean()) + log_jacobian,
        n_inputs=int(test.sum()),
        params={
            "family": family,
            "n_train": int(train.sum()),
            "n_validation": int(val.sum()),
            "n_test": int(test.sum()),
            "n_test_groups": int(n_test),
            "epochs_run": epochs_run,
            "hidden": hidden,
            "layers": layers,
            "learning_rate": learning_rate,
            "batch_size": batch_size,
            "seed": seed,
            "backend": keras.backend.backend(),
            "reference": "McAllester & Stratos 2020, AISTATS",
        },
    )
