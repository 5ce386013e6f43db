"""I(X;Z) and I(Y;Z) of a dropout layer with continuous noise, by the exact mixture density of Z.

Adilova, Geiger & Fischer, "Information Plane Analysis for Dropout Neural Networks", ICLR 2023.
With X uniform over the N analysed inputs and f(x) the code of input x (the noise-free input of the
dropout layer):

* Gaussian dropout, Z = f(x) (1 + sigma eps): Z | x ~ N(f(x), diag sigma^2 f(x)^2), so
  h(Z|X) = (1/N) sum_k sum_i log(sqrt(2 pi e) sigma |f(x_k)_i|) in closed form, and p(z) is the
  equal-weight mixture of the N conditionals.
* Information dropout (Achille & Soatto 2018), Z = f(x) exp(alpha(x) eps): log Z | x ~
  N(log f(x), diag alpha(x)^2) and log is invertible, so I(X;Z) = I(X; log Z) is the same estimate
  in log space (entropies reported for log Z).

Monte Carlo: ``draws`` per input (:mod:`mi_estimators.noise`: the same draws whatever the subset or
memory budget), every input used (X is enumerated, not sampled). The per-draw term of I(X;Z) is
t = -log p(z) - h_k, h_k the entropy of component k, whose mean over the draws of input k is
a_k = KL(p(z|x_k) || p(z)) <= log N, combined with the control variate c = (d - |eps|^2)/2 whose weight
is fitted within inputs (:mod:`mi_estimators.control_variate`). I(Y;Z) = E[log p(z|y) - log p(z)],
p(z|y) the class-y sub-mixture, with the same control variate.

Errors: ``*_stderr`` is the Monte Carlo error of I_N (X uniform over exactly these N inputs),
``*_sampling_stderr`` the spread of I_N between draws of N inputs from the data (delta method); with
one draw per input a fixed random 1/16 of the inputs (at least 100) gets a second draw
(``params["pilot_inputs"]``).

The bracket: with L_kj = log p(z_k | x_j), the estimate above is mean_k [L_kk - log((1/N) sum_j
e^{L_kj})] (InfoNCE with the true conditional; at most I(X;Z) in expectation, never above log N), and
``mi_xz_upper`` = mean_k [L_kk - log((1/(N-1)) sum_{j != k} e^{L_kj})] (leave-one-out; at least I(X;Z)
in expectation, not capped by log N; Poole et al., ICML 2019). The kernel sums the other components
without the own one, so one pass gives both sides.

Convergence in N: the estimate is repeated on nested random subsets of N/16 and N/4 inputs (the same
subsets for the same N and seed; about 40% more time) and ``saturation`` = (I_N - I_{N/4}) / log 4,
the slope dI/dlog N (McAllester & Stratos, AISTATS 2020: no distribution-free estimate from N inputs
exceeds O(log N)). How to read the two errors, the bracket and the saturation: ``docs/estimators.md``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

import numpy as np

from mi_estimators.checks import (
    LOG_SQRT_2PI,
    InputError,
    as_labels,
    as_samples,
    check_bool,
    check_float,
    check_int,
    gaussian_dropout_std,
)
from mi_estimators.control_variate import MCMean, control_variate_mean
from mi_estimators.discrete import discrete_entropy
from mi_estimators.mixture import check_options, prepare_mixture
from mi_estimators.mixture.api import PRUNE
from mi_estimators.noise import pilot_uniforms, standard_normal_draws
from mi_estimators.results import MIResult

NESTED_DIVISORS = (16, 4)
"""The convergence-in-N subsets hold N/16 and N/4 of the inputs."""
MIN_NESTED = 8
PILOT_FRACTION = 1.0 / 16.0
PILOT_MIN = 100
TINY_CODE = 1e-3
"""|f| below this counts as a tiny code: multiplicative noise on it makes h(Z|X) very negative."""
_NESTED_STREAM = 7919
_BERNOULLI = (
    "Bernoulli dropout leaves I(X;Z) infinite: the all-ones mask has positive probability, so "
    "Z = f(x) exactly with positive probability and X is recoverable from Z (Adilova, Geiger & "
    "Fischer 2023). Use Gaussian or information dropout to obtain a finite information plane."
)


@dataclass(frozen=True)
class MixtureOptions:
    """How a mixture estimate is computed (validated on construction)."""

    draws: int = 1
    seed: int = 0
    max_components: int | None = None
    nested: bool = True
    backend: str = "numpy"
    dtype: str = "float32"
    max_memory_mb: float = 256
    progress: bool = False
    prune: str = "auto"
    """The kernel's pruned path: "auto" (where a pilot says it pays), "never" or "always"."""

    def __post_init__(self) -> None:
        check_int(self.draws, "draws")
        check_int(self.seed, "seed", minimum=0)
        if self.max_components is not None:
            # one component has no leave-one-out density: the upper estimate would be undefined
            check_int(self.max_components, "max_components", minimum=2)
        check_options(self.backend, self.dtype, self.max_memory_mb)
        check_bool(self.nested, "nested")
        check_bool(self.progress, "progress")
        if self.prune not in PRUNE:
            raise InputError(f"prune must be one of {', '.join(PRUNE)}, got {self.prune!r}")

    @classmethod
    def of(cls, draws: int, seed: int, options: dict[str, Any]) -> "MixtureOptions":
        """The options of an estimator call: an unknown keyword is an :class:`InputError` that names the known ones."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise InputError(
                f"unknown option(s) {', '.join(unknown)}; the mixture estimators take {', '.join(known)} and clip_min"
            )
        return cls(draws, seed, **options)


def gaussian_dropout_mi(
    f: np.ndarray,
    noise_std: float | None = None,
    labels: np.ndarray | None = None,
    draws: int = 1,
    seed: int = 0,
    *,
    p: float | None = None,
    clip_min: float | None = None,
    **options: Any,
) -> MIResult:
    """Mixture estimate of I(X;Z) (and I(Y;Z) with ``labels``) for Gaussian dropout, nats.

    ``f`` (N, d) are the codes, the noise-free inputs of the dropout layer. The noise is given by exactly
    one of ``noise_std``, sigma, the standard deviation of the multiplicative noise, and ``p``, the dropout
    rate (sigma = sqrt(p / (1 - p))); both are recorded in ``params``. |f| below ``clip_min`` is raised to
    ``clip_min`` (sign kept, zeros become +clip_min); without it an exactly-zero entry is an error,
    because the conditional density of Z is degenerate there. ``options`` are the fields of
    :class:`MixtureOptions` (``max_components`` uses a random subset of components: biased, reported).
    """
    sigma, rate = gaussian_dropout_std(noise_std, p)
    f, n_clipped = check_codes(f, clip_min, allow_negative=True)
    params = {
        "noise_std": sigma,
        "p": rate,
        "clip_min": clip_min,
        "n_clipped": n_clipped,
        "tiny_code_fraction": float(np.mean(np.abs(f) < TINY_CODE)),
    }
    return _mixture_mi(
        "gaussian_dropout_mixture", f, sigma * np.abs(f), labels, MixtureOptions.of(draws, seed, options), params
    )


def additive_noise_mi(
    f: np.ndarray,
    noise_std: float,
    labels: np.ndarray | None = None,
    draws: int = 1,
    seed: int = 0,
    **options: Any,
) -> MIResult:
    """Mixture estimate of I(X;Z) (and I(Y;Z)) for additive Gaussian noise Z = f(x) + sigma eps, nats.

    The setting of Goldfeld et al., "Estimating Information Flow in Deep Neural Networks" (ICML 2019),
    and of Keras' ``GaussianNoise`` layer: Z | x ~ N(f(x), sigma^2 I), so h(Z|X) = d log(sqrt(2 pi e) sigma)
    and p(z) is the equal-weight mixture of the N conditionals, estimated as for Gaussian dropout with
    every component's standard deviation sigma (both sides of the bracket, both errors, the saturation).
    ``f`` (N, d) may take any sign, zeros included. Other arguments as for :func:`gaussian_dropout_mi`.
    """
    sigma = check_float(noise_std, "noise_std")
    f = as_samples(f, "f", min_rows=2)
    return _mixture_mi(
        "additive_noise_mixture",
        f,
        np.full_like(f, sigma),
        labels,
        MixtureOptions.of(draws, seed, options),
        {"noise_std": sigma},
    )


def information_dropout_mi(
    f: np.ndarray,
    alphas: np.ndarray,
    labels: np.ndarray | None = None,
    draws: int = 1,
    seed: int = 0,
    *,
    clip_min: float | None = None,
    **options: Any,
) -> MIResult:
    """Mixture estimate of I(X;Z) (and I(Y;Z)) for information dropout, in log space, nats.

    Components N(log f(x_k), diag alpha(x_k)^2); ``f`` must be positive (softplus units) and
    ``alphas`` positive, both (N, d). ``h_z``, ``h_z_given_x`` are entropies of log Z. Other
    arguments as for :func:`gaussian_dropout_mi`.
    """
    f, n_clipped = check_codes(f, clip_min, allow_negative=False)
    alpha = log_noise_stds(alphas, f.shape)
    params = {
        "space": "log",
        "clip_min": clip_min,
        "n_clipped": n_clipped,
        "tiny_code_fraction": float(np.mean(f < TINY_CODE)),
    }
    return _mixture_mi(
        "information_dropout_mixture", np.log(f), alpha, labels, MixtureOptions.of(draws, seed, options), params
    )


def estimate_layer_mi(
    layer: Mapping[str, Any],
    f: np.ndarray,
    *,
    alphas: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    **kwargs: Any,
) -> MIResult:
    """Dispatch on a ``config.json`` layer entry: ``layer["dropout"]`` and ``layer["noise_std"]``.

    Gaussian dropout uses ``layer["noise_std"]`` (the run folder's single source of the noise
    level), information dropout needs ``alphas``; Bernoulli dropout raises ``InputError`` (its
    I(X;Z) is infinite). ``kwargs`` go to the estimator.
    """
    if not isinstance(layer, Mapping):
        raise InputError(
            f"layer must be a config.json layer entry (a dict with 'dropout' and 'noise_std'), "
            f"got {type(layer).__name__}"
        )
    kind, name = layer.get("dropout"), layer.get("name")
    if kind in ("gaussian", "additive"):
        if alphas is not None:
            raise InputError(f"layer {name!r} uses {kind} noise; alphas belong to information dropout")
        if layer.get("noise_std") is None:
            raise InputError(f"layer {name!r} ({kind} noise) has no noise_std in its config entry")
        if kind == "gaussian":
            result = gaussian_dropout_mi(f, layer["noise_std"], labels, **kwargs)
        else:
            kwargs.pop("clip_min", None)  # additive noise has a density at f = 0
            result = additive_noise_mi(f, layer["noise_std"], labels, **kwargs)
    elif kind == "information":
        if alphas is None:
            raise InputError(f"layer {name!r} uses information dropout: pass its saved alphas")
        result = information_dropout_mi(f, alphas, labels, **kwargs)
    elif kind == "bernoulli":
        raise InputError(f"layer {name!r}: {_BERNOULLI}")
    else:
        raise InputError(
            f"layer {name!r}: unknown noise kind {kind!r} (expected gaussian, information, bernoulli or additive)"
        )
    result.params.update({"layer": name, "dropout": kind, "p": layer.get("p")})
    return result


def log_noise_stds(alphas: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Validated information-dropout alphas (the standard deviations of the log-noise): finite, positive
    and, given ``shape``, of the shape of f."""
    alpha = as_samples(alphas, "alphas", min_rows=1)
    if shape is not None and alpha.shape != shape:
        raise InputError(f"alphas must have the shape of f {shape}, got {alpha.shape}")
    if (alpha <= 0).any():
        raise InputError(
            f"alphas must be positive (the standard deviation of the log-noise); "
            f"{int((alpha <= 0).sum())} entries are <= 0"
        )
    return alpha


def conditional_entropy(stds: np.ndarray) -> float:
    """h(Z|X) = (1/N) sum_k sum_i log(sqrt(2 pi e) s_ki) for Gaussian conditionals of std s (N, d)."""
    return float(np.log(stds).sum(axis=1).mean() + stds.shape[1] * (LOG_SQRT_2PI + 0.5))


def check_codes(f: np.ndarray, clip_min: float | None, *, allow_negative: bool) -> tuple[np.ndarray, int]:
    """The codes f (N, d), validated, with |f| raised to ``clip_min`` where below it, and how many entries
    were raised (InputError for exactly-zero entries without ``clip_min``, and for negative ones unless
    ``allow_negative``)."""
    f = as_samples(f, "f", min_rows=2)
    if not allow_negative and (f < 0).any():
        raise InputError(
            f"f must be positive for information dropout (log-normal noise); {int((f < 0).sum())} entries are negative"
        )
    if clip_min is None:
        zero = f == 0
        if zero.any():
            rows = np.unique(np.nonzero(zero)[0])
            raise InputError(
                f"f contains {int(zero.sum())} exactly-zero entries in {rows.size} inputs (first at "
                f"row {rows[0]}); the conditional density of Z is degenerate there (I(X;Z) is infinite). Use "
                "softplus instead of ReLU before the dropout layer, or pass clip_min (e.g. 1e-6) to raise "
                "|f| below it to clip_min"
            )
        return f, 0
    clip = check_float(clip_min, "clip_min")
    low = np.abs(f) < clip
    if low.any():
        f = f.copy()
        f[low] = np.where(f[low] < 0, -clip, clip)
    return f, int(low.sum())


# -- one estimate: X uniform over a set of inputs -----------------------------------------------------


@dataclass
class _KernelStats:
    """What the mixture kernel reports over the calls of one estimate: points redone in float64 products,
    the largest rounding bound, pairs computed against all pairs, and whether the pruned path ran."""

    float64_rows: int = 0
    max_error_bound: float = 0.0
    pairs_computed: int = 0
    pairs_total: int = 0
    pruned_calls: int = 0
    calls: int = 0

    def add(self, info: Mapping[str, Any]) -> None:
        self.float64_rows += int(info["float64_rows"])
        self.max_error_bound = max(self.max_error_bound, float(info["max_error_bound"]))
        self.pairs_computed += int(info["pairs_computed"])
        self.pairs_total += int(info["pairs_total"])
        self.pruned_calls += info.get("path") == "pruned"
        self.calls += 1

    @property
    def path(self) -> str:
        """ "pruned", "dense", or "mixed" where blocks of points took different paths."""
        return "dense" if not self.pruned_calls else "pruned" if self.pruned_calls == self.calls else "mixed"

    @property
    def pairs_fraction(self) -> float:
        return self.pairs_computed / self.pairs_total if self.pairs_total else 1.0


@dataclass(frozen=True)
class _Estimate:
    """I_n for X uniform over n inputs, with the diagnostics of its Monte Carlo (``points``: noisy points
    evaluated, the draws of all n inputs)."""

    n: int
    xz: MCMean
    xz_upper: MCMean
    zy: MCMean | None
    unpaired: MCMean
    paired: MCMean
    h_z_given_x: float
    h_y: float | None
    n_components: int
    points: int
    kernel: _KernelStats


@dataclass
class _Terms:
    """Monte Carlo terms per noisy point: input (local index), t = -log p(z) - h_k, its leave-one-out form
    -log p_{-k}(z) - h_k, control variate c, and log p(z|y_k) - log p(z)."""

    inputs: np.ndarray
    xz: np.ndarray
    xz_upper: np.ndarray
    cv: np.ndarray
    zy: np.ndarray | None
    kernel: _KernelStats


def _estimate(
    means: np.ndarray, stds: np.ndarray, y: np.ndarray | None, rows: np.ndarray, opts: MixtureOptions
) -> _Estimate:
    """I(X;Z) (and I(Y;Z)) for X uniform over the inputs ``rows`` (indices into means/stds/y)."""
    mu, s = means[rows], stds[rows]
    classes = None if y is None else np.unique(y[rows], return_inverse=True)[1].ravel()
    components = _component_rows(len(rows), opts)
    if classes is not None and np.unique(classes[components]).size < classes.max() + 1:
        raise InputError("the component subsample misses a class; raise max_components")
    terms = _evaluate(mu, s, classes, rows, components, _draw_counts(rows, opts), opts)
    n = len(rows)
    xz = control_variate_mean(terms.xz, terms.cv, terms.inputs, n)
    zy = None if terms.zy is None else control_variate_mean(terms.zy, terms.cv, terms.inputs, n)
    upper = control_variate_mean(terms.xz_upper, terms.cv, terms.inputs, n)
    return _Estimate(
        n=n,
        xz=xz,
        xz_upper=upper,
        zy=zy,
        unpaired=control_variate_mean(terms.xz, terms.cv, terms.inputs, n, 0.0),
        paired=control_variate_mean(terms.xz, terms.cv, terms.inputs, n, 1.0),
        h_z_given_x=conditional_entropy(s),
        h_y=None if classes is None else discrete_entropy(classes),
        n_components=len(components),
        points=len(terms.inputs),
        kernel=terms.kernel,
    )


def _component_rows(n: int, opts: MixtureOptions) -> np.ndarray:
    if opts.max_components is None or opts.max_components >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng([opts.seed, 1]).choice(n, size=opts.max_components, replace=False))


def _draw_counts(rows: np.ndarray, opts: MixtureOptions) -> np.ndarray:
    """Draws per input: ``draws``, plus one for the pilot inputs when that is 1 (module docstring).

    Pilot inputs are those whose fixed uniform number lies below max(1/16, 100/n): a subset's pilot
    inputs include the full set's that it contains, so nested estimates share their draws."""
    counts = np.full(len(rows), opts.draws)
    if opts.draws == 1:
        threshold = max(PILOT_FRACTION, PILOT_MIN / len(rows))
        counts[pilot_uniforms(opts.seed, rows) < threshold] = 2
    return counts


def _evaluate(
    mu: np.ndarray,
    s: np.ndarray,
    y: np.ndarray | None,
    rows: np.ndarray,
    components: np.ndarray,
    counts: np.ndarray,
    opts: MixtureOptions,
) -> _Terms:
    """Draw the noisy points in blocks of inputs and evaluate the mixture at them (bounded memory).

    The kernel sums every component but the point's own (``leave_out``), which gives the
    leave-one-out density of the upper estimate; the own component's exact log-density is then added
    in float64 for the mixture (lower) estimate, and, with labels, for log p(z | own class)
    (``Mixture.log_density_own_group``). Adding a positive exact term never loses accuracy, where
    subtracting it from the full sum would.
    """
    n, d = mu.shape
    mix = prepare_mixture(mu[components], s[components], groups=None if y is None else y[components])
    log_norm = -np.log(s).sum(axis=1) - d * LOG_SQRT_2PI  # log-normaliser of component k
    component_of = np.full(n, -1)
    component_of[components] = np.arange(len(components))
    class_size = np.bincount(y[components]) if y is not None else np.zeros(0, dtype=np.int64)
    kernel_options: dict[str, Any] = {
        "backend": opts.backend,
        "dtype": opts.dtype,
        "max_memory_mb": 0.75 * opts.max_memory_mb,
        "progress": opts.progress,
        "prune": opts.prune,
    }
    # A quarter of the memory budget holds the noise and points of a block of inputs, the rest the kernel.
    # Blocks are counted in draws, not inputs x the most draws: fewer kernel calls, each of which checks
    # whether pruning pays.
    draws_per_block = max(int(counts.max()), int(opts.max_memory_mb * 2**20 / 4 // (8 * (3 * d + 8))))
    ends = np.cumsum(counts)
    parts = []
    kernel = _KernelStats()
    k0 = 0
    while k0 < n:
        k1 = int(np.searchsorted(ends, ends[k0] - counts[k0] + draws_per_block, side="right"))
        inputs = np.repeat(np.arange(k0, k1), counts[k0:k1])
        k0 = k1
        draw_index = np.arange(len(inputs)) - np.searchsorted(inputs, inputs)  # 0, 1, ... within each input
        eps = standard_normal_draws(opts.seed, rows[inputs], draw_index, d)
        noise_sq = np.einsum("md,md->m", eps, eps)
        own = component_of[inputs]
        log_own = log_norm[inputs] - 0.5 * noise_sq  # exact log p(z | x_k)
        z = mu[inputs] + s[inputs] * eps
        if y is None:
            leave_one_out, info = mix.log_density(z, leave_out=own, **kernel_options)
        else:  # columns: the whole mixture, the point's own class
            leave_one_out, info = mix.log_density_own_group(z, y[inputs], leave_out=own, **kernel_options)
        log_p_others = leave_one_out[:, 0]
        log_p = _with_own(log_p_others, log_own, own >= 0, len(components))
        zy = None if y is None else _with_own(leave_one_out[:, 1], log_own, own >= 0, class_size[y[inputs]]) - log_p
        kernel.add(info)
        entropy = 0.5 * d - log_norm[inputs]  # h_k
        parts.append((inputs, -log_p - entropy, -log_p_others - entropy, 0.5 * (d - noise_sq), zy))
    inputs, xz, xz_upper, cv = (np.concatenate([part[i] for part in parts]) for i in range(4))
    zy = None if y is None else np.concatenate([part[4] for part in parts])
    return _Terms(inputs, xz, xz_upper, cv, zy, kernel)


def _with_own(log_p_others: np.ndarray, log_own: np.ndarray, left_out: np.ndarray, n: int | np.ndarray) -> np.ndarray:
    """log (1/n) [(n - 1) e^log_p_others + e^log_own] where the own component was left out (else
    log_p_others): the mixture density from its leave-one-out form."""
    with np.errstate(divide="ignore"):
        others = log_p_others + np.log(np.maximum(n - 1, 0))
    return np.where(left_out, np.logaddexp(others, log_own) - np.log(n), log_p_others)


# -- the full estimate with its convergence-in-N subsets --------------------------------------------


def _mixture_mi(
    method: str,
    means: np.ndarray,
    stds: np.ndarray,
    labels: np.ndarray | None,
    opts: MixtureOptions,
    params: dict[str, Any],
) -> MIResult:
    """The estimate for the Gaussian components N(means[k], diag stds[k]^2), one per input (means: the
    codes f, or log f for information dropout), with its nested subsets and plausibility warnings."""
    n = len(means)
    y = None if labels is None else np.unique(as_labels(labels, n), return_inverse=True)[1].ravel()
    full = _estimate(means, stds, y, np.arange(n), opts)
    result = _result(method, full, params, opts)
    if opts.nested:
        _add_convergence(result, full, means, stds, y, opts)
    for message in implausible(result):
        result.warnings.append(message)
        warnings.warn(message, ImplausibleEstimateWarning, stacklevel=3)
    return result


PLAUSIBLE_ERRORS = 4.0
"""An estimate further than this many total standard errors outside what it can be is flagged."""


def implausible(result: MIResult) -> list[str]:
    """Why a mixture result cannot be trusted as it stands: the lower I(X;Z) outside [0, log N] or the upper
    one below 0, each by more than :data:`PLAUSIBLE_ERRORS` total errors (Monte Carlo and input sampling
    in quadrature, plus the kernel's rounding bound; 0 <= I_N <= log N for X uniform over N inputs, Adilova
    et al. 2023), or components drawn from a random subsample (``max_components``): a biased estimate, not
    the mixture estimate of I_N."""
    found = []
    n, log_n = result.n_inputs or 0, result.log_n or 0.0
    k = result.params.get("n_components", n)
    if k < n:
        found.append(
            f"the mixture used a random subsample of {k} of the {n} inputs as components (max_components): "
            "a biased estimate of I(X;Z), not the mixture estimate; use all components to trust it"
        )
    for name, value, low, high in (
        ("I(X;Z)", result.mi_xz, 0.0, log_n),
        ("the upper I(X;Z)", result.mi_xz_upper, 0.0, math.inf),
    ):
        stderr = result.mi_xz_stderr if name == "I(X;Z)" else result.mi_xz_upper_stderr
        sampling = result.mi_xz_sampling_stderr if name == "I(X;Z)" else result.mi_xz_upper_sampling_stderr
        # the kernel's rounding bound joins the statistical errors: identical codes give 0 only to within it
        rounding = result.params.get("kernel_max_error_bound") or 0.0
        tolerance = PLAUSIBLE_ERRORS * math.hypot(stderr or 0.0, sampling or 0.0) + rounding + 1e-9
        if value is None or not math.isfinite(value):
            found.append(f"{name} is not a finite number: the estimate failed")
        elif not low - tolerance <= value <= high + tolerance:
            found.append(
                f"{name} = {value:.4g} nats lies outside [{low:g}, {high:.4g}] (log N = {log_n:.4g}) by more than "
                f"{PLAUSIBLE_ERRORS:g} errors: it cannot be trusted"
            )
    return found


class ImplausibleEstimateWarning(UserWarning):
    """A mixture estimate outside what it can be, or from a component subsample (:func:`implausible`); the
    message is also in the result's ``warnings``."""


def _result(method: str, estimate: _Estimate, params: dict[str, Any], opts: MixtureOptions) -> MIResult:
    h_z = estimate.xz.value + estimate.h_z_given_x
    params.update(
        {
            "draws": opts.draws,
            "seed": opts.seed,
            "points": estimate.points,
            "pilot_inputs": estimate.points - estimate.n * opts.draws,
            "n_components": estimate.n_components,
            "component_subsample": estimate.n_components < estimate.n,
            "backend": opts.backend,
            "dtype": opts.dtype,
            "control_variate_beta": estimate.xz.beta,
            "mi_xz_unpaired": estimate.unpaired.value,
            "mi_xz_unpaired_stderr": estimate.unpaired.stderr,
            "mi_xz_paired": estimate.paired.value,
            "mi_xz_paired_stderr": estimate.paired.stderr,
            "kernel_float64_points": estimate.kernel.float64_rows,
            "kernel_max_error_bound": estimate.kernel.max_error_bound,
            "kernel_path": estimate.kernel.path,
            "kernel_pairs_fraction": estimate.kernel.pairs_fraction,
        }
    )
    result = MIResult(
        method=method,
        mi_xz=estimate.xz.value,
        mi_xz_stderr=estimate.xz.stderr,
        mi_xz_sampling_stderr=estimate.xz.sampling_stderr,
        mi_xz_upper=estimate.xz_upper.value,
        mi_xz_upper_stderr=estimate.xz_upper.stderr,
        mi_xz_upper_sampling_stderr=estimate.xz_upper.sampling_stderr,
        h_z=h_z,
        h_z_stderr=estimate.xz.stderr,
        h_z_given_x=estimate.h_z_given_x,
        log_n=math.log(estimate.n),
        n_inputs=estimate.n,
        params=params,
    )
    if estimate.zy is not None:
        result.mi_zy, result.mi_zy_stderr = estimate.zy.value, estimate.zy.stderr
        result.mi_zy_sampling_stderr = estimate.zy.sampling_stderr
        result.h_z_given_y, result.h_y = h_z - estimate.zy.value, estimate.h_y
        params["control_variate_beta_zy"] = estimate.zy.beta
    return result


def _add_convergence(
    result: MIResult, full: _Estimate, means: np.ndarray, stds: np.ndarray, y: np.ndarray | None, opts: MixtureOptions
) -> None:
    """Estimates on nested subsets of N/16 and N/4 inputs; ``saturation`` = dI/dlog N from N/4 to N."""
    n = len(means)
    order = np.random.default_rng([opts.seed, _NESTED_STREAM]).permutation(n)
    quiet = replace(opts, progress=False)
    subsets = [
        _estimate(means, stds, y, np.sort(order[: n // k]), quiet) for k in NESTED_DIVISORS if n // k >= MIN_NESTED
    ] + [full]
    result.params["convergence"] = [
        {
            "n": subset.n,
            "log_n": math.log(subset.n),
            "mi_xz": subset.xz.value,
            "mi_xz_stderr": subset.xz.stderr,
            "mi_xz_upper": subset.xz_upper.value,
            "mi_xz_upper_stderr": subset.xz_upper.stderr,
            "mi_xz_upper_sampling_stderr": subset.xz_upper.sampling_stderr,
            "mi_zy": None if subset.zy is None else subset.zy.value,
            "mi_zy_stderr": None if subset.zy is None else subset.zy.stderr,
        }
        for subset in subsets
    ]
    if len(subsets) >= 2:
        low, step = subsets[-2], math.log(n / subsets[-2].n)
        result.saturation = (full.xz.value - low.xz.value) / step
        result.params["saturation_stderr"] = math.hypot(full.xz.stderr, low.xz.stderr) / step
