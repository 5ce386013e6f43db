"""Gaussian upper bound on h(Z) and I(X;Z): the maximum-entropy distribution for a given covariance.

h(Z) <= 1/2 log det(2 pi e Sigma_Z) for any Z with covariance Sigma_Z (Cover & Thomas, thm. 8.6.5),
Sigma_Z estimated with Ledoit-Wolf shrinkage (Ledoit & Wolf, J. Multivariate Anal. 2004; scikit-
learn's ``LedoitWolf``). Used as a sanity bound by Adilova, Geiger & Fischer (ICLR 2023);
it becomes loose as the dimension grows. For Gaussian dropout I(X;Z) <= bound - h(Z|X), with the
closed-form h(Z|X) of :mod:`mi_estimators.dropout_MI`. The bound concerns the population covariance;
the estimate of it has a sampling error of order sqrt(d / n) nats.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.covariance import LedoitWolf

from mi_estimators.checks import (
    LOG_2PI,
    InputError,
    as_samples,
    check_fits_in_memory,
    check_int,
    gaussian_dropout_std,
    power_of_two_scale,
)
from mi_estimators.dropout_MI import check_codes, conditional_entropy
from mi_estimators.noise import standard_normal_draws
from mi_estimators.results import MIResult


def gaussian_entropy_upper_bound(z: np.ndarray) -> MIResult:
    """h_z = 1/2 log det(2 pi e Sigma) with the Ledoit-Wolf covariance of the samples ``z`` (n, d) of Z, nats.

    Fewer than 2 samples, or samples that do not vary (the Ledoit-Wolf covariance is then singular
    and the bound -inf): :class:`~mi_estimators.checks.InputError`. ``params["points"]`` is n, the
    number of (noisy) points.
    """
    h_z, params = _entropy_bound(z)
    return MIResult(method="gaussian_upper_bound", h_z=h_z, params=params)


def _entropy_bound(z: np.ndarray) -> tuple[float, dict[str, Any]]:
    """(h_z, params) of :func:`gaussian_entropy_upper_bound`."""
    z = as_samples(z, "z", min_rows=2)
    n, d = z.shape
    # Fit on z / c, c an exact power of two: Ledoit-Wolf's fourth powers overflow from |z| ~ 1e77 on,
    # and h(z) = h(z / c) + d log c.
    scale = float(power_of_two_scale(z))
    lw = LedoitWolf().fit(z / scale)
    sign, logdet = np.linalg.slogdet(lw.covariance_)
    if sign <= 0 or not math.isfinite(logdet):
        raise InputError(
            "z does not vary (every row is the same), so the Ledoit-Wolf covariance is singular "
            "and the Gaussian bound is -inf"
        )
    h_z = 0.5 * (logdet + d * (LOG_2PI + 1.0)) + d * math.log(scale)
    params = {"covariance": "ledoit_wolf", "shrinkage": float(lw.shrinkage_), "dim": d, "points": n}
    return h_z, params


def gaussian_dropout_upper_bound(
    f: np.ndarray,
    noise_std: float | None = None,
    draws: int = 1,
    seed: int = 0,
    *,
    p: float | None = None,
    clip_min: float | None = None,
) -> MIResult:
    """Upper bound on I(X;Z) for Gaussian dropout: the Gaussian bound on h(Z) minus h(Z|X), nats.

    Z = f(x) (1 + sigma eps), f the codes (N, d), is drawn ``draws`` times per input, the same draws as the mixture
    estimate with this seed (:mod:`mi_estimators.noise`); ``clip_min`` as in
    :func:`mi_estimators.dropout_MI.gaussian_dropout_mi`. Not capped at log N: the bound holds for the
    mixture but ignores that X takes only N values. The noise is ``noise_std`` sigma or the dropout rate
    ``p`` (exactly one; sigma = sqrt(p / (1 - p))).
    """
    sigma, rate = gaussian_dropout_std(noise_std, p)
    f, n_clipped = check_codes(f, clip_min, allow_negative=True)
    check_int(draws, "draws")
    check_int(seed, "seed", minimum=0)
    n, d = f.shape
    # the input index, the noise and the noisy points of every draw at once
    check_fits_in_memory(8.0 * n * draws * (2 * d + 1), f"the Gaussian bound with draws={draws}")
    inputs = np.repeat(np.arange(n), draws)
    eps = standard_normal_draws(seed, inputs, np.tile(np.arange(draws), n), d)
    z = f[inputs] * (1.0 + sigma * eps)
    h_z, params = _entropy_bound(z)
    h_z_given_x = conditional_entropy(sigma * np.abs(f))
    params.update(
        {
            "noise_std": sigma,
            "p": rate,
            "draws": int(draws),
            "seed": int(seed),
            "clip_min": clip_min,
            "n_clipped": n_clipped,
        }
    )
    return MIResult(
        method="gaussian_dropout_upper_bound",
        mi_xz=h_z - h_z_given_x,
        h_z=h_z,
        h_z_given_x=h_z_given_x,
        log_n=math.log(n),
        n_inputs=n,
        params=params,
    )
