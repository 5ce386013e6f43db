"""EDGE against closed forms, numerical integration, exact discrete cases and its warnings."""

import math
import warnings

import numpy as np
import pytest
from scipy import integrate, stats

from mi_estimators.checks import InputError
from mi_estimators.edge import edge_mi, ensemble_weights

N = 4000
SEEDS = range(6)
# Measured bias of the default settings at N = 4000 (10 seeds): independent +0.009, rho = 0.5 +0.009,
# rho = 0.9 -0.010, four-class labels +0.003 nats. The allowance below is twice the largest of these.
BIAS = 0.03


def correlated_gaussians(rho, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    return x, rho * x + math.sqrt(1 - rho**2) * rng.standard_normal(n)


def no_warnings(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_correlated_gaussians_closed_form(rho):
    true = -0.5 * math.log(1 - rho**2)
    est = np.array([no_warnings(edge_mi, *correlated_gaussians(rho, N, 50 + s), seed=s).mi for s in SEEDS])
    stderr = est.std(ddof=1) / math.sqrt(len(est))
    assert abs(est.mean() - true) <= 4 * stderr + BIAS, (est.mean(), true, stderr)


def test_discrete_labels_against_quadrature():
    # Z | Y=c ~ N(2c, 1), Y uniform on 4 classes: I = h(Z) - 1/2 log(2 pi e), h(Z) by quadrature.
    def p(z):
        return sum(stats.norm.pdf(z, 2 * c) for c in range(4)) / 4

    h_z = integrate.quad(lambda z: -p(z) * math.log(p(z)), -12, 18, limit=200)[0]
    true = h_z - 0.5 * math.log(2 * math.pi * math.e)
    est = []
    for s in SEEDS:
        rng = np.random.default_rng(s)
        y = rng.integers(0, 4, N)
        est.append(no_warnings(edge_mi, 2 * y + rng.standard_normal(N), y, discrete_y=True, seed=s).mi)
    est = np.array(est)
    assert abs(est.mean() - true) <= 4 * est.std(ddof=1) / math.sqrt(len(est)) + BIAS


def separated_classes():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 500)
    return 100.0 * y + rng.standard_normal(2000), y


def test_separated_classes_give_h_y_exactly():
    # Every bucket holds one class, so each base estimate is H(Y) = log 4 and the weights sum to 1.
    res = no_warnings(edge_mi, *separated_classes(), discrete_y=True)
    assert res.mi == pytest.approx(math.log(4), abs=1e-9)
    assert res.params["hashed_dims"] == 1
    assert sum(res.params["weights"]) == pytest.approx(1.0)


def test_cap_warning_and_capped_value():
    # Every edge has log ratio log 4 > U = 1, so every base estimate is capped to exactly U.
    with pytest.warns(UserWarning, match="cap U=1.0"):
        res = edge_mi(*separated_classes(), discrete_y=True, U=1.0)
    assert res.mi == pytest.approx(1.0, abs=1e-9)
    assert max(res.params["capped_weight_fraction"]) == pytest.approx(1.0)


def test_sparse_buckets_warning_in_high_dimension():
    rng = np.random.default_rng(0)
    with pytest.warns(UserWarning, match="samples per occupied joint bucket"):
        res = edge_mi(rng.standard_normal((500, 3)), rng.standard_normal((500, 3)))
    assert res.params["hashed_dims"] == 6


def test_wide_inputs_are_projected():
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = edge_mi(rng.standard_normal((1280, 40)), rng.integers(0, 3, 1280), discrete_y=True)
    assert res.params["x_hashed_dims"] == 7  # floor(log2(1280 / 10))


def test_ensemble_weights_cancel_the_bias_terms():
    t = np.linspace(1, 4, 12)
    w = ensemble_weights(t, (2.0, -2.0))
    assert w.sum() == pytest.approx(1.0)
    assert w @ t**2 == pytest.approx(0.0, abs=1e-9) and w @ t**-2.0 == pytest.approx(0.0, abs=1e-9)
    # A base estimate I + a t^2 + b t^-2 is recovered exactly.
    assert w @ (0.7 + 0.3 * t**2 - 0.2 * t**-2.0) == pytest.approx(0.7)
    with pytest.raises(InputError, match="cannot be met"):
        ensemble_weights(t, (0.0,))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(U=0.0), "must be a finite number > 0"),
        (dict(U=float("nan")), "must be a finite number > 0"),
        (dict(U="big"), "U must be a number"),
        (dict(bandwidth=-1.0), "must be a finite number > 0"),
        (dict(t_max=1.0), "exceed 1"),
        (dict(n_bandwidths=2), "n_bandwidths"),
        (dict(n_bandwidths=5.0), "n_bandwidths"),
        (dict(bias_powers=(0.0,)), "cannot be met"),
    ],
)
def test_bad_options(kwargs, match):
    x, y = correlated_gaussians(0.5, 100, 0)
    with pytest.raises(InputError, match=match):
        edge_mi(x, y, **kwargs)


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.zeros(100), np.zeros(99), "same number of rows"),
        (np.arange(10.0), np.arange(10.0), "at least 20"),
        (np.r_[np.nan, np.arange(99.0)], np.arange(100.0), "NaN"),
        (np.arange(100.0), np.r_[np.inf, np.arange(99.0)], "NaN/inf"),
        (np.zeros((100, 2, 2)), np.arange(100.0), "2-D"),
    ],
)
def test_bad_arrays(x, y, match):
    with pytest.raises(InputError, match=match):
        edge_mi(x, y)
