"""Noise layers of the paper and the one place where a layer's noise level is read.

* Gaussian dropout is Keras' own ``keras.layers.GaussianDropout(rate=p)``: in training it multiplies by
  D ~ N(1, sigma^2) elementwise with sigma^2 = p / (1 - p); in inference it is the identity.
* Bernoulli dropout is ``keras.layers.Dropout(rate=p)`` (comparison runs only: I(X;Z) is infinite).
* Information dropout (Achille & Soatto, "Information Dropout", IEEE TPAMI 2018) is
  :class:`InformationDropout` below.
* Additive Gaussian noise is Keras' ``keras.layers.GaussianNoise(stddev=sigma)``: Z = f(x) + sigma e in
  training (Goldfeld et al., "Estimating Information Flow in Deep Neural Networks", ICML 2019).

Adilova, Geiger & Fischer (ICLR 2023) analyse the information plane of exactly these layers;
:func:`noise_spec` is what the run folder's ``config.json`` records and what the estimators read.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import keras
import numpy as np
from keras import ops

from mi_estimators.checks import check_float

ALPHA_MIN = 0.001
"""Lower bound of alpha(x) (Achille & Soatto): keeps log alpha and the KL finite."""

LOG_FLOOR = 1e-6
"""Floor applied to f before taking log f in the log-normal KL (softplus can underflow to 0 in float32)."""

PRIORS = ("lognormal", "loguniform")


@keras.saving.register_keras_serializable(package="ip_dropout")
class InformationDropout(keras.layers.Layer):
    """Information dropout: Z = f(x) * exp(alpha(x) * e), e ~ N(0, 1) (Achille & Soatto 2018).

    Called on ``[f, alpha_logits]`` (same shape): ``f`` is the non-negative activation being dropped
    (softplus for the log-normal prior, ReLU for the log-uniform prior) and ``alpha_logits`` the output
    of a parallel learned layer, so alpha(x) = 0.001 + alpha_max * sigmoid(alpha_logits). Training mode
    returns the noisy Z and adds ``kl_weight * mean_batch KL(x)`` to the model losses (the paper uses
    kl_weight = beta / N_train); inference mode returns f unchanged.

    Priors for KL(x) = KL(p(z|x) || p(z)), summed over units:

    * ``"lognormal"`` (softplus units): log z ~ N(mu, s^2) with learned mu and log s, one pair per
      channel (last axis), initialised to mu = 0, s = 1. Learning the prior only tightens the bound
      KL >= I(X;Z). Closed form between log-normals:
      KL = log(s / alpha) + (alpha^2 + (log f - mu)^2) / (2 s^2) - 1/2.
    * ``"loguniform"`` (ReLU units): the improper prior p(log z) = const gives KL = -log alpha + const;
      the constant is fixed at log(alpha_max + 0.001) so that KL >= 0, zero at maximal noise.
    """

    def __init__(
        self,
        alpha_max: float = 0.7,
        beta: float = 3.0,
        *,
        kl_weight: float,
        prior: str = "lognormal",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
        self.alpha_max = check_float(alpha_max, "alpha_max")
        self.beta = check_float(beta, "beta", minimum=0.0, inclusive=True)
        self.kl_weight = check_float(kl_weight, "kl_weight", minimum=0.0, inclusive=True)
        self.prior = prior
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape: Any) -> None:
        if not (
            isinstance(input_shape, (list, tuple))
            and len(input_shape) == 2
            and all(isinstance(s, (list, tuple)) for s in input_shape)
        ):
            raise ValueError("InformationDropout is called on [f, alpha_logits], two tensors of the same shape")
        f_shape, logit_shape = (tuple(s) for s in input_shape)
        if f_shape[1:] != logit_shape[1:]:
            raise ValueError(f"f and alpha_logits must have the same shape, got {f_shape} and {logit_shape}")
        if self.prior == "lognormal":
            channels = f_shape[-1]
            self.prior_mean = self.add_weight(name="prior_mean", shape=(channels,), initializer="zeros")
            self.prior_log_std = self.add_weight(name="prior_log_std", shape=(channels,), initializer="zeros")

    def alpha(self, alpha_logits: Any) -> Any:
        """alpha(x) = 0.001 + alpha_max * sigmoid(alpha_logits): the std of the log-noise."""
        return ALPHA_MIN + self.alpha_max * ops.sigmoid(alpha_logits)

    def kl_divergence(self, f: Any, alpha: Any) -> Any:
        """Per-sample KL(p(z|x) || prior), summed over all non-batch axes; shape (batch,)."""
        f = ops.convert_to_tensor(f, dtype=self.compute_dtype)
        alpha = ops.convert_to_tensor(alpha, dtype=self.compute_dtype)
        if self.prior == "lognormal":
            if not self.built:
                raise ValueError("the log-normal prior is learned: call the layer once before kl_divergence")
            log_std = ops.cast(self.prior_log_std, self.compute_dtype)
            mean = ops.cast(self.prior_mean, self.compute_dtype)
            log_f = ops.log(ops.maximum(f, LOG_FLOOR))
            per_unit = (
                log_std
                - ops.log(alpha)
                + (ops.square(alpha) + ops.square(log_f - mean)) / (2.0 * ops.exp(2.0 * log_std))
                - 0.5
            )
        else:
            per_unit = math.log(self.alpha_max + ALPHA_MIN) - ops.log(alpha)
        axes = tuple(range(1, len(per_unit.shape)))
        return ops.sum(per_unit, axis=axes) if axes else per_unit

    def call(self, inputs: Any, training: bool = False) -> Any:
        f, alpha_logits = inputs
        if not training:
            return f
        alpha = self.alpha(alpha_logits)
        self.add_loss(self.kl_weight * ops.mean(self.kl_divergence(f, alpha)))
        e = keras.random.normal(ops.shape(f), dtype=self.compute_dtype, seed=self.seed_generator)
        return f * ops.exp(alpha * e)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "alpha_max": self.alpha_max,
            "beta": self.beta,
            "kl_weight": self.kl_weight,
            "prior": self.prior,
            "seed": self.seed,
        }


def noise_spec(layer: keras.layers.Layer) -> dict | None:
    """The noise a layer applies, as recorded in ``config.json``; None for a layer without noise.

    Keys: ``dropout`` (the noise kind: "gaussian", "information", "bernoulli" or "additive"), ``p`` (the
    dropout rate; None for information dropout and additive noise), ``noise_std`` (the standard deviation
    of the Gaussian noise: sqrt(p / (1 - p)) of the multiplicative noise of Gaussian dropout, sigma of
    additive noise; None otherwise) and, for information dropout, ``alpha_max``, ``beta``, ``kl_weight``
    and ``prior``.
    """
    if isinstance(layer, InformationDropout):
        return {
            "dropout": "information",
            "p": None,
            "noise_std": None,
            "alpha_max": layer.alpha_max,
            "beta": layer.beta,
            "kl_weight": layer.kl_weight,
            "prior": layer.prior,
        }
    if isinstance(layer, keras.layers.GaussianDropout):
        p = float(layer.rate)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"GaussianDropout {layer.name!r} has rate {p}; its noise std sqrt(p/(1-p)) needs p < 1")
        return {"dropout": "gaussian", "p": p, "noise_std": math.sqrt(p / (1.0 - p))}
    if isinstance(layer, keras.layers.Dropout):
        return {"dropout": "bernoulli", "p": float(layer.rate), "noise_std": None}
    if isinstance(layer, keras.layers.GaussianNoise):
        return {"dropout": "additive", "p": None, "noise_std": check_float(layer.stddev, f"{layer.name} stddev")}
    return None


def upstream_noise(model: keras.Model, layer: keras.layers.Layer) -> list[str]:
    """The names of the noise layers (:func:`noise_spec`) between ``model``'s inputs and ``layer``'s input.

    Where there is one, the input f of ``layer`` is not a function of x: the mixture estimators, which
    take Z | x to be ``layer``'s noise around a fixed f(x), would describe another channel.
    """
    upstream = keras.Model(model.inputs, layer.input)
    return [other.name for other in dropout_layers(upstream) if other is not layer]


def dropout_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """All noise layers of ``model`` (those whose :func:`noise_spec` is not None, searched through nested
    models), in model order."""
    found = []
    for layer in getattr(model, "layers", []):
        if noise_spec(layer) is not None:
            found.append(layer)
        elif getattr(layer, "layers", None):
            found.extend(dropout_layers(layer))
    return found


# -- random streams ---------------------------------------------------------------------------------
# Keras draws every random number of a layer (dropout noise, augmentation) from the layer's
# keras.random.SeedGenerator, whose whole state is one (2,) integer variable. Setting those states
# from a key makes a stream depend on the key only: what ran before (an interrupted run, another
# callback's noisy passes) no longer matters.

TRAINING_NOISE, CALLBACK_NOISE, SHUFFLE = 0, 1, 2
"""Stream numbers: a run's random keys are (seed, stream, epoch), one stream per consumer (the training
steps' noise and augmentation, the callback's noisy passes, the order of the training inputs)."""


def seed_states(model: keras.layers.Layer) -> list[keras.Variable]:
    """The state variables of every ``keras.random.SeedGenerator`` of ``model``, in model order:
    ``model.variables`` without ``model.weights`` (Keras: "all layer state, including random seeds")."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def reseed(model: keras.layers.Layer, key: Sequence[int]) -> None:
    """Set the i-th seed state of ``model`` to two integers drawn with
    ``numpy.random.default_rng([*key, i])``: the random streams then depend on ``key`` alone."""
    for i, state in enumerate(seed_states(model)):
        value = np.random.default_rng([*key, i]).integers(0, 2**30, size=2)
        state.assign(ops.convert_to_tensor(value, dtype=state.dtype))


@contextlib.contextmanager
def reseeded(model: keras.layers.Layer, key: Sequence[int]) -> Iterator[None]:
    """:func:`reseed` for the duration of the block, then put the previous states back, so that the
    random draws inside the block leave the model's own streams where they were."""
    states = seed_states(model)
    saved = [ops.convert_to_numpy(state.value) for state in states]
    reseed(model, key)
    try:
        yield
    finally:
        for state, value in zip(states, saved):
            state.assign(value)
