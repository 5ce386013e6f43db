"""The dropout mixture estimator against ground truth (the paper's toy problem), against brute-force
I_N, and in its limiting cases.

Tolerances are multiples of the reported errors. Two targets (docs/estimators.md, "Reading a point"): the Monte Carlo
error ``*_stderr`` is tested against I_N, the MI for X uniform over the given inputs (computed
independently by brute force, tests/oracles.py); the population truth is tested with the total error
(Monte Carlo and input sampling in quadrature). Calibration is checked over 30 seeds, never one.
"""

import dataclasses
import math

import numpy as np
import pytest
from scipy.special import logsumexp

from mi_estimators.checks import InputError
from mi_estimators.dropout_MI import (
    ImplausibleEstimateWarning,
    estimate_layer_mi,
    gaussian_dropout_mi,
    implausible,
    information_dropout_mi,
)
from mi_estimators.noise import noisy_representations, standard_normal_draws
from mi_estimators.results import MIResult
from tests.oracles import TOY_TRUTH, component_log_densities, discrete_truth, mi_n_brute_force

K_SE = 4.0
SEEDS = range(30)


def _total(res, q="xz"):
    return math.hypot(getattr(res, f"mi_{q}_stderr"), getattr(res, f"mi_{q}_sampling_stderr"))


def _toy(n, seed, dim=1):
    return 2 * np.random.default_rng(seed).standard_normal((n, dim)) + 0.5


def test_toy_problem_1d_against_the_population_truth_with_the_total_error():
    """Calibration: input seeds 1-10, v = 0.1, N = 5000, 2 draws: within 3 total errors of 1.7908."""
    hits = []
    for seed in range(1, 11):
        res = gaussian_dropout_mi(_toy(5000, seed), math.sqrt(0.1), draws=2, seed=seed, nested=False)
        assert res.mi_xz_sampling_stderr > res.mi_xz_stderr  # the input draw dominates here
        hits.append(abs(res.mi_xz - TOY_TRUTH[0.1]) < 3 * _total(res))
    assert sum(hits) >= 9, hits


@pytest.mark.parametrize("draws", [1, 2])
def test_sampling_error_matches_the_spread_over_input_draws(draws):
    """30 independent input draws (N = 1000): the reported total error matches the real spread."""
    results = [
        gaussian_dropout_mi(_toy(1000, 100 + s), math.sqrt(0.1), draws=draws, seed=s, nested=False) for s in SEEDS
    ]
    values = np.array([r.mi_xz for r in results])
    total = np.array([_total(r) for r in results])
    assert 0.6 < values.std(ddof=1) / total.mean() < 1.6
    assert np.mean(np.abs(values - TOY_TRUTH[0.1]) < 3 * total) >= 27 / 30


def test_sampling_error_of_label_information_matches_the_spread():
    def draw(seed):
        rng = np.random.default_rng(seed)
        labels = rng.integers(0, 3, 800)
        return np.log1p(np.exp(labels[:, None] + rng.standard_normal((800, 2)))), labels

    results = []
    for s in SEEDS:
        f, labels = draw(200 + s)
        results.append(gaussian_dropout_mi(f, 0.5, labels, draws=2, seed=s, nested=False))
    values = np.array([r.mi_zy for r in results])
    total = np.array([_total(r, "zy") for r in results])
    assert 0.6 < values.std(ddof=1) / total.mean() < 1.6


@pytest.mark.parametrize("draws", [1, 3])
def test_monte_carlo_error_covers_brute_force_i_n(draws):
    """Inputs fixed, 30 noise seeds: the Monte Carlo error is the error of I_N (brute force, float64).

    The per-draw terms of the 1-D toy problem are heavy-tailed in both directions (components of
    |f| near 0 are arbitrarily narrow spikes), so the spread is measured robustly (1.4826 MAD)."""
    f = _toy(1000, 7)
    i_n, i_n_se = mi_n_brute_force(f, math.sqrt(0.1) * np.abs(f), draws=100, seed=1)
    results = [gaussian_dropout_mi(f, math.sqrt(0.1), draws=draws, seed=s, nested=False) for s in SEEDS]
    values, errors = np.array([r.mi_xz for r in results]), np.array([r.mi_xz_stderr for r in results])
    spread = 1.4826 * np.median(np.abs(values - np.median(values)))
    assert 0.5 < spread / errors.mean() < 2.0
    assert np.mean(np.abs(values - i_n) < 3 * np.hypot(errors, i_n_se)) >= 27 / 30


def test_one_draw_per_input_is_calibrated_on_separated_heavy_tailed_codes():
    """Calibration: f = exp(3 e), N = 500, 16 units, noise std 0.5, one draw, 30 seeds."""
    f = np.exp(3 * np.random.default_rng(0).standard_normal((500, 16)))
    results = [gaussian_dropout_mi(f, 0.5, draws=1, seed=s, nested=False) for s in SEEDS]
    values, errors = np.array([r.mi_xz for r in results]), np.array([r.mi_xz_stderr for r in results])
    spread = values.std(ddof=1)
    # Here every draw sits in its own component (terms log N - O(1e-9)); below ROUNDING the spread between
    # seeds is floating-point rounding, which the kernel bounds separately (params["kernel_max_error_bound"]).
    rounding = 1e-6
    assert errors.mean() <= 2 * spread + rounding and spread <= 2 * errors.mean() + rounding
    assert (values <= math.log(500) + np.maximum(2 * errors, 0.01)).all()
    i_n, _ = mi_n_brute_force(f, 0.5 * f, draws=20, seed=2)
    assert abs(values.mean() - i_n) < 1e-6
    for r in results:  # at least as good as the plain paired form
        assert r.mi_xz_stderr <= 1.01 * r.params["mi_xz_paired_stderr"] + 1e-12


def test_saturation_flags_estimates_limited_by_the_number_of_inputs():
    limited = gaussian_dropout_mi(_toy(2000, 4, dim=50), math.sqrt(0.1), draws=2, seed=5)
    assert 50 * TOY_TRUTH[0.1] > limited.log_n + 10  # the true value is far above the ceiling
    assert limited.log_n - 0.01 < limited.mi_xz <= limited.log_n + 1e-9
    assert limited.saturation == pytest.approx(1.0, abs=0.01)
    ns = [p["n"] for p in limited.params["convergence"]]
    assert ns == [125, 500, 2000]
    free = gaussian_dropout_mi(_toy(8000, 3), math.sqrt(0.1), draws=2, seed=6)
    assert abs(free.saturation) < 4 * free.params["saturation_stderr"] + 0.05
    assert free.params["convergence"][-1]["mi_xz"] == free.mi_xz


def test_convergence_subsets_are_nested_and_fixed():
    """The same subsets (and noise) every call: consecutive epochs of a run are comparable."""
    f = np.log1p(np.exp(np.random.default_rng(9).standard_normal((640, 4))))
    a = gaussian_dropout_mi(f, 0.5, draws=2, seed=3)
    b = gaussian_dropout_mi(f, 0.5, draws=2, seed=3)
    assert a.params["convergence"] == b.params["convergence"] and a.saturation == b.saturation
    assert [p["n"] for p in a.params["convergence"]] == [40, 160, 640]
    assert gaussian_dropout_mi(f[:20], 0.5).saturation is None  # too few inputs for N/4 >= 8 ... and N/16
    assert gaussian_dropout_mi(f, 0.5, nested=False).params.get("convergence") is None


def test_baselines_see_the_mixture_estimates_first_noise_draw():
    f = np.log1p(np.exp(np.random.default_rng(10).standard_normal((3000, 5))))
    z = noisy_representations(f, noise_std=0.5, seed=4)
    eps = standard_normal_draws(4, np.arange(3000), np.zeros(3000, dtype=int), 5)
    np.testing.assert_array_equal(z, f * (1 + 0.5 * eps))
    np.testing.assert_array_equal(noisy_representations(f[:100], noise_std=0.5, seed=4), z[:100])
    alphas = np.full(f.shape, 0.3)
    np.testing.assert_allclose(noisy_representations(f, alphas=alphas, seed=4), f * np.exp(0.3 * eps))
    with pytest.raises(ValueError, match="exactly one"):
        noisy_representations(f, seed=4)


def test_params_count_draws_per_input_and_noisy_points():
    f = _toy(400, 1)
    res = gaussian_dropout_mi(f, 0.5, draws=3, nested=False)
    assert res.n_inputs == 400 and res.params["draws"] == 3
    assert res.params["points"] == 1200 and res.params["pilot_inputs"] == 0
    one = gaussian_dropout_mi(f, 0.5, nested=False)  # pilot inputs get a second draw
    assert one.params["draws"] == 1 and one.params["pilot_inputs"] > 0
    assert one.params["points"] == 400 + one.params["pilot_inputs"]


def test_identical_representations_give_zero():
    f = np.tile(np.array([[0.3, 1.2, 2.0, 0.7]]), (400, 1))
    labels = np.arange(400) % 4
    res = gaussian_dropout_mi(f, 0.5, labels, draws=3)
    assert abs(res.mi_xz) < 1e-6 and abs(res.mi_zy) < 1e-6
    assert res.h_y == pytest.approx(math.log(4))


def test_well_separated_components_give_log_n():
    n = 300
    f = np.exp(0.1 * np.arange(n))[:, None] * np.ones((1, 3))  # 10% apart, noise 0.1%
    labels = np.arange(n) % 3
    # The leave-one-out sums of the nested N/16 subset are e^-1e18 (neighbours 10^12 apart in units of
    # their width): no float64 evaluation is within atol of that, and the kernel says so.
    with pytest.warns(RuntimeWarning, match="rounding-error bound above atol"):
        res = gaussian_dropout_mi(f, 1e-3, labels, draws=2)
    assert res.mi_xz_upper > 1000 * math.log(n)
    assert res.mi_xz == pytest.approx(math.log(n), abs=1e-6)
    assert res.mi_zy == pytest.approx(res.h_y, abs=1e-6)


def test_label_information_at_most_h_y():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, 3000)
    f = np.log1p(np.exp(labels[:, None] + rng.standard_normal((3000, 4))))
    res = gaussian_dropout_mi(f, 0.5, labels, draws=2)
    assert 10 * res.mi_zy_stderr < res.mi_zy <= res.h_y + K_SE * res.mi_zy_stderr
    assert res.mi_zy < res.h_y - 0.1  # overlapping classes: strictly below H(Y)
    assert res.h_z_given_y == pytest.approx(res.h_z - res.mi_zy)


def test_scaling_f_leaves_mi_unchanged():
    rng = np.random.default_rng(8)
    f = np.log1p(np.exp(rng.standard_normal((1500, 6))))
    labels = rng.integers(0, 4, 1500)
    a = gaussian_dropout_mi(f, 0.6, labels, draws=2, seed=9)
    b = gaussian_dropout_mi(7.3 * f, 0.6, labels, draws=2, seed=9)
    assert b.mi_xz == pytest.approx(a.mi_xz, abs=1e-5)
    assert b.mi_zy == pytest.approx(a.mi_zy, abs=1e-5)
    assert b.h_z - a.h_z == pytest.approx(6 * math.log(7.3), abs=1e-5)


def test_control_variate_is_never_worse_than_either_form():
    """Evidence for the estimator choice: unpaired wins in 1-D, paired in high dimension."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3000, 1))
    low = gaussian_dropout_mi(2 * x + 0.5, math.sqrt(0.1), draws=3)
    f = np.log1p(np.exp(rng.standard_normal((2000, 32))))
    high = gaussian_dropout_mi(f, 0.5, draws=3)
    assert low.params["mi_xz_unpaired_stderr"] < 0.7 * low.params["mi_xz_paired_stderr"]
    assert high.params["mi_xz_paired_stderr"] < 0.1 * high.params["mi_xz_unpaired_stderr"]
    for res in (low, high):
        best = min(res.params["mi_xz_paired_stderr"], res.params["mi_xz_unpaired_stderr"])
        assert res.mi_xz_stderr <= 1.01 * best
        for form in ("paired", "unpaired"):
            se = math.hypot(res.mi_xz_stderr, res.params[f"mi_xz_{form}_stderr"])
            assert abs(res.mi_xz - res.params[f"mi_xz_{form}"]) < K_SE * se


def test_information_dropout_against_quadrature():
    f = np.array([[0.5], [1.0], [1.6], [4.0]])
    alpha = np.array([[0.3], [0.5], [0.2], [0.4]])
    labels = np.array([0, 0, 1, 1])
    res = information_dropout_mi(f, alpha, labels, draws=20_000, seed=1)
    mi_xz, mi_zy = discrete_truth(np.log(f[:, 0]), alpha[:, 0], labels)
    assert abs(res.mi_xz - mi_xz) < K_SE * res.mi_xz_stderr
    assert abs(res.mi_zy - mi_zy) < K_SE * res.mi_zy_stderr
    assert res.mi_xz_stderr < 0.01 and res.params["space"] == "log"


def test_gaussian_dropout_discrete_inputs_against_quadrature():
    f = np.array([[-1.0], [0.5], [0.8], [2.0], [2.3]])
    labels = np.array([0, 1, 1, 0, 1])
    res = gaussian_dropout_mi(f, 0.3, labels, draws=20_000, seed=2)
    mi_xz, mi_zy = discrete_truth(f[:, 0], 0.3 * np.abs(f[:, 0]), labels)
    assert abs(res.mi_xz - mi_xz) < K_SE * res.mi_xz_stderr
    assert abs(res.mi_zy - mi_zy) < K_SE * res.mi_zy_stderr
    # One draw per input (pilot draws measure the Monte Carlo error): 2000 copies of each input, same mixture.
    once = gaussian_dropout_mi(np.repeat(f, 2000, axis=0), 0.3, np.repeat(labels, 2000), draws=1, seed=3, nested=False)
    assert abs(once.mi_xz - mi_xz) < K_SE * once.mi_xz_stderr < 0.05
    assert abs(once.mi_zy - mi_zy) < K_SE * once.mi_zy_stderr


def test_information_dropout_equals_direct_log_space_loop():
    """Same noise (documented convention), log densities by a direct float64 loop: paired form agrees."""
    rng = np.random.default_rng(12)
    n, d, r = 60, 3, 4
    f = np.exp(rng.standard_normal((n, d)))
    alpha = rng.uniform(0.1, 0.7, (n, d))
    res = information_dropout_mi(f, alpha, draws=r, seed=13, nested=False)
    eps = standard_normal_draws(13, np.repeat(np.arange(n), r), np.tile(np.arange(r), n), d).reshape(n, r, d)
    mu = np.log(f)
    y = (mu[:, None] + alpha[:, None] * eps).reshape(-1, d)
    logs = component_log_densities(y, mu, alpha)
    own = np.repeat(np.arange(n), r)
    terms = logs[np.arange(n * r), own] - (logsumexp(logs, axis=1) - np.log(n))
    assert res.params["mi_xz_paired"] == pytest.approx(np.mean(terms), abs=1e-6)


def test_memory_blocks_and_seed():
    rng = np.random.default_rng(14)
    f = np.log1p(np.exp(rng.standard_normal((800, 8))))
    labels = rng.integers(0, 2, 800)
    a = gaussian_dropout_mi(f, 0.4, labels, draws=3, seed=1)
    b = gaussian_dropout_mi(f, 0.4, labels, draws=3, seed=1, max_memory_mb=0.05, progress=True)
    c = gaussian_dropout_mi(f, 0.4, labels, draws=3, seed=2)
    assert b.mi_xz == pytest.approx(a.mi_xz, abs=1e-6) and b.mi_zy == pytest.approx(a.mi_zy, abs=1e-6)
    assert c.mi_xz != a.mi_xz
    assert a.to_dict()["params"]["noise_std"] == 0.4


def test_component_subsample_is_reported():
    rng = np.random.default_rng(15)
    f = np.log1p(np.exp(rng.standard_normal((600, 4))))
    full = gaussian_dropout_mi(f, 0.5)
    with pytest.warns(ImplausibleEstimateWarning, match="subsample of 100 of the 600"):
        sub = gaussian_dropout_mi(f, 0.5, max_components=100)
    assert not full.params["component_subsample"] and full.params["n_components"] == 600
    assert sub.params["component_subsample"] and sub.params["n_components"] == 100
    assert sub.mi_xz != full.mi_xz
    assert full.warnings == [] and len(sub.warnings) == 1


def test_estimates_outside_what_they_can_be_are_flagged():
    """A tiny component subsample puts the lower I(X;Z) far above log N: the result and a warning say so;
    one component (no leave-one-out density) is refused."""
    f = (0.1 + np.random.default_rng(0).random((200, 8))).astype(np.float32)
    with pytest.warns(ImplausibleEstimateWarning, match=r"outside \[0, 5.298\]"):
        res = gaussian_dropout_mi(f, 0.5, max_components=2)
    assert res.mi_xz > res.log_n + 4 * res.mi_xz_stderr and any("cannot be trusted" in w for w in res.warnings)
    with pytest.raises(InputError, match="max_components must be an integer >= 2"):
        gaussian_dropout_mi(f, 0.5, max_components=1)
    sound = MIResult("x", mi_xz=1.0, mi_xz_stderr=0.1, mi_xz_upper=1.2, mi_xz_upper_stderr=0.1, log_n=5.0, n_inputs=148)
    assert implausible(sound) == []
    negative = dataclasses.replace(sound, mi_xz_upper=-1.0)
    assert [w for w in implausible(negative) if w.startswith("the upper I(X;Z) = -1")]
    assert implausible(dataclasses.replace(sound, mi_xz=-0.3)) == []  # within 4 errors of 0


def test_clip_min():
    f = np.array([[0.0, 1.0], [2.0, -1e-9], [1.0, 3.0]])
    res = gaussian_dropout_mi(f, 0.5, clip_min=1e-3)
    assert res.params["n_clipped"] == 2
    info = information_dropout_mi(np.abs(f), np.full(f.shape, 0.3), clip_min=1e-3)
    assert info.params["n_clipped"] == 2


def test_estimate_layer_mi_dispatch():
    rng = np.random.default_rng(16)
    f = np.log1p(np.exp(rng.standard_normal((200, 3))))
    layer = {"name": "dropout", "dropout": "gaussian", "p": 0.2, "noise_std": 0.5}
    res = estimate_layer_mi(layer, f, seed=3)
    assert res.mi_xz == gaussian_dropout_mi(f, 0.5, seed=3).mi_xz and res.params["layer"] == "dropout"
    info = estimate_layer_mi(
        {"name": "info", "dropout": "information", "noise_std": None}, f, alphas=np.full(f.shape, 0.3)
    )
    assert info.method == "information_dropout_mixture"
    with pytest.raises(ValueError, match="infinite"):
        estimate_layer_mi({"name": "d", "dropout": "bernoulli", "p": 0.2, "noise_std": None}, f)
    with pytest.raises(ValueError, match="alphas"):
        estimate_layer_mi({"name": "info", "dropout": "information"}, f)
    with pytest.raises(ValueError, match="noise_std"):
        estimate_layer_mi({"name": "g", "dropout": "gaussian"}, f)
    with pytest.raises(ValueError, match="unknown noise kind"):
        estimate_layer_mi({"name": "x", "dropout": "spatial"}, f)


GOOD = np.array([[0.5, 1.0], [1.5, 2.0], [0.3, 0.9]])


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        (
            (np.array([[0.0, 1.0], [0.0, 2.0], [1.0, 1.0]]), 0.5),
            {},
            r"2 exactly-zero entries in 2 inputs.*softplus.*clip_min",
        ),
        ((GOOD, 0.0), {}, "noise_std"),
        ((GOOD, -0.1), {}, "noise_std"),
        ((GOOD, np.nan), {}, "noise_std"),
        ((GOOD, np.inf), {}, "noise_std"),
        ((GOOD, np.array([0.5, 0.5])), {}, "noise_std"),
        ((GOOD, "big"), {}, "noise_std"),
        ((np.array([[np.nan, 1.0], [1.0, 1.0]]), 0.5), {}, "NaN"),
        ((np.ones((2, 2, 2)), 0.5), {}, "2-D"),
        ((GOOD, 0.5, np.array([0, 1])), {}, "entries"),
        ((GOOD, 0.5), {"draws": 0}, "draws"),
        ((GOOD, 0.5), {"draws": 1.5}, "draws"),
        ((GOOD, 0.5), {"max_components": 0}, "max_components"),
        ((GOOD, 0.5), {"clip_min": -1.0}, "clip_min"),
        ((GOOD, 0.5), {"seed": "a"}, "seed"),
        ((GOOD, 0.5), {"backend": "jax"}, "backend"),
        ((GOOD, 0.5), {"max_memory": 64}, r"unknown option\(s\) max_memory; .*max_memory_mb"),
        ((GOOD, 0.5), {"nested": "no"}, "nested must be True or False"),
        ((GOOD, 0.5), {"progress": 1}, "progress must be True or False"),
    ],
)
def test_gaussian_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gaussian_dropout_mi(*args, **kwargs)


@pytest.mark.parametrize(
    "f,alpha,match",
    [
        (-GOOD, np.full((3, 2), 0.3), "positive"),
        (np.array([[0.0, 1.0], [1.0, 1.0]]), np.full((2, 2), 0.3), "exactly-zero"),
        (GOOD, np.zeros((3, 2)), "alphas must be positive"),
        (GOOD, np.full((3, 3), 0.3), "shape"),
        (GOOD, np.full((3, 2), np.nan), "NaN"),
    ],
)
def test_information_bad_input(f, alpha, match):
    with pytest.raises(ValueError, match=match):
        information_dropout_mi(f, alpha)
