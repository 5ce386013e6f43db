"""The dropout mixture estimator against ground truth (the paper's toy problem) and its limiting cases.

Tolerances are multiples of the reported standard error; the finite-sample bias of the toy problem
(X is a finite sample, so the estimator targets I_N <= log N, not the continuous I) is computed
below by quadrature and added where it applies.
"""
import math
from functools import lru_cache

import numpy as np
import pytest
from scipy import integrate
from scipy.special import logsumexp

from mi_estimators.dropout_MI import estimate_layer_mi, gaussian_dropout_mi, information_dropout_mi

K_SE = 4.0


def _phi(x):
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _normal(z, mean, std):
    return math.exp(-0.5 * ((z - mean) / std) ** 2) / (math.sqrt(2 * math.pi) * std)


def _toy_density(z, v, power=1):
    """p(z) (power 1) or E_x[N(z; f, v f^2)^2] (power 2) for f = 2x + 0.5, x ~ N(0,1); integral over f."""
    g = lambda f: _phi((f - 0.5) / 2) / 2 * _normal(z, f, math.sqrt(v) * abs(f)) ** power if f else 0.0
    cuts = sorted({0.0} | {z * c for c in (0.25, 0.5, 1.0, 2.0, 4.0)})   # the peak sits near f = z
    pieces = [(-np.inf, cuts[0])] + list(zip(cuts[:-1], cuts[1:])) + [(cuts[-1], np.inf)]
    return sum(integrate.quad(g, a, b, limit=200, epsabs=1e-14, epsrel=1e-9)[0] for a, b in pieces if a < b)


def _halves(fun):
    return sum(integrate.quad(fun, a, b, limit=400, epsabs=1e-10, epsrel=1e-9)[0]
               for a, b in [(-np.inf, 0.0), (0.0, np.inf)])


@lru_cache(maxsize=None)
def toy_truth(v):
    """True I(X;Z) of the 1-D toy problem: h(Z) by quadrature of the exact p(z), h(Z|X) in closed form."""
    h_z = _halves(lambda z: -p * math.log(p) if (p := _toy_density(z, v)) > 0 else 0.0)
    e_log_f = sum(integrate.quad(lambda x: _phi(x) * math.log(abs(2 * x + 0.5)), a, b, limit=200)[0]
                  for a, b in [(-np.inf, -0.25), (-0.25, np.inf)])
    return h_z - (0.5 * math.log(2 * math.pi * math.e * v) + e_log_f)


def toy_bias(v, n):
    """I - E[I_N] to second order: (1/2N) (int E_x[K_x(z)^2] / p(z) dz - 1), K_x = N(z; f(x), v f(x)^2).

    The integral diverges like log log at z = 0, where the mixture of N components stops being a
    small perturbation of p; it is cut at |z| = 1/N.
    """
    cut = 1.0 / n
    j = sum(integrate.quad(lambda z: _toy_density(z, v, 2) / p if (p := _toy_density(z, v)) > 0 else 0.0,
                           a, b, limit=400)[0] for a, b in [(-np.inf, -cut), (cut, np.inf)])
    return (j - 1.0) / (2 * n)


@pytest.mark.parametrize("v", [0.1, 0.4])
def test_toy_problem_1d_against_quadrature(v):
    n = 20_000
    x = np.random.default_rng(1).standard_normal((n, 1))
    res = gaussian_dropout_mi(2 * x + 0.5, math.sqrt(v), noise_samples=2, seed=2)
    truth, bias = toy_truth(v), toy_bias(v, n)
    assert 0 < bias < res.mi_xz_stderr                    # the finite-sample bias is below the MC error here
    assert truth - bias - K_SE * res.mi_xz_stderr <= res.mi_xz <= truth + K_SE * res.mi_xz_stderr
    assert res.mi_xz_stderr < 0.01
    assert res.log_n == pytest.approx(math.log(n))


@pytest.mark.parametrize("dim", [2, 5])
def test_toy_problem_several_dims_approaches_dim_times_1d(dim):
    v = 0.4
    target = dim * toy_truth(v)
    x = np.random.default_rng(dim).standard_normal((8000, dim))
    estimates = []
    for n in (125, 500, 2000, 8000):
        res = gaussian_dropout_mi(2 * x[:n] + 0.5, math.sqrt(v), noise_samples=2, seed=3)
        assert res.mi_xz <= min(res.log_n, target) + K_SE * res.mi_xz_stderr
        estimates.append((res.mi_xz, res.mi_xz_stderr))
    gaps = [target - e for e, _ in estimates]
    for (g1, s1), (g2, s2) in zip(zip(gaps, [s for _, s in estimates]), zip(gaps[1:], [s for _, s in estimates[1:]])):
        assert g2 < g1 + K_SE * math.hypot(s1, s2)          # the gap shrinks (up to MC noise) ...
    assert gaps[-1] < 0.2 * gaps[0]                          # ... from below, towards dim x the 1-D value
    assert gaps[-1] > -K_SE * estimates[-1][1]


def test_toy_problem_high_dim_saturates_at_log_n():
    n, dim = 2000, 50
    x = np.random.default_rng(4).standard_normal((n, dim))
    res = gaussian_dropout_mi(2 * x + 0.5, math.sqrt(0.1), noise_samples=2, seed=5)
    assert dim * toy_truth(0.1) > res.log_n + 10          # the true value is far above the ceiling
    assert res.log_n - 0.01 < res.mi_xz <= res.log_n + 1e-9


def test_identical_representations_give_zero():
    f = np.tile(np.array([[0.3, 1.2, 2.0, 0.7]]), (400, 1))
    labels = np.arange(400) % 4
    res = gaussian_dropout_mi(f, 0.5, labels, noise_samples=3)
    assert abs(res.mi_xz) < 1e-6 and abs(res.mi_zy) < 1e-6
    assert res.h_y == pytest.approx(math.log(4))


def test_well_separated_components_give_log_n():
    n = 300
    f = np.exp(0.1 * np.arange(n))[:, None] * np.ones((1, 3))     # 10% apart, noise 0.1%
    labels = np.arange(n) % 3
    res = gaussian_dropout_mi(f, 1e-3, labels, noise_samples=2)
    assert res.mi_xz == pytest.approx(math.log(n), abs=1e-6)
    assert res.mi_zy == pytest.approx(res.h_y, abs=1e-6)


def test_label_information_at_most_h_y():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, 3000)
    f = np.log1p(np.exp(labels[:, None] + rng.standard_normal((3000, 4))))
    res = gaussian_dropout_mi(f, 0.5, labels, noise_samples=2)
    assert 10 * res.mi_zy_stderr < res.mi_zy <= res.h_y + K_SE * res.mi_zy_stderr
    assert res.mi_zy < res.h_y - 0.1                         # overlapping classes: strictly below H(Y)
    assert res.h_z_given_y == pytest.approx(res.h_z - res.mi_zy)


def test_scaling_f_leaves_mi_unchanged():
    rng = np.random.default_rng(8)
    f = np.log1p(np.exp(rng.standard_normal((1500, 6))))
    labels = rng.integers(0, 4, 1500)
    a = gaussian_dropout_mi(f, 0.6, labels, noise_samples=2, seed=9)
    b = gaussian_dropout_mi(7.3 * f, 0.6, labels, noise_samples=2, seed=9)
    assert b.mi_xz == pytest.approx(a.mi_xz, abs=1e-5)
    assert b.mi_zy == pytest.approx(a.mi_zy, abs=1e-5)
    assert b.h_z - a.h_z == pytest.approx(6 * math.log(7.3), abs=1e-5)


def test_control_variate_is_never_worse_than_either_form():
    """Evidence for the estimator choice: unpaired wins in 1-D, paired in high dimension."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3000, 1))
    low = gaussian_dropout_mi(2 * x + 0.5, math.sqrt(0.1), noise_samples=3)
    f = np.log1p(np.exp(rng.standard_normal((2000, 32))))
    high = gaussian_dropout_mi(f, 0.5, noise_samples=3)
    assert low.params["mi_xz_unpaired_stderr"] < 0.7 * low.params["mi_xz_paired_stderr"]
    assert high.params["mi_xz_paired_stderr"] < 0.1 * high.params["mi_xz_unpaired_stderr"]
    for res in (low, high):
        best = min(res.params["mi_xz_paired_stderr"], res.params["mi_xz_unpaired_stderr"])
        assert res.mi_xz_stderr <= 1.01 * best
        for form in ("paired", "unpaired"):
            se = math.hypot(res.mi_xz_stderr, res.params[f"mi_xz_{form}_stderr"])
            assert abs(res.mi_xz - res.params[f"mi_xz_{form}"]) < K_SE * se


def _mixture_entropy_1d(means, stds, weights):
    p = lambda z: sum(w * _normal(z, m, s) for m, s, w in zip(means, stds, weights))
    cuts = sorted(set(means))
    lo, hi = min(m - 12 * s for m, s in zip(means, stds)), max(m + 12 * s for m, s in zip(means, stds))
    edges = [lo] + cuts + [hi]
    return sum(integrate.quad(lambda z: -p(z) * math.log(p(z)) if p(z) > 0 else 0.0, a, b, limit=200)[0]
               for a, b in zip(edges[:-1], edges[1:]) if a < b)


def _discrete_truth(means, stds, labels):
    """I(X;Z) and I(Y;Z) for X uniform on a few inputs, 1-D, by quadrature of the mixtures."""
    n = len(means)
    h_z = _mixture_entropy_1d(means, stds, [1 / n] * n)
    h_zx = np.mean([0.5 * math.log(2 * math.pi * math.e * s * s) for s in stds])
    h_zy = 0.0
    for c in np.unique(labels):
        sel = labels == c
        h_zy += sel.mean() * _mixture_entropy_1d(means[sel], stds[sel], [1 / sel.sum()] * sel.sum())
    return h_z - h_zx, h_z - h_zy


def test_information_dropout_against_quadrature():
    f = np.array([[0.5], [1.0], [1.6], [4.0]])
    alpha = np.array([[0.3], [0.5], [0.2], [0.4]])
    labels = np.array([0, 0, 1, 1])
    res = information_dropout_mi(f, alpha, labels, noise_samples=20_000, seed=1)
    mi_xz, mi_zy = _discrete_truth(np.log(f[:, 0]), alpha[:, 0], labels)
    assert abs(res.mi_xz - mi_xz) < K_SE * res.mi_xz_stderr
    assert abs(res.mi_zy - mi_zy) < K_SE * res.mi_zy_stderr
    assert res.mi_xz_stderr < 0.01 and res.params["space"] == "log"


def test_gaussian_dropout_discrete_inputs_against_quadrature():
    f = np.array([[-1.0], [0.5], [0.8], [2.0], [2.3]])
    labels = np.array([0, 1, 1, 0, 1])
    res = gaussian_dropout_mi(f, 0.3, labels, noise_samples=20_000, seed=2)
    mi_xz, mi_zy = _discrete_truth(f[:, 0], 0.3 * np.abs(f[:, 0]), labels)
    assert abs(res.mi_xz - mi_xz) < K_SE * res.mi_xz_stderr
    assert abs(res.mi_zy - mi_zy) < K_SE * res.mi_zy_stderr
    # One draw per input (total-variance standard error): 3000 copies of each input, same mixture.
    once = gaussian_dropout_mi(np.repeat(f, 3000, axis=0), 0.3, np.repeat(labels, 3000), noise_samples=1, seed=3)
    assert abs(once.mi_xz - mi_xz) < K_SE * once.mi_xz_stderr < 0.05
    assert abs(once.mi_zy - mi_zy) < K_SE * once.mi_zy_stderr


def test_information_dropout_equals_direct_log_space_loop():
    """Same noise (documented convention), log densities by a direct float64 loop: paired form agrees."""
    rng = np.random.default_rng(12)
    n, d, r = 60, 3, 4
    f = np.exp(rng.standard_normal((n, d)))
    alpha = rng.uniform(0.1, 0.7, (n, d))
    res = information_dropout_mi(f, alpha, noise_samples=r, seed=13)
    eps = np.random.default_rng(13).standard_normal((n, r, d))
    mu = np.log(f)
    terms = []
    for k in range(n):
        for j in range(r):
            y = mu[k] + alpha[k] * eps[k, j]
            logs = [(-np.log(alpha[i]) - 0.5 * np.log(2 * np.pi) - 0.5 * ((y - mu[i]) / alpha[i]) ** 2).sum()
                    for i in range(n)]
            terms.append(logs[k] - (logsumexp(logs) - np.log(n)))
    assert res.params["mi_xz_paired"] == pytest.approx(np.mean(terms), abs=1e-6)


def test_memory_blocks_and_seed():
    rng = np.random.default_rng(14)
    f = np.log1p(np.exp(rng.standard_normal((800, 8))))
    labels = rng.integers(0, 2, 800)
    a = gaussian_dropout_mi(f, 0.4, labels, noise_samples=3, seed=1)
    b = gaussian_dropout_mi(f, 0.4, labels, noise_samples=3, seed=1, max_memory_mb=0.05, progress=True)
    c = gaussian_dropout_mi(f, 0.4, labels, noise_samples=3, seed=2)
    assert b.mi_xz == pytest.approx(a.mi_xz, abs=1e-6) and b.mi_zy == pytest.approx(a.mi_zy, abs=1e-6)
    assert c.mi_xz != a.mi_xz
    assert a.to_dict()["params"]["noise_std"] == 0.4


def test_component_subsample_is_reported():
    rng = np.random.default_rng(15)
    f = np.log1p(np.exp(rng.standard_normal((600, 4))))
    full = gaussian_dropout_mi(f, 0.5)
    sub = gaussian_dropout_mi(f, 0.5, max_components=100)
    assert not full.params["component_subsample"] and full.params["n_components"] == 600
    assert sub.params["component_subsample"] and sub.params["n_components"] == 100
    assert sub.mi_xz != full.mi_xz


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
    info = estimate_layer_mi({"name": "info", "dropout": "information", "noise_std": None}, f,
                             alphas=np.full(f.shape, 0.3))
    assert info.method == "information_dropout_mixture"
    with pytest.raises(ValueError, match="infinite"):
        estimate_layer_mi({"name": "d", "dropout": "bernoulli", "p": 0.2, "noise_std": None}, f)
    with pytest.raises(ValueError, match="alphas"):
        estimate_layer_mi({"name": "info", "dropout": "information"}, f)
    with pytest.raises(ValueError, match="noise_std"):
        estimate_layer_mi({"name": "g", "dropout": "gaussian"}, f)
    with pytest.raises(ValueError, match="unknown dropout"):
        estimate_layer_mi({"name": "x", "dropout": "spatial"}, f)


GOOD = np.array([[0.5, 1.0], [1.5, 2.0], [0.3, 0.9]])


@pytest.mark.parametrize("args,kwargs,match", [
    ((np.array([[0.0, 1.0], [0.0, 2.0], [1.0, 1.0]]), 0.5), {}, r"2 exactly-zero entries in 2 samples.*softplus.*clip_min"),
    ((GOOD, 0.0), {}, "noise_std"),
    ((GOOD, -0.1), {}, "noise_std"),
    ((GOOD, np.nan), {}, "noise_std"),
    ((GOOD, np.inf), {}, "noise_std"),
    ((GOOD, np.array([0.5, 0.5])), {}, "noise_std"),
    ((GOOD, "big"), {}, "noise_std"),
    ((np.array([[np.nan, 1.0], [1.0, 1.0]]), 0.5), {}, "NaN"),
    ((np.ones((2, 2, 2)), 0.5), {}, "2-D"),
    ((GOOD, 0.5, np.array([0, 1])), {}, "entries"),
    ((GOOD, 0.5), {"noise_samples": 0}, "noise_samples"),
    ((GOOD, 0.5), {"noise_samples": 1.5}, "noise_samples"),
    ((GOOD, 0.5), {"max_components": 0}, "max_components"),
    ((GOOD, 0.5), {"clip_min": -1.0}, "clip_min"),
    ((GOOD, 0.5), {"seed": "a"}, "seed"),
    ((GOOD, 0.5), {"backend": "jax"}, "backend"),
])
def test_gaussian_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gaussian_dropout_mi(*args, **kwargs)


@pytest.mark.parametrize("f,alpha,match", [
    (-GOOD, np.full((3, 2), 0.3), "positive"),
    (np.array([[0.0, 1.0], [1.0, 1.0]]), np.full((2, 2), 0.3), "exactly-zero"),
    (GOOD, np.zeros((3, 2)), "alphas must be positive"),
    (GOOD, np.full((3, 3), 0.3), "shape"),
    (GOOD, np.full((3, 2), np.nan), "NaN"),
])
def test_information_bad_input(f, alpha, match):
    with pytest.raises(ValueError, match=match):
        information_dropout_mi(f, alpha)
