"""The Ledoit-Wolf Gaussian upper bound on h(Z) and I(X;Z)."""

import math

import numpy as np
import pytest

from mi_estimators.checks import InputError
from mi_estimators.dropout_MI import gaussian_dropout_mi
from mi_estimators.upper_bound import gaussian_dropout_upper_bound, gaussian_entropy_upper_bound
from tests.oracles import toy_truth

K_SE = 4.0


def _log_var_sd(z):
    """Sampling standard deviation of 1/2 log of the sample variance (delta method), per coordinate."""
    c = z - z.mean(axis=0)
    return 0.5 * np.sqrt(((c**2).var(axis=0) / len(z))) / (c**2).mean(axis=0)


def test_gaussian_points_give_their_entropy():
    rng = np.random.default_rng(0)
    cov = np.array([[2.0, 0.6, 0.0], [0.6, 1.0, 0.3], [0.0, 0.3, 0.5]])
    z = rng.multivariate_normal(np.zeros(3), cov, size=20_000)
    res = gaussian_entropy_upper_bound(z)
    truth = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * cov)[1]
    assert abs(res.h_z - truth) < K_SE * math.sqrt(3 / (2 * len(z)))
    assert res.params["covariance"] == "ledoit_wolf" and 0 <= res.params["shrinkage"] <= 1


@pytest.mark.parametrize("v", [0.1, 0.4])
def test_bound_is_above_the_truth_on_the_toy_problem(v):
    n = 20_000
    x = np.random.default_rng(1).standard_normal((n, 1))
    res = gaussian_dropout_upper_bound(2 * x + 0.5, math.sqrt(v), draws=2, seed=3)
    z = (2 * x + 0.5) * (1 + math.sqrt(v) * np.random.default_rng(3).standard_normal((n, 2, 1))[:, :, 0])
    sd = _log_var_sd(z.reshape(-1, 1))[0]
    assert res.mi_xz >= toy_truth(v) - K_SE * sd
    assert res.mi_xz < toy_truth(v) + 0.25  # loose but sane (gaps seen: 0.013, 0.10)
    assert res.log_n == pytest.approx(math.log(n)) and res.h_z_given_x < res.h_z


def test_bound_is_above_the_mixture_entropy():
    rng = np.random.default_rng(2)
    f = np.log1p(np.exp(rng.standard_normal((2000, 4)) + 1))
    bound = gaussian_dropout_upper_bound(f, 0.5, draws=3, seed=4)
    mixture = gaussian_dropout_mi(f, 0.5, draws=3, seed=4)
    assert bound.h_z_given_x == pytest.approx(mixture.h_z_given_x)
    assert bound.h_z >= mixture.h_z - K_SE * mixture.h_z_stderr
    assert bound.mi_xz >= mixture.mi_xz - K_SE * mixture.mi_xz_stderr


def test_points_that_do_not_vary_are_refused():
    with pytest.raises(InputError, match="z does not vary"):
        gaussian_entropy_upper_bound(np.ones((10, 3)))


def test_huge_values_give_the_scaled_bound():
    """h(cZ) = h(Z) + d log c, also where Ledoit-Wolf's fourth powers of cZ would overflow."""
    z = np.random.default_rng(3).standard_normal((200, 3))
    base = gaussian_entropy_upper_bound(z).h_z
    for c in (1e-100, 1e100, 1e140):
        assert gaussian_entropy_upper_bound(c * z).h_z == pytest.approx(base + 3 * math.log(c), rel=1e-12)


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: gaussian_entropy_upper_bound(np.ones((1, 3))), "at least 2"),
        (lambda: gaussian_entropy_upper_bound(np.full((5, 2), np.nan)), "NaN"),
        (lambda: gaussian_dropout_upper_bound(np.ones((5, 2)), 0.0), "noise_std"),
        (lambda: gaussian_dropout_upper_bound(np.ones((5, 2)), -1.0), "noise_std"),
        (lambda: gaussian_dropout_upper_bound(np.ones((5, 2)), 0.5, draws=0), "draws"),
        (lambda: gaussian_dropout_upper_bound(np.ones((1, 2)), 0.5), "at least 2"),
    ],
)
def test_bad_input(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_zero_codes_are_refused():
    with pytest.raises(InputError, match="exactly-zero"):
        gaussian_dropout_upper_bound(np.zeros((5, 2)), 0.5)
