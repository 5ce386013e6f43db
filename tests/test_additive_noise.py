"""Additive Gaussian noise Z = f(X) + sigma e (Keras' GaussianNoise; Goldfeld et al., ICML 2019) and the
Gaussian dropout noise level given as a rate p or a standard deviation.

Known answers: for Gaussian X ~ N(0, S) and f = A x, I(X; Z) = 1/2 log det(I + A S A^T / sigma^2) in
closed form; the pairwise-distance bounds of Kolchinsky & Tracey bracket the same finite-sample I_N
that the mixture estimates; identical codes give 0 and far-apart codes log N.
"""

import math

import numpy as np
import pytest

from mi_estimators import additive_noise_mi, gaussian_dropout_mi, kde_mi_bounds, noisy_representations
from mi_estimators.checks import InputError
from mi_estimators.dropout_MI import estimate_layer_mi
from mi_estimators.noise import standard_normal_draws
from mi_estimators.upper_bound import gaussian_dropout_upper_bound

SEEDS = range(10)


def gaussian_problem(d: int, seed: int, n: int) -> tuple[np.ndarray, float]:
    """f = A x for x ~ N(0, I_d) and a fixed random A, and the closed-form I(X; f + e) at sigma = 1."""
    a = np.random.default_rng(100 + d).standard_normal((d, d)) / math.sqrt(d)
    x = np.random.default_rng([seed, d]).standard_normal((n, d))
    truth = 0.5 * np.linalg.slogdet(np.eye(d) + a @ a.T)[1]
    return x @ a.T, float(truth)


def _total(stderr: float, sampling: float) -> float:
    return math.hypot(stderr, sampling)


@pytest.mark.parametrize("d", [1, 2, 4])
def test_the_bracket_holds_the_closed_form_truth_over_seeds(d):
    """In every one of 10 input seeds, lower - 3 errors <= truth <= upper + 3 errors, and the bracket is
    narrow (the truth is far below log N), so the lower side alone sits within its errors of it."""
    lowers = []
    for seed in SEEDS:
        f, truth = gaussian_problem(d, seed, n=1500)
        r = additive_noise_mi(f, noise_std=1.0, draws=2, seed=seed)
        lower_err = _total(r.mi_xz_stderr, r.mi_xz_sampling_stderr)
        upper_err = _total(r.mi_xz_upper_stderr, r.mi_xz_upper_sampling_stderr)
        assert r.mi_xz - 3 * lower_err <= truth <= r.mi_xz_upper + 3 * upper_err, (seed, r.mi_xz, truth)
        assert r.mi_xz_upper - r.mi_xz < 0.1 * truth + 0.02
        assert r.h_z_given_x == pytest.approx(d * (0.5 * math.log(2 * math.pi * math.e)))
        lowers.append((r.mi_xz - truth) / lower_err)
    # the errors are calibrated, not merely wide: the standardised deviations have a spread near 1
    assert 0.3 < np.std(lowers) < 2.0, lowers


def test_the_truth_moves_with_the_noise():
    f, _ = gaussian_problem(2, 0, n=1500)
    a = np.random.default_rng(102).standard_normal((2, 2)) / math.sqrt(2)
    for sigma in (0.5, 2.0):
        truth = 0.5 * np.linalg.slogdet(np.eye(2) + a @ a.T / sigma**2)[1]
        r = additive_noise_mi(f, noise_std=sigma, draws=2)
        assert r.mi_xz - 3 * _total(r.mi_xz_stderr, r.mi_xz_sampling_stderr) <= truth
        assert truth <= r.mi_xz_upper + 3 * _total(r.mi_xz_upper_stderr, r.mi_xz_upper_sampling_stderr)


def test_within_the_pairwise_distance_bounds_of_the_same_inputs():
    """KDE lower (Bhattacharyya) <= I_N <= KDE upper (KL) for the same N inputs; the mixture estimates I_N,
    so with the Monte Carlo error alone (inputs fixed) it lies between them."""
    rng = np.random.default_rng(5)
    f = np.repeat(rng.standard_normal((40, 3)) * 3, 10, axis=0) + 0.3 * rng.standard_normal((400, 3))
    labels = np.repeat(np.arange(40) % 4, 10)
    r = additive_noise_mi(f, noise_std=0.7, labels=labels, draws=8, seed=1)
    bounds = kde_mi_bounds(f, 0.7, labels)
    lower, upper = bounds.params["mi_xz_lower"], bounds.mi_xz
    assert lower < upper - 0.2
    assert lower - 3 * r.mi_xz_stderr <= r.mi_xz <= upper + 3 * r.mi_xz_stderr
    assert 0 <= r.mi_zy <= r.h_y + 3 * r.mi_zy_stderr


def test_limiting_cases():
    same = np.ones((300, 4))
    r = additive_noise_mi(same, noise_std=0.5, draws=2)
    rounding = r.params["kernel_max_error_bound"]
    assert abs(r.mi_xz) <= rounding and abs(r.mi_xz_upper) <= rounding and not r.warnings
    far = np.arange(300.0)[:, None] * np.array([[100.0, 0.0]])
    r = additive_noise_mi(far, noise_std=0.1, labels=np.arange(300) % 3, draws=2)
    assert r.mi_xz == pytest.approx(math.log(300), abs=1e-6)
    assert r.mi_zy == pytest.approx(math.log(3), abs=1e-6)
    with_zeros = np.zeros((50, 2))
    with_zeros[:25] = 1.0
    assert additive_noise_mi(with_zeros, noise_std=1.0).mi_xz > 0  # zeros are fine for additive noise


def test_bad_input_is_refused():
    f = np.ones((10, 2))
    with pytest.raises(InputError, match="noise_std"):
        additive_noise_mi(f, noise_std=0.0)
    with pytest.raises(InputError, match="NaN"):
        additive_noise_mi(np.full((10, 2), np.nan), noise_std=1.0)
    with pytest.raises(InputError, match="unknown option"):
        additive_noise_mi(f, noise_std=1.0, clip_min=1e-3)


def test_a_config_entry_of_additive_noise_dispatches_to_it():
    f, _ = gaussian_problem(2, 0, n=200)
    layer = {"name": "noise", "dropout": "additive", "noise_std": 1.0, "p": None}
    via_layer = estimate_layer_mi(layer, f, clip_min=1e-6, draws=2)
    direct = additive_noise_mi(f, noise_std=1.0, draws=2)
    assert via_layer.mi_xz == direct.mi_xz and via_layer.params["dropout"] == "additive"


def test_the_noisy_draw_is_the_mixture_draw():
    f = np.random.default_rng(0).standard_normal((30, 3))
    z = noisy_representations(f, additive_std=0.5, seed=4)
    eps = standard_normal_draws(4, np.arange(30), np.zeros(30, dtype=int), 3)
    np.testing.assert_array_equal(z, f + 0.5 * eps)
    with pytest.raises(InputError, match="exactly one"):
        noisy_representations(f, additive_std=0.5, noise_std=0.5)


def test_a_dropout_rate_or_a_standard_deviation_never_both():
    f = np.abs(np.random.default_rng(1).standard_normal((200, 3))) + 0.1
    by_rate = gaussian_dropout_mi(f, p=0.2, draws=2)
    by_std = gaussian_dropout_mi(f, noise_std=0.5, draws=2)
    assert by_rate.mi_xz == by_std.mi_xz
    assert by_rate.params["noise_std"] == pytest.approx(0.5) and by_std.params["p"] == pytest.approx(0.2)
    assert gaussian_dropout_mi(f, 0.5).mi_xz == gaussian_dropout_mi(f, noise_std=0.5).mi_xz  # positional sigma
    bound = gaussian_dropout_upper_bound(f, p=0.5)
    assert bound.params["noise_std"] == pytest.approx(1.0) and bound.params["p"] == pytest.approx(0.5)
    np.testing.assert_array_equal(noisy_representations(f, p=0.2), noisy_representations(f, noise_std=0.5))
    for kwargs, match in [
        ({}, "exactly one of noise_std"),
        ({"noise_std": 0.5, "p": 0.2}, "exactly one of noise_std"),
        ({"p": 1.0}, "dropout rate in"),
        ({"p": -0.1}, "p must be"),
        ({"p": "0.2"}, "p must be a number"),
    ]:
        with pytest.raises(InputError, match=match):
            gaussian_dropout_mi(f, **kwargs)
