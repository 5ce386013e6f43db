"""Kolchinsky-Tracey pairwise bounds: limiting cases, a brute-force reference and an exact 1-D case."""

import math

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.special import logsumexp

from mi_estimators.kde import kde_mi_bounds


def brute_force(h, var, labels=None):
    """Saxe et al.'s formulas with a full squared-distance matrix in float64; ``var`` = noise_std^2."""
    sq = ((h[:, None, :] - h[None, :, :]) ** 2).sum(-1)
    n = len(h)
    log_p = logsumexp(-sq / (2 * var), axis=1) - math.log(n)
    if labels is None:
        return -log_p.mean(), None
    same = labels[:, None] == labels[None, :]
    log_own = logsumexp(np.where(same, -sq / (2 * var), -np.inf), axis=1) - np.log(same.sum(1))
    return -log_p.mean(), np.mean(log_own - log_p)


def test_matches_brute_force_with_and_without_labels():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((300, 5))
    labels = rng.integers(0, 3, 300)
    res = kde_mi_bounds(h, math.sqrt(0.5), labels, dtype="float64")
    up_xz, up_zy = brute_force(h, 0.5, labels)
    lo_xz, lo_zy = brute_force(h, 2.0, labels)
    assert res.mi_xz == pytest.approx(up_xz, rel=1e-9)
    assert res.mi_zy == pytest.approx(up_zy, rel=1e-9)
    assert res.params["mi_xz_lower"] == pytest.approx(lo_xz, rel=1e-9)
    assert res.params["mi_zy_lower"] == pytest.approx(lo_zy, rel=1e-9)
    assert res.h_z_given_x == pytest.approx(2.5 * math.log(2 * math.pi * math.e * 0.5))
    # h(T) bound minus h(T|X) is the I(X;T) bound.
    assert res.h_z - res.h_z_given_x == pytest.approx(res.mi_xz, rel=1e-9)
    # float32 (the kernel's default) agrees to float32 accuracy.
    assert kde_mi_bounds(h, math.sqrt(0.5), labels).mi_xz == pytest.approx(up_xz, rel=1e-4)


def test_identical_points_give_zero():
    for h in (np.zeros((2, 3)), np.full((50, 4), 1.7)):
        res = kde_mi_bounds(h, 0.1, labels=np.arange(len(h)) % 2)
        assert res.mi_xz == pytest.approx(0.0, abs=1e-6)
        assert res.params["mi_xz_lower"] == pytest.approx(0.0, abs=1e-6)
        assert res.mi_zy == pytest.approx(0.0, abs=1e-6)


def test_far_apart_points_give_log_n_and_h_y():
    h = 1e3 * np.arange(40.0)[:, None] * np.ones((1, 2))
    labels = np.arange(40) % 4
    res = kde_mi_bounds(h, 1.0, labels)
    assert res.mi_xz == pytest.approx(math.log(40), abs=1e-5)
    assert res.params["mi_xz_lower"] == pytest.approx(math.log(40), abs=1e-5)
    assert res.mi_zy == pytest.approx(math.log(4), abs=1e-5)
    assert res.h_y == pytest.approx(math.log(4))


@pytest.mark.parametrize("a", [0.3, 1.0, 2.5])
def test_two_points_exact_value_lies_between_bounds(a):
    # X uniform on {0, 1}, h = (0, a), var 1: I(X;T) = h(T) - 1/2 log(2 pi e), h(T) by quadrature.
    def p(t):
        return 0.5 * (stats.norm.pdf(t) + stats.norm.pdf(t, a))

    h_t = integrate.quad(lambda t: -p(t) * math.log(p(t)), -12, 12 + a)[0]
    exact = h_t - 0.5 * math.log(2 * math.pi * math.e)
    res = kde_mi_bounds(np.array([[0.0], [a]]), 1.0, dtype="float64")
    assert res.mi_xz == pytest.approx(math.log(2) - math.log1p(math.exp(-a * a / 2)), rel=1e-12)
    assert res.params["mi_xz_lower"] == pytest.approx(math.log(2) - math.log1p(math.exp(-a * a / 8)), rel=1e-12)
    assert res.params["mi_xz_lower"] < exact < res.mi_xz


def test_lower_below_upper_and_both_within_limits():
    rng = np.random.default_rng(1)
    h = rng.standard_normal((400, 8))
    labels = rng.integers(0, 5, 400)
    for std in (0.1, 0.55, 3.2):
        res = kde_mi_bounds(h, std, labels)
        assert 0 <= res.params["mi_xz_lower"] <= res.mi_xz <= res.log_n + 1e-6
        assert -1e-6 <= res.params["mi_zy_lower"] and res.mi_zy <= res.h_y + 1e-6


def test_json_ready():
    import json

    json.dumps(kde_mi_bounds(np.eye(3), 0.1, [0, 1, 1]).to_dict())


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.eye(3), 0.0), "noise_std must be a finite number > 0.*deterministic"),
        ((np.eye(3), -1.0), "noise_std must be a finite number > 0"),
        ((np.eye(3), float("inf")), "noise_std must be a finite number > 0"),
        ((np.eye(3), "loud"), "noise_std must be a number"),
        ((np.array([[0.0, np.nan], [1.0, 1.0]]), 0.1), "NaN"),
        ((np.zeros((3, 2, 2)), 0.1), "2-D"),
        ((np.zeros((0, 2)), 0.1), "rows"),
        ((np.eye(3), 0.1, [0, 1]), "entries"),
        ((np.eye(3), 0.1, [0.5, 1, 1]), "integer"),
    ],
)
def test_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        kde_mi_bounds(*args)
