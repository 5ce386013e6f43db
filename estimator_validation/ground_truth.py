"""True entropies and mutual information of the toy problem, by numerical integration (nats).

Toy problem (Adilova, Geiger & Fischer, ICLR 2023, estimator validation): X ~ N(0, 1),
Y = f(X) = a X + b (a = 2, b = 0.5), Z = Y D with D ~ N(1, sigma^2) independent of X; ``noise_std`` is
the *standard deviation* sigma of the multiplicative noise (the paper's variance 0.1 is sigma = sqrt(0.1)).
With ``dim`` independent coordinates every quantity is ``dim`` times its one-dimensional value.

Method.

* h(Z|X) = E_x[log(sqrt(2 pi e) sigma |a x + b|)], because Z | x ~ N(f(x), sigma^2 f(x)^2). The expectation is
  a 1-D integral with an integrable log singularity at x = -b/a; it is computed with
  ``scipy.integrate.quad`` on the two half-lines that meet at the singular point.
* h(Z) = -int p(z) log p(z) dz, where p(z) = int phi(x) N(z; f(x), sigma^2 f(x)^2) dx has a logarithmic
  singularity at z = 0. It is computed in log space: with W = log|Z| = log|Y| + log|D| and
  S = sign(Z) = sign(Y) sign(D), the densities of (log|Y|, sign Y) and (log|D|, sign D) are smooth
  and decay exponentially on both sides, so p_W(w, s) is a convolution of smooth functions; the
  trapezoidal rule on a uniform grid converges exponentially for such integrands, and the
  convolutions are done by FFT. Then h(Z) = h(W, S) + E[W] (change of variables z = s exp(w)).
  ``tests/test_ground_truth.py`` checks this against nested adaptive quadrature in z and against a
  Monte Carlo cross-entropy with its standard error.

Two different "truths" exist. The *population* value above is for continuous X and is what the
paper compares to. The mixture estimator treats X as uniform over the N drawn inputs x_1..x_N; its
target is the *finite-sample* I_N = h(Z_N) - h(Z|X)_N with Z_N the equal-weight mixture of the N
conditionals. Averaged over the draw of the inputs, E[I_N] = I - I(Z; inputs) <= I, so I_N approaches
the population value from below as N grows, and I_N <= log N always (at dim 10 with N = 1000 the
population value of about 18 nats is far above log N = 6.9, so log N binds). In one dimension
:func:`finite_sample_truth_1d` computes I_N for a given draw by quadrature.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import integrate, special

from mi_estimators.checks import LOG_SQRT_2PI, LOG_SQRT_2PI_E, check_float

TOY_SCALE = 2.0
TOY_SHIFT = 0.5
_MAX_GRID = 2_000_000
# The log-space grid: step min(_MAX_STEP, noise_std / _STEPS_PER_STD) from _BOTTOM to the top of the
# support (a few units for the toy problem), so at most _MAX_GRID points allow noise_std down to
# about (top - _BOTTOM) * _STEPS_PER_STD / _MAX_GRID = 1.7e-4.
_MAX_STEP = 0.02
_STEPS_PER_STD = 8.0
_BOTTOM = -40.0  # both log-densities decay like exp(l) to the left: negligible below this


def _check_params(noise_std: float, scale: float) -> float:
    """``noise_std`` as a float (ValueError naming it unless finite and > 0); the scale must be non-zero."""
    if not (math.isfinite(scale) and scale != 0):
        raise ValueError(f"the scale of f must be non-zero and finite, got {scale}")
    return check_float(noise_std, "noise_std")


def _normal_pdf(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mean) / std) ** 2 - LOG_SQRT_2PI) / std


@lru_cache(maxsize=None)
def expected_log_abs_f(scale: float = TOY_SCALE, shift: float = TOY_SHIFT) -> float:
    """E[log|a X + b|] for X ~ N(0, 1), by ``quad`` on the half-lines either side of x = -b/a."""
    _check_params(1.0, scale)
    x0 = -shift / scale

    def g(x):
        return math.exp(-0.5 * x * x - LOG_SQRT_2PI) * math.log(abs(scale * x + shift))

    left = integrate.quad(g, -math.inf, x0, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
    right = integrate.quad(g, x0, math.inf, epsabs=1e-13, epsrel=1e-12, limit=200)[0]
    return left + right


@lru_cache(maxsize=None)
def conditional_entropy_1d(noise_std: float, scale: float = TOY_SCALE, shift: float = TOY_SHIFT) -> float:
    """h(Z|X) = log(sqrt(2 pi e) sigma) + E[log|a X + b|] of one coordinate (nats)."""
    noise_std = _check_params(noise_std, scale)
    return LOG_SQRT_2PI_E + math.log(noise_std) + expected_log_abs_f(scale, shift)


def _grid_top(noise_std: float, scale: float, shift: float) -> float:
    return max(math.log(abs(shift) + 14.0 * abs(scale)), math.log(1.0 + 14.0 * noise_std))


def min_noise_std(scale: float = TOY_SCALE, shift: float = TOY_SHIFT) -> float:
    """The smallest noise standard deviation whose log-space grid fits in ``_MAX_GRID`` points."""
    return (_grid_top(0.0, scale, shift) - _BOTTOM) * _STEPS_PER_STD / _MAX_GRID


@lru_cache(maxsize=None)
def _log_space_density(noise_std: float, scale: float, shift: float):
    """Grid w, step h and the densities p(W = w, S = +1), p(W = w, S = -1) of W = log|Z|."""
    noise_std = _check_params(noise_std, scale)
    step = min(_MAX_STEP, noise_std / _STEPS_PER_STD)  # log|D| has width about sigma in log space for small sigma
    top = _grid_top(noise_std, scale, shift)
    if (top - _BOTTOM) / step > _MAX_GRID:
        raise ValueError(
            f"noise_std {noise_std:g} is too small for the quadrature grid (use >= {min_noise_std(scale, shift):.2g})"
        )
    grid = np.arange(_BOTTOM, top + step, step)
    e = np.exp(grid)
    # density of (log|Y|, sign Y) and (log|D|, sign D): p(s e^l) e^l
    gy = {s: _normal_pdf(s * e, shift, abs(scale)) * e for s in (1, -1)}
    gd = {s: _normal_pdf(s * e, 1.0, noise_std) * e for s in (1, -1)}
    # linear convolutions p * q by FFT, zero-padded to a power of two, each transform computed once
    n = 2 * grid.size - 1
    size = 1 << (n - 1).bit_length()
    fy = {s: np.fft.rfft(g, size) for s, g in gy.items()}
    fd = {s: np.fft.rfft(g, size) for s, g in gd.items()}
    plus = np.fft.irfft(fy[1] * fd[1] + fy[-1] * fd[-1], size)[:n] * step
    minus = np.fft.irfft(fy[1] * fd[-1] + fy[-1] * fd[1], size)[:n] * step
    w = 2.0 * _BOTTOM + step * np.arange(n)
    # FFT round-off leaves values of order 1e-17 of either sign where the density underflows
    return w, step, np.clip(plus, 0.0, None), np.clip(minus, 0.0, None)


@lru_cache(maxsize=None)
def marginal_entropy_1d(noise_std: float, scale: float = TOY_SCALE, shift: float = TOY_SHIFT) -> float:
    """h(Z) = h(log|Z|, sign Z) + E[log|Z|] of one coordinate (nats), by log-space quadrature."""
    w, step, plus, minus = _log_space_density(noise_std, scale, shift)
    h_ws = -np.trapezoid(special.xlogy(plus, plus) + special.xlogy(minus, minus), dx=step)
    mean_w = np.trapezoid(w * (plus + minus), dx=step)
    return float(h_ws + mean_w)


def marginal_density_1d(
    z: np.ndarray, noise_std: float, scale: float = TOY_SCALE, shift: float = TOY_SHIFT
) -> np.ndarray:
    """p(z) of one coordinate, p_W(log|z|, sign z) / |z| interpolated from the log-space grid (inf at 0)."""
    w, _, plus, minus = _log_space_density(noise_std, scale, shift)
    z = np.asarray(z, dtype=np.float64)
    with np.errstate(divide="ignore"):
        lz = np.log(np.abs(z))
        out = np.where(z >= 0, np.interp(lz, w, plus), np.interp(lz, w, minus)) / np.abs(z)
    return np.where(z == 0, np.inf, out)


def toy_truth(dim: int, fdim: int, noise_std: float) -> dict[str, float | None]:
    """Population ``{"mi", "h_z", "h_z_given_x"}`` of the toy problem in nats.

    ``fdim == dim``: f(x) = 2x + 0.5, independent coordinates, so ``dim`` times the 1-D values.
    ``fdim < dim``: f(x) = 2Ax + 0.5 with orthonormal rows of A, so AX ~ N(0, I_fdim) and Z depends
    on X only through AX: ``fdim`` times the 1-D values. ``fdim > dim`` (orthonormal columns): the
    coordinates of Z are dependent and no quadrature is available, so every entry is ``None``.
    """
    if dim < 1 or fdim < 1:
        raise ValueError(f"dim and fdim must be >= 1, got dim={dim}, fdim={fdim}")
    if fdim > dim:
        return {"mi": None, "h_z": None, "h_z_given_x": None}
    h_z = fdim * marginal_entropy_1d(float(noise_std))
    h_z_given_x = fdim * conditional_entropy_1d(float(noise_std))
    return {"mi": h_z - h_z_given_x, "h_z": h_z, "h_z_given_x": h_z_given_x}


_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)
_BREAKS = np.array([-8.0, -4.0, -2.0, 0.0, 2.0, 4.0, 8.0])


def mixture_entropy_1d(means: np.ndarray, stds: np.ndarray, *, max_memory_mb: int = 64) -> float:
    """Entropy -int p log p of the equal-weight 1-D Gaussian mixture p = (1/N) sum_j N(m_j, s_j^2).

    Composite 8-point Gauss-Legendre quadrature on the union of the partitions m_j + s_j * t
    (t = 0, +-2, +-4, +-8), so every component, however narrow, is resolved on its own scale.
    """
    means = np.asarray(means, dtype=np.float64).ravel()
    stds = np.broadcast_to(np.asarray(stds, dtype=np.float64), means.shape).ravel()
    if means.size == 0 or not (np.all(np.isfinite(means)) and np.all(np.isfinite(stds))):
        raise ValueError("means and stds must be non-empty and finite")
    if np.any(stds <= 0):
        raise ValueError("every component needs a positive standard deviation (a zero f(x) has none)")
    edges = np.unique((means[:, None] + stds[:, None] * _BREAKS).ravel())
    mid, half = 0.5 * (edges[1:] + edges[:-1]), 0.5 * (edges[1:] - edges[:-1])
    nodes = (mid[:, None] + half[:, None] * _GL_NODES).ravel()
    weights = (half[:, None] * _GL_WEIGHTS).ravel()
    chunk = max(1, max_memory_mb * 2**20 // (8 * 3 * means.size))
    inv = 1.0 / stds
    total = 0.0
    for start in range(0, nodes.size, chunk):
        z = nodes[start : start + chunk, None]
        dens = (np.exp(-0.5 * ((z - means) * inv) ** 2 - LOG_SQRT_2PI) * inv).sum(axis=1) / means.size
        total -= float(np.dot(weights[start : start + chunk], special.xlogy(dens, dens)))
    return total


def finite_sample_truth_1d(f_values: np.ndarray, noise_std: float) -> dict[str, float]:
    """I_N = h(Z_N) - h(Z|X)_N for X uniform over the given 1-D noise-free values f(x_1..x_N).

    This is exactly what the dropout mixture estimator estimates by Monte Carlo; it is <= log N.
    """
    f = np.asarray(f_values, dtype=np.float64)
    if f.ndim == 2 and f.shape[1] == 1:
        f = f[:, 0]
    if f.ndim != 1:
        raise ValueError(f"finite_sample_truth_1d needs one-dimensional f values, got shape {np.shape(f_values)}")
    std = _check_params(noise_std, 1.0) * np.abs(f)
    h_z = mixture_entropy_1d(f, std)
    h_z_given_x = float(np.mean(LOG_SQRT_2PI_E + np.log(std)))
    return {"mi": h_z - h_z_given_x, "h_z": h_z, "h_z_given_x": h_z_given_x}
