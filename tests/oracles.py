"""Independent ground truths for the estimator tests: quadrature and brute-force float64 Monte Carlo.

Nothing here uses the code under test. The toy problem is the paper's: x ~ N(0, 1), f = 2x + 0.5,
Z = f D with D ~ N(1, v) (v the variance of the multiplicative noise).
"""

import math
from functools import lru_cache

import numpy as np
from scipy import integrate
from scipy.special import logsumexp


def _phi(x):
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def normal_pdf(z, mean, std):
    return math.exp(-0.5 * ((z - mean) / std) ** 2) / (math.sqrt(2 * math.pi) * std)


def _toy_density(z, v, power=1):
    """p(z) (power 1) or E_x[N(z; f, v f^2)^2] (power 2) for f = 2x + 0.5, x ~ N(0,1); integral over f."""

    def g(f):
        return _phi((f - 0.5) / 2) / 2 * normal_pdf(z, f, math.sqrt(v) * abs(f)) ** power if f else 0.0

    cuts = sorted({0.0} | {z * c for c in (0.25, 0.5, 1.0, 2.0, 4.0)})  # the peak sits near f = z
    pieces = [(-np.inf, cuts[0])] + list(zip(cuts[:-1], cuts[1:])) + [(cuts[-1], np.inf)]
    return sum(integrate.quad(g, a, b, limit=200, epsabs=1e-14, epsrel=1e-9)[0] for a, b in pieces if a < b)


def _halves(fun):
    return sum(
        integrate.quad(fun, a, b, limit=400, epsabs=1e-10, epsrel=1e-9)[0] for a, b in [(-np.inf, 0.0), (0.0, np.inf)]
    )


TOY_TRUTH = {0.1: 1.7908, 0.4: 1.1420}
"""Rounded values of :func:`toy_truth` (nats), for tests that need no quadrature."""


@lru_cache(maxsize=None)
def toy_truth(v):
    """True I(X;Z) of the 1-D toy problem: h(Z) by quadrature of the exact p(z), h(Z|X) in closed form."""
    h_z = _halves(lambda z: -p * math.log(p) if (p := _toy_density(z, v)) > 0 else 0.0)
    e_log_f = sum(
        integrate.quad(lambda x: _phi(x) * math.log(abs(2 * x + 0.5)), a, b, limit=200)[0]
        for a, b in [(-np.inf, -0.25), (-0.25, np.inf)]
    )
    return h_z - (0.5 * math.log(2 * math.pi * math.e * v) + e_log_f)


def mixture_entropy_1d(means, stds, weights):
    """h of a 1-D Gaussian mixture by quadrature."""

    def p(z):
        return sum(w * normal_pdf(z, m, s) for m, s, w in zip(means, stds, weights))

    cuts = sorted(set(means))
    lo, hi = min(m - 12 * s for m, s in zip(means, stds)), max(m + 12 * s for m, s in zip(means, stds))
    edges = [lo] + cuts + [hi]
    return sum(
        integrate.quad(lambda z: -p(z) * math.log(p(z)) if p(z) > 0 else 0.0, a, b, limit=200)[0]
        for a, b in zip(edges[:-1], edges[1:])
        if a < b
    )


def discrete_truth(means, stds, labels):
    """I(X;Z) and I(Y;Z) for X uniform on a few inputs, 1-D, by quadrature of the mixtures."""
    n = len(means)
    h_z = mixture_entropy_1d(means, stds, [1 / n] * n)
    h_z_given_x = np.mean([0.5 * math.log(2 * math.pi * math.e * s * s) for s in stds])
    h_z_given_y = 0.0
    for c in np.unique(labels):
        sel = labels == c
        h_z_given_y += sel.mean() * mixture_entropy_1d(means[sel], stds[sel], [1 / sel.sum()] * sel.sum())
    return h_z - h_z_given_x, h_z - h_z_given_y


def component_log_densities(z, means, stds):
    """(M, N) float64 log N(z_m; mu_j, diag s_j^2), by direct differences (no expansion)."""
    out = np.empty((len(z), len(means)))
    for j0 in range(0, len(means), 256):
        mu, s = means[j0 : j0 + 256], stds[j0 : j0 + 256]
        diff = (z[:, None, :] - mu[None]) / s[None]
        out[:, j0 : j0 + 256] = (-0.5 * diff**2 - np.log(s)[None] - 0.5 * math.log(2 * math.pi)).sum(axis=2)
    return out


def mi_n_brute_force(means, stds, draws, seed):
    """I_N (X uniform over the N components) by the paired form with ``draws`` draws per input, float64.

    Returns (estimate, standard error); the estimate is independent of the code under test's noise."""
    rng = np.random.default_rng([seed, 424242])
    n, d = means.shape
    terms = np.empty((n, draws))
    for k in range(n):
        z = means[k] + stds[k] * rng.standard_normal((draws, d))
        logs = component_log_densities(z, means, stds)
        terms[k] = logs[:, k] - (logsumexp(logs, axis=1) - math.log(n))
    return float(terms.mean()), float(terms.var(axis=1, ddof=1).mean() / draws / n) ** 0.5
