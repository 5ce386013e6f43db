"""Pairwise-distance (KDE) bounds on I(X;T) and I(Y;T) for T = h(X) + N(0, noise_var I).

Kolchinsky & Tracey, "Estimating mixture entropy with pairwise distances", Entropy 19(7), 361 (2017),
as used by Saxe et al., "On the information bottleneck theory of deep learning", ICLR 2018. With X
uniform over the N samples, T is an equal-weight mixture of N Gaussians N(h_i, noise_var I) and
h(T|X) = d/2 log(2 pi e noise_var), so that

    upper (KL distance):           I(X;T) <= -1/N sum_i log 1/N sum_j exp(-||h_i - h_j||^2 / (2 noise_var))
    lower (Bhattacharyya distance): I(X;T) >= -1/N sum_i log 1/N sum_j exp(-||h_i - h_j||^2 / (8 noise_var))

(the lower bound is the same sum with 4 noise_var in place of noise_var). Both lie in [0, log N].
With labels, as in Saxe et al.'s code, I(Y;T) = H(T) - sum_c p(c) H(T|Y=c) with each entropy replaced
by the same bound on the class-c sub-mixture; the normalising constants cancel, leaving

    I(Y;T) ~ 1/N sum_i [log p_{y_i}(h_i) - log p(h_i)],

p the whole mixture and p_c its class-c part. These are differences of bounds, so they are estimates
of I(Y;T) rather than bounds on it; each lies in [0, H(Y)] up to round-off. All pairwise sums go
through ``mi_estimators.mixture.mixture_log_density`` (chunked matrix products + log-sum-exp).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

from mi_estimators.checks import as_labels, as_samples
from mi_estimators.discrete import discrete_entropy, symbol_ids
from mi_estimators.mixture import mixture_log_density
from mi_estimators.results import MIResult


def kde_mi_bounds(representations: np.ndarray, noise_var: float, labels: np.ndarray | None = None, *,
                  backend: str = "numpy", dtype: str = "float32", max_memory_mb: int = 256,
                  progress: bool = False) -> MIResult:
    """Kolchinsky-Tracey pairwise bounds (Saxe et al. 2018) for T = h(X) + N(0, noise_var I), in nats.

    ``mi_xz`` is the KL upper bound on I(X;T) and ``params["mi_xz_lower"]`` the Bhattacharyya lower
    bound (formulas in the module docstring); with labels, ``mi_zy`` and ``params["mi_zy_lower"]`` are
    the corresponding estimates of I(Y;T). ``h_z`` is the KL upper bound on h(T) and ``h_z_given_x`` the
    exact d/2 log(2 pi e noise_var). ``backend``, ``dtype``, ``max_memory_mb`` and ``progress`` are
    passed to :func:`~mi_estimators.mixture.mixture_log_density`.
    """
    try:
        noise_var = float(noise_var)
    except (TypeError, ValueError):
        raise ValueError(f"noise_var must be a positive number, got {noise_var!r}") from None
    if not (math.isfinite(noise_var) and noise_var > 0):
        raise ValueError(f"noise_var must be positive and finite, got {noise_var!r}; with no noise T = h(X) is "
                         f"deterministic and I(X;T) is H(X) (log N for distinct samples), not a KDE quantity")
    h = as_samples(representations, "representations", min_samples=1)
    n, d = h.shape
    y = None if labels is None else symbol_ids(as_labels(labels, n))
    kernel = dict(backend=backend, dtype=dtype, max_memory_mb=max_memory_mb, progress=progress)

    # Widths sqrt(var) (KL bound) and sqrt(4 var) (Bhattacharyya bound).
    bounds = [_pairwise_terms(h, math.sqrt(v), y, kernel) for v in (noise_var, 4.0 * noise_var)]
    (upper_xz, upper_zy, log_p_mean), (lower_xz, lower_zy, _) = bounds
    h_z_given_x = 0.5 * d * math.log(2 * math.pi * math.e * noise_var)
    params = {"noise_var": noise_var, "mi_xz_lower": lower_xz, "mi_zy_lower": lower_zy,
              "upper": "Kolchinsky-Tracey KL bound", "lower": "Kolchinsky-Tracey Bhattacharyya bound",
              "dtype": dtype, "backend": backend}
    return MIResult(method="kde_pairwise", mi_xz=upper_xz, mi_zy=upper_zy, h_z=0.5 * d - log_p_mean,
                    h_z_given_x=h_z_given_x, log_n=math.log(n), n_samples=n,
                    h_y=None if y is None else discrete_entropy(y), params=params)


def _pairwise_terms(h: np.ndarray, std: float, y: np.ndarray | None, kernel: dict):
    """(-1/N sum_i log 1/N sum_j K_ij, the label estimate or None, mean log p(h_i)) for kernel width std."""
    n, d = h.shape
    # log N(h_i; h_j, std^2 I) = -||h_i-h_j||^2/(2 std^2) - d/2 log(2 pi std^2): remove the constant.
    norm = 0.5 * d * math.log(2 * math.pi * std ** 2)
    if y is None:
        log_p = np.asarray(mixture_log_density(h, h, std, **kernel), dtype=np.float64)
        return float(-(log_p.mean() + norm)), None, float(log_p.mean())
    log_p_class = np.asarray(mixture_log_density(h, h, std, groups=y, **kernel), dtype=np.float64)
    counts = np.bincount(y)
    # The whole mixture is the class sub-mixtures weighted by their sizes.
    log_p = logsumexp(log_p_class + np.log(counts / n), axis=1)
    own = log_p_class[np.arange(n), y]
    return float(-(log_p.mean() + norm)), float(np.mean(own - log_p)), float(log_p.mean())
