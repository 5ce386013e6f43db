"""I(X;Z) and I(Y;Z) of a dropout layer with continuous noise, by the exact mixture density of Z.

Adilova, Geiger & Fischer, "Information Plane Analysis for Dropout Neural Networks", ICLR 2023.
With X uniform over the N analysed inputs and f(x) the noise-free input of the
dropout layer:

* Gaussian dropout, Z = f(x) (1 + sigma eps): Z | x ~ N(f(x), diag sigma^2 f(x)^2), so
  h(Z|X) = (1/N) sum_k sum_i log(sqrt(2 pi e) sigma |f(x_k)_i|) in closed form, and p(z) is the
  equal-weight mixture of the N conditionals.
* Information dropout (Achille & Soatto 2018), Z = f(x) exp(alpha(x) eps): log Z | x ~
  N(log f(x), diag alpha(x)^2) and log is invertible, so I(X;Z) = I(X; log Z) is the same estimate
  in log space (entropies reported for log Z).

Monte Carlo part: ``noise_samples`` draws z_kr = mu_k + s_k eps_kr per input, every input used (X
is enumerated, not sampled). Two unbiased forms of I(X;Z) exist: the unpaired one, mean(-log p(z)) -
h(Z|X) with the closed-form h(Z|X), and the paired one, mean(log p(z|x) - log p(z)) (the same
expectation; each term <= log N). They differ by V = log p(z|x_k) + h_k = (d - ||eps||^2) / 2, h_k
the entropy of component k, whose mean is exactly 0. Measured (2000 inputs, 5 draws; the comparison is
test_control_variate_is_never_worse_than_either_form), neither wins everywhere: on the 1-D toy problem
(v = 0.1) the per-sample variance is 0.19 unpaired against 0.65 paired, on separated softplus
representations at d = 32 it is 16 unpaired against 0 paired. So V is used
as a regression control variate: the estimate is mean(-log p(z) + beta V) - h(Z|X) with beta =
-Cov(-log p(z), V) / Var(V) fitted within inputs, never worse than either form (beta = 0 is unpaired,
beta = 1 paired; the fit adds a bias of order 1/(N R)). Both plain forms are kept in ``params``.
I(Y;Z) = E[log p(z|y) - log p(z)] with p(z|y) the class-y sub-mixture, each term
<= -log p(y) so the plain mean is <= H(Y); the same control variate is applied. Standard errors are those of the
stratified mean over inputs: the within-input variance when ``noise_samples`` >= 2, the (larger) total
variance when it is 1.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import logsumexp

from mi_estimators.checks import as_labels, as_samples
from mi_estimators.discrete import discrete_entropy
from mi_estimators.mixture import check_options, prepare_mixture
from mi_estimators.results import MIResult

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_BERNOULLI = ("Bernoulli dropout leaves I(X;Z) infinite: the all-ones mask has positive probability, so "
              "Z = f(x) exactly with positive probability and X is recoverable from Z (Adilova, Geiger & "
              "Fischer 2023). Use Gaussian or information dropout to obtain a finite information plane.")


def gaussian_dropout_mi(representations: np.ndarray, noise_std: float, labels: np.ndarray | None = None,
                        noise_samples: int = 1, seed: int = 0, *, max_components: int | None = None,
                        clip_min: float | None = None, backend: str = "numpy", dtype: str = "float32",
                        max_memory_mb: float = 256, progress: bool = False) -> MIResult:
    """Mixture estimate of I(X;Z) (and I(Y;Z) with ``labels``) for Gaussian dropout, nats.

    ``representations`` f (N, d) are the noise-free dropout inputs, ``noise_std`` sigma the standard
    deviation of the multiplicative noise (sqrt(p / (1 - p)) for rate p). |f| below ``clip_min`` is
    raised to ``clip_min`` (sign kept, zeros become +clip_min); without it an exactly-zero entry is
    an error, because the conditional density of Z is degenerate there. ``max_components`` uses a
    random subset of that many mixture components for p(z) (biased, reported in ``params``).
    Noise: ``numpy.random.default_rng(seed)`` draws eps as ``standard_normal((N, noise_samples, d))``
    in blocks of inputs. Remaining options are those of ``mixture_log_density``.
    """
    sigma = _positive_scalar(noise_std, "noise_std")
    f, n_clipped = _activations(representations, clip_min, allow_negative=True)
    stds = sigma * np.abs(f)
    params = {"noise_std": sigma, "clip_min": clip_min, "n_clipped": n_clipped}
    return _mixture_mi("gaussian_dropout_mixture", f, stds, labels, noise_samples, seed, max_components,
                       backend, dtype, max_memory_mb, progress, params)


def information_dropout_mi(representations: np.ndarray, alphas: np.ndarray, labels: np.ndarray | None = None,
                           noise_samples: int = 1, seed: int = 0, *, max_components: int | None = None,
                           clip_min: float | None = None, backend: str = "numpy", dtype: str = "float32",
                           max_memory_mb: float = 256, progress: bool = False) -> MIResult:
    """Mixture estimate of I(X;Z) (and I(Y;Z)) for information dropout, in log space, nats.

    Components N(log f(x_k), diag alpha(x_k)^2); ``representations`` f must be positive (softplus
    units) and ``alphas`` positive, both (N, d). ``h_z``, ``h_z_given_x`` are entropies of log Z.
    Other arguments as for :func:`gaussian_dropout_mi` (``clip_min`` raises f below it to it).
    """
    f, n_clipped = _activations(representations, clip_min, allow_negative=False)
    alpha = as_samples(alphas, "alphas", min_samples=1)
    if alpha.shape != f.shape:
        raise ValueError(f"alphas must have the shape of the representations {f.shape}, got {alpha.shape}")
    bad = alpha <= 0
    if bad.any():
        raise ValueError(f"alphas must be positive (the standard deviation of the log-noise); "
                         f"{int(bad.sum())} entries are <= 0")
    params = {"space": "log", "clip_min": clip_min, "n_clipped": n_clipped}
    return _mixture_mi("information_dropout_mixture", np.log(f), alpha, labels, noise_samples, seed,
                       max_components, backend, dtype, max_memory_mb, progress, params)


def estimate_layer_mi(layer: dict, representations: np.ndarray, *, alphas: np.ndarray | None = None,
                      labels: np.ndarray | None = None, **kwargs: Any) -> MIResult:
    """Dispatch on a ``config.json`` layer entry: ``layer["dropout"]`` and ``layer["noise_std"]``.

    Gaussian dropout uses ``layer["noise_std"]`` (the run folder's single source of the noise
    level), information dropout needs ``alphas``; Bernoulli dropout raises ``ValueError`` (its
    I(X;Z) is infinite). ``kwargs`` go to the estimator.
    """
    kind = layer.get("dropout")
    name = layer.get("name")
    if kind == "gaussian":
        if alphas is not None:
            raise ValueError(f"layer {name!r} uses Gaussian dropout; alphas belong to information dropout")
        if layer.get("noise_std") is None:
            raise ValueError(f"layer {name!r} (Gaussian dropout) has no noise_std in its config entry")
        result = gaussian_dropout_mi(representations, layer["noise_std"], labels, **kwargs)
    elif kind == "information":
        if alphas is None:
            raise ValueError(f"layer {name!r} uses information dropout: pass its saved alphas")
        result = information_dropout_mi(representations, alphas, labels, **kwargs)
    elif kind == "bernoulli":
        raise ValueError(f"layer {name!r}: {_BERNOULLI}")
    else:
        raise ValueError(f"layer {name!r}: unknown dropout kind {kind!r} (expected gaussian, information "
                         "or bernoulli)")
    result.params.update({"layer": name, "dropout": kind, "p": layer.get("p")})
    return result


def conditional_entropy(stds: np.ndarray) -> float:
    """h(Z|X) = (1/N) sum_k sum_i log(sqrt(2 pi e) s_ki) for Gaussian conditionals of std s (N, d)."""
    return float(np.log(stds).sum(axis=1).mean() + stds.shape[1] * (_LOG_SQRT_2PI + 0.5))


def _positive_scalar(value: Any, name: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if np.ndim(value) != 0 or not math.isfinite(x) or x <= 0:
        raise ValueError(f"{name} must be a positive finite scalar, got {value!r}")
    return x


def _activations(representations: np.ndarray, clip_min: float | None, *, allow_negative: bool) -> tuple[np.ndarray, int]:
    """Validated f (N, d) with |f| >= clip_min, and how many entries were raised."""
    f = as_samples(representations, "representations", min_samples=2)
    if not allow_negative and (f < 0).any():
        raise ValueError(f"representations must be positive for information dropout (log-normal noise); "
                         f"{int((f < 0).sum())} entries are negative")
    if clip_min is None:
        zero = f == 0
        if zero.any():
            rows = np.unique(np.nonzero(zero)[0])
            raise ValueError(
                f"representations contain {int(zero.sum())} exactly-zero entries in {rows.size} samples (first at "
                f"row {rows[0]}); the conditional density of Z is degenerate there (I(X;Z) is infinite). Use "
                "softplus instead of ReLU before the dropout layer, or pass clip_min (e.g. 1e-6) to raise "
                "|f| below it to clip_min")
        return f, 0
    clip = _positive_scalar(clip_min, "clip_min")
    low = np.abs(f) < clip
    if low.any():
        f = f.copy()
        f[low] = np.where(f[low] < 0, -clip, clip)
    return f, int(low.sum())


def _mixture_mi(method: str, means: np.ndarray, stds: np.ndarray, labels: np.ndarray | None, noise_samples: int,
                seed: int, max_components: int | None, backend: str, dtype: str, max_memory_mb: float,
                progress: bool, params: dict[str, Any]) -> MIResult:
    n, d = means.shape
    if isinstance(noise_samples, bool) or not isinstance(noise_samples, (int, np.integer)) or noise_samples < 1:
        raise ValueError(f"noise_samples must be a positive integer, got {noise_samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    check_options(backend, dtype, max_memory_mb)
    y = None
    if labels is not None:
        y = np.unique(as_labels(labels, n), return_inverse=True)[1].ravel()
    comp = np.arange(n)
    if max_components is not None:
        if isinstance(max_components, bool) or not isinstance(max_components, (int, np.integer)) or max_components < 1:
            raise ValueError(f"max_components must be a positive integer or None, got {max_components!r}")
        if max_components < n:
            comp = np.sort(np.random.default_rng([seed, 1]).choice(n, size=max_components, replace=False))
    if y is not None and np.unique(y[comp]).size < y.max() + 1:
        raise ValueError("the component subsample misses a class; raise max_components")
    mix = prepare_mixture(means[comp], stds[comp], groups=None if y is None else y[comp])
    log_weights = np.log(mix.group_sizes() / len(comp))
    own_group = np.zeros(n, dtype=np.int64) if y is None else y
    in_mixture = np.isin(np.arange(n), comp)
    log_own_norm = -np.log(stds).sum(axis=1) - d * _LOG_SQRT_2PI

    rng = np.random.default_rng(seed)
    # A quarter of the memory budget holds the noise and samples of a block of inputs, the rest the kernel.
    per_sample = 8 * (3 * d + mix.n_groups + 4)
    block = max(1, int(max_memory_mb * 2 ** 20 / 4 // (per_sample * noise_samples)))
    terms = {"neg_log_p": np.empty((n, noise_samples)), "noise_sq": np.empty((n, noise_samples))}
    if y is not None:
        terms["y"] = np.empty((n, noise_samples))
    float64_rows, max_bound = 0, 0.0
    for k0 in range(0, n, block):
        k = slice(k0, min(k0 + block, n))
        nk = k.stop - k0
        z = rng.standard_normal((nk, noise_samples, d))
        noise_sq = np.einsum("krd,krd->kr", z, z)
        z *= stds[k, None, :]
        z += means[k, None, :]
        z = z.reshape(-1, d)
        # The sample's own component starts the kernel's running maximum (where it is in the mixture).
        own = np.repeat(np.arange(k0, k.stop), noise_samples)
        keep = np.flatnonzero(in_mixture[own])
        hint = np.full((len(z), mix.n_groups), np.nan)
        hint[keep, own_group[own[keep]]] = log_own_norm[own[keep]] - 0.5 * noise_sq.ravel()[keep]
        log_pg, info = mix.log_density(z, backend=backend, dtype=dtype, max_memory_mb=0.75 * max_memory_mb,
                                       progress=progress, shift_hint=hint)
        float64_rows += info["float64_rows"]
        max_bound = max(max_bound, info["max_error_bound"])
        log_p = logsumexp(log_pg + log_weights, axis=1).reshape(nk, noise_samples)
        terms["neg_log_p"][k] = -log_p
        terms["noise_sq"][k] = noise_sq
        if y is not None:
            terms["y"][k] = log_pg.reshape(nk, noise_samples, -1)[np.arange(nk), :, own_group[k]] - log_p

    h_zx = conditional_entropy(stds)
    cv = (d - terms.pop("noise_sq")) / 2.0        # log p(z|x_k) + h_k: mean exactly 0
    h_z, se_h, beta = _control_variate_mean(terms["neg_log_p"], cv)
    unpaired, se_unpaired = _stratified_mean(terms["neg_log_p"])
    paired, se_paired = _stratified_mean(terms["neg_log_p"] + cv)
    params.update({"noise_samples": int(noise_samples), "seed": int(seed), "n_components": len(comp),
                   "component_subsample": len(comp) < n, "backend": backend, "dtype": dtype,
                   "control_variate_beta": beta,
                   "mi_xz_unpaired": unpaired - h_zx, "mi_xz_unpaired_stderr": se_unpaired,
                   "mi_xz_paired": paired - h_zx, "mi_xz_paired_stderr": se_paired,
                   "kernel_float64_samples": float64_rows, "kernel_max_error_bound": max_bound})
    result = MIResult(method=method, mi_xz=h_z - h_zx, mi_xz_stderr=se_h, h_z=h_z, h_z_stderr=se_h,
                      h_z_given_x=h_zx, log_n=math.log(n), n_samples=n, params=params)
    if y is not None:
        result.mi_zy, result.mi_zy_stderr, params["control_variate_beta_zy"] = _control_variate_mean(terms["y"], cv)
        result.h_z_given_y = result.h_z - result.mi_zy
        result.h_y = discrete_entropy(y)
    return result


def _control_variate_mean(values: np.ndarray, cv: np.ndarray) -> tuple[float, float, float]:
    """Stratified mean of values + beta cv (cv of known mean 0), beta fitted within inputs; (mean, stderr, beta)."""
    if values.shape[1] > 1:
        vc, cc = values - values.mean(axis=1, keepdims=True), cv - cv.mean(axis=1, keepdims=True)
    else:
        vc, cc = values - values.mean(), cv - cv.mean()
    denom = float((cc * cc).sum())
    beta = -float((vc * cc).sum()) / denom if denom > 0 else 0.0
    mean, se = _stratified_mean(values + beta * cv)
    return mean, se, beta


def _stratified_mean(values: np.ndarray) -> tuple[float, float]:
    """Mean over inputs (rows) and noise draws, with its standard error (module docstring)."""
    n, r = values.shape
    if r > 1:
        var = values.var(axis=1, ddof=1).mean() / r
    else:
        var = values.var(ddof=1) if n > 1 else math.nan
    return float(values.mean()), float(math.sqrt(var / n))
