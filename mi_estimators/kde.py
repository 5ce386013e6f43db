"""Pairwise-distance (KDE) bounds on I(X;T) and I(Y;T) for T = f(X) + N(0, noise_std^2 I).

Kolchinsky & Tracey, "Estimating mixture entropy with pairwise distances", Entropy 19(7), 361 (2017),
as used by Saxe et al., "On the information bottleneck theory of deep learning", ICLR 2018. With X
uniform over the N inputs, T is an equal-weight mixture of N Gaussians N(f_i, s^2 I) (s = noise_std,
additive noise) and h(T|X) = d/2 log(2 pi e s^2), so that

    upper (KL distance):           I(X;T) <= -1/N sum_i log 1/N sum_j exp(-||f_i - f_j||^2 / (2 s^2))
    lower (Bhattacharyya distance): I(X;T) >= -1/N sum_i log 1/N sum_j exp(-||f_i - f_j||^2 / (8 s^2))

(the lower bound is the same sum with 2 s in place of s). Both lie in [0, log N].
With labels, as in Saxe et al.'s code, I(Y;T) = H(T) - sum_c p(c) H(T|Y=c) with each entropy replaced
by the same bound on the class-c sub-mixture; the normalising constants cancel, leaving

    I(Y;T) ~ 1/N sum_i [log p_{y_i}(f_i) - log p(f_i)],

p the whole mixture and p_c its class-c part. These are differences of bounds, so they are estimates
of I(Y;T) rather than bounds on it; each lies in [0, H(Y)] up to round-off. All pairwise sums go
through ``mi_estimators.mixture.mixture_log_density`` (chunked matrix products + log-sum-exp).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from mi_estimators.checks import LOG_SQRT_2PI_E, InputError, as_labels, as_samples, check_float
from mi_estimators.discrete import discrete_entropy, symbol_ids
from mi_estimators.mixture import mixture_log_density
from mi_estimators.results import MIResult


def kde_mi_bounds(
    f: np.ndarray,
    noise_std: float,
    labels: np.ndarray | None = None,
    *,
    backend: str = "numpy",
    dtype: str = "float32",
    max_memory_mb: int = 256,
    progress: bool = False,
) -> MIResult:
    """Kolchinsky-Tracey pairwise bounds (Saxe et al. 2018) for T = f(X) + N(0, noise_std^2 I), in nats.

    ``mi_xz`` is the KL upper bound on I(X;T) and ``params["mi_xz_lower"]`` the Bhattacharyya lower
    bound (formulas in the module docstring); with labels, ``mi_zy`` and ``params["mi_zy_lower"]`` are
    the corresponding estimates of I(Y;T). ``h_z`` is the KL upper bound on h(T) and ``h_z_given_x`` the
    exact d/2 log(2 pi e noise_std^2). ``backend``, ``dtype``, ``max_memory_mb`` and ``progress`` are
    passed to :func:`~mi_estimators.mixture.mixture_log_density`.
    """
    try:
        std = check_float(noise_std, "noise_std")
    except InputError as err:
        raise InputError(
            f"{err}; with no noise T = f(X) is deterministic and I(X;T) is H(X) (log N for "
            "distinct inputs), not a KDE quantity"
        ) from None
    f = as_samples(f, "f", min_rows=1)
    n, d = f.shape
    y = None if labels is None else symbol_ids(as_labels(labels, n))
    kernel_options = dict(backend=backend, dtype=dtype, max_memory_mb=max_memory_mb, progress=progress)

    # Widths s (KL bound) and 2 s (Bhattacharyya bound).
    try:
        bounds = [_pairwise_terms(f, width, y, kernel_options) for width in (std, 2.0 * std)]
    except InputError as err:  # the mixture names its own arguments: say which of ours they are
        raise InputError(f"f (the means) and noise_std (the stds): {err}") from None
    (upper_xz, upper_zy, log_p_mean), (lower_xz, lower_zy, _) = bounds
    h_z_given_x = d * (LOG_SQRT_2PI_E + math.log(std))
    params = {
        "noise_std": std,
        "mi_xz_lower": lower_xz,
        "mi_zy_lower": lower_zy,
        "upper": "Kolchinsky-Tracey KL bound",
        "lower": "Kolchinsky-Tracey Bhattacharyya bound",
        "dtype": dtype,
        "backend": backend,
    }
    return MIResult(
        method="kde_pairwise",
        mi_xz=upper_xz,
        mi_zy=upper_zy,
        h_z=0.5 * d - log_p_mean,
        h_z_given_x=h_z_given_x,
        log_n=math.log(n),
        n_inputs=n,
        h_y=None if y is None else discrete_entropy(y),
        params=params,
    )


def _pairwise_terms(f: np.ndarray, std: float, y: np.ndarray | None, kernel_options: dict):
    """(-1/N sum_i log 1/N sum_j K_ij, the label estimate or None, mean log p(f_i)) for kernel width std."""
    n, d = f.shape
    # log N(f_i; f_j, std^2 I) = -||f_i-f_j||^2/(2 std^2) - d/2 log(2 pi std^2): remove the constant.
    norm = 0.5 * d * math.log(2 * math.pi * std**2)
    if y is None:
        log_p = np.asarray(mixture_log_density(f, f, std, **kernel_options), dtype=np.float64)
        return float(-(log_p.mean() + norm)), None, float(log_p.mean())
    log_p_class = np.asarray(mixture_log_density(f, f, std, groups=y, **kernel_options), dtype=np.float64)
    counts = np.bincount(y)
    # The whole mixture is the class sub-mixtures weighted by their sizes.
    log_p = logsumexp(log_p_class + np.log(counts / n), axis=1)
    own = log_p_class[np.arange(n), y]
    return float(-(log_p.mean() + norm)), float(np.mean(own - log_p)), float(log_p.mean())
