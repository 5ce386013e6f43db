"""Ground truth of the toy problem, each value checked by an independent method.

The noise level is a standard deviation (``noise_std``); the paper's variances 0.1 and 0.4 appear as
their square roots.
"""

import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from estimator_validation import ground_truth as gt
from estimator_validation.toy_problem import (
    gaussian_bound_limit,
    make_toy,
    population_covariance,
    projection_matrix,
    sample_conditional_entropy,
)


def _expected_log_abs_normal(mean: float, std: float) -> float:
    """E log|Y|, Y ~ N(mean, std^2), from the Poisson mixture form of the noncentral chi-square:
    (Y/std)^2 ~ chi'^2_1(lam), lam = (mean/std)^2, is chi^2_{1+2J} with J ~ Poisson(lam/2), and
    E log chi^2_k = log 2 + digamma(k/2)."""
    lam = (mean / std) ** 2
    j = np.arange(400)
    weights = stats.poisson.pmf(j, lam / 2)
    return math.log(std) + 0.5 * (math.log(2) + float(np.sum(weights * special.digamma(0.5 + j))))


@pytest.mark.parametrize(
    "noise_var,scale,shift", [(0.1, 2.0, 0.5), (0.4, 2.0, 0.5), (0.05, 1.0, 3.0), (1.0, -0.5, 0.0)]
)
def test_conditional_entropy_matches_series(noise_var, scale, shift):
    expected = 0.5 * math.log(2 * math.pi * math.e * noise_var) + _expected_log_abs_normal(shift, abs(scale))
    assert gt.conditional_entropy_1d(math.sqrt(noise_var), scale, shift) == pytest.approx(expected, abs=1e-9)


def _density_z_space(z: float, v: float) -> float:
    """p(z) = int phi_Y(y) N(z; y, v y^2) dy by adaptive quadrature, split where the integrand peaks."""
    sd, c = math.sqrt(v), 1 / math.sqrt(2 * math.pi)

    def integrand(y):
        if y == 0:
            return 0.0
        s = sd * abs(y)
        return c / 2 * math.exp(-0.5 * ((y - 0.5) / 2) ** 2) * c / s * math.exp(-0.5 * ((z - y) / s) ** 2)

    a = abs(z)
    cuts = [-math.inf, -3 * a, -a / 3, 0.0, a / 3, 3 * a, math.inf]
    return sum(
        integrate.quad(integrand, lo, hi, epsabs=1e-12, epsrel=1e-9, limit=200)[0]
        for lo, hi in zip(cuts[:-1], cuts[1:])
        if lo != hi
    )


@pytest.mark.parametrize("noise_var", [0.1, 0.4])
def test_marginal_entropy_matches_z_space_quadrature(noise_var):
    def neg_p_log_p(z):
        p = _density_z_space(z, noise_var)
        return -p * math.log(p) if p > 0 else 0.0

    cuts = [-math.inf, -1.0, 0.0, 1.0, math.inf]  # p(z) has a log singularity at 0: split there
    h = sum(
        integrate.quad(neg_p_log_p, lo, hi, epsabs=1e-9, epsrel=1e-9, limit=200)[0]
        for lo, hi in zip(cuts[:-1], cuts[1:])
    )
    assert gt.marginal_entropy_1d(math.sqrt(noise_var)) == pytest.approx(h, abs=1e-6)


@pytest.mark.parametrize("noise_std", [1e-3, math.sqrt(0.4), 1e2])  # the scripts' range and the paper's 0.4
def test_marginal_density_is_the_density_of_z(noise_std):
    # int p(z) dz over each half-line as int p(s e^w) e^w dw: smooth, unlike p near its singularity at 0
    w = np.linspace(-40.0, 12.0, 400_001)
    mass = sum(np.trapezoid(gt.marginal_density_1d(sign * np.exp(w), noise_std) * np.exp(w), w) for sign in (1.0, -1.0))
    assert mass == pytest.approx(1.0, abs=1e-6)
    # Monte Carlo cross-entropy -E log q(Z) with Z sampled from the model equals h(Z) only if q = p_Z
    rng = np.random.default_rng(1)
    z = (2 * rng.standard_normal(200_000) + 0.5) * (1 + noise_std * rng.standard_normal(200_000))
    logq = np.log(gt.marginal_density_1d(z, noise_std))
    stderr = logq.std() / math.sqrt(z.size)
    assert abs(-logq.mean() - gt.marginal_entropy_1d(noise_std)) < 4 * stderr
    assert stderr < 0.005


def test_toy_truth_values_and_dimensions():
    sd = math.sqrt(0.1)
    one = gt.toy_truth(1, 1, sd)
    assert one["mi"] == pytest.approx(one["h_z"] - one["h_z_given_x"])
    assert one["mi"] == pytest.approx(1.7908, abs=1e-3)
    assert gt.toy_truth(10, 10, sd)["mi"] == pytest.approx(10 * one["mi"])
    assert gt.toy_truth(5, 3, sd)["h_z"] == pytest.approx(3 * one["h_z"])
    assert gt.toy_truth(2, 3, sd) == {"mi": None, "h_z": None, "h_z_given_x": None}
    assert 0 < gt.toy_truth(1, 1, math.sqrt(0.4))["mi"] < one["mi"]  # more noise, less information
    with pytest.raises(ValueError):
        gt.toy_truth(0, 1, sd)
    for bad in (0.0, -0.1, math.nan):
        with pytest.raises(ValueError, match="noise_std"):
            gt.marginal_entropy_1d(bad)
    # the grid's limit: refused with the smallest usable value, which the scripts' range stays above
    with pytest.raises(ValueError, match="noise_std 1e-05 is too small"):
        gt.marginal_entropy_1d(1e-5)
    assert 1e-4 < gt.min_noise_std() < 2e-4


def test_projection_orthonormal_and_truth_for_fewer_output_dims():
    a = projection_matrix(5, 3)
    np.testing.assert_allclose(a @ a.T, np.eye(3), atol=1e-12)
    b = projection_matrix(2, 4)
    np.testing.assert_allclose(b.T @ b, np.eye(2), atol=1e-12)
    np.testing.assert_array_equal(projection_matrix(3, 3), np.eye(3))
    # fdim < dim: f(X) = 2AX + 0.5 has independent N(0.5, 4) coordinates, so h(Z|X) is 3 x 1-D
    noise_std = math.sqrt(0.1)
    data = make_toy(5, 3, 200_000, noise_std, seed=3)
    sd = np.std(np.log(np.abs(data.f)).sum(axis=1)) / math.sqrt(data.n)
    assert abs(sample_conditional_entropy(data.f, noise_std) - gt.toy_truth(5, 3, noise_std)["h_z_given_x"]) < 4 * sd


@pytest.mark.parametrize("dim,fdim", [(2, 2), (4, 2), (2, 3)])
def test_population_covariance_matches_samples(dim, fdim):
    noise_std = math.sqrt(0.4)
    data = make_toy(dim, fdim, 100_000, noise_std, seed=5)
    centred = data.z - data.z.mean(axis=0)
    products = centred[:, :, None] * centred[:, None, :]
    stderr = products.std(axis=0) / math.sqrt(data.n)
    assert np.all(np.abs(products.mean(axis=0) - population_covariance(dim, fdim, noise_std)) < 4 * stderr + 1e-3)
    # the Gaussian has maximal entropy for its covariance: the bound's limit is above the truth
    assert gaussian_bound_limit(1, 1, math.sqrt(0.1)) == pytest.approx(0.5 * math.log(2 * math.pi * math.e * 4.425))
    assert gaussian_bound_limit(dim, min(dim, fdim), noise_std) > gt.toy_truth(dim, min(dim, fdim), noise_std)["h_z"]


def test_mixture_entropy_exact_cases():
    assert gt.mixture_entropy_1d([0.3], [2.0]) == pytest.approx(0.5 * math.log(2 * math.pi * math.e * 4), abs=1e-9)
    h_a, h_b = (0.5 * math.log(2 * math.pi * math.e * s**2) for s in (2.0, 1e-3))
    assert gt.mixture_entropy_1d([0.0, 100.0], [2.0, 1e-3]) == pytest.approx(0.5 * (h_a + h_b) + math.log(2), abs=1e-9)
    with pytest.raises(ValueError, match="positive"):
        gt.mixture_entropy_1d([0.0, 1.0], [1.0, 0.0])


def test_finite_sample_truth_against_monte_carlo():
    noise_std, rng = math.sqrt(0.1), np.random.default_rng(0)
    f = 2 * rng.standard_normal(300) + 0.5
    exact = gt.finite_sample_truth_1d(f, noise_std)
    j = rng.integers(0, f.size, 200_000)
    z = f[j] * (1 + noise_std * rng.standard_normal(j.size))
    s = noise_std * np.abs(f)
    # log N(z; f, s^2) written out: scipy.stats.norm.logpdf's numbers (to 2e-15) in half the time
    logp = (
        np.concatenate(
            [special.logsumexp(-0.5 * ((c[:, None] - f) / s) ** 2 - np.log(s), axis=1) for c in np.array_split(z, 100)]
        )
        - 0.5 * math.log(2 * math.pi)
        - math.log(f.size)
    )
    assert abs(-logp.mean() - exact["h_z"]) < 4 * logp.std() / math.sqrt(z.size)
    assert exact["mi"] <= math.log(f.size)
    assert exact["h_z_given_x"] == pytest.approx(sample_conditional_entropy(f[:, None], noise_std))
    # two well-separated inputs (noise std 0.1: 17 standard deviations apart): I_N = log 2
    assert gt.finite_sample_truth_1d(np.array([-3.0, 4.0]), 0.1)["mi"] == pytest.approx(math.log(2), abs=1e-9)
