"""Plug-in entropies and mutual information of discrete variables against hand-computed values."""

import math

import numpy as np
import pytest

from mi_estimators.checks import InputError
from mi_estimators.discrete import discrete_entropy, discrete_mi, entropy_with_stderr, mi_with_stderr


def test_entropy_of_known_distributions():
    assert discrete_entropy(np.arange(8)) == pytest.approx(math.log(8))
    assert discrete_entropy(np.zeros(5)) == 0.0
    p = np.array([0.5, 0.25, 0.25])
    assert discrete_entropy(np.repeat([0, 1, 2], [2, 1, 1])) == pytest.approx(-(p * np.log(p)).sum())
    rows = np.array([[0, 1], [0, 1], [1, 0], [1, 1]])  # rows are symbols: 3 distinct, counts 2, 1, 1
    assert discrete_entropy(rows) == pytest.approx(-(p * np.log(p)).sum())


def test_mutual_information_of_a_known_joint_table():
    # joint counts [[3, 1], [1, 3]] over 8 samples: I = log 2 - H_b(1/4)
    a = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    b = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    res = discrete_mi(a, b)
    h_b = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert res.mi == pytest.approx(math.log(2) - h_b)
    assert res.params["h_a"] == pytest.approx(math.log(2)) and res.n_inputs == 8
    assert discrete_mi(a, a).mi == pytest.approx(math.log(2))  # I(A;A) = H(A)
    assert discrete_mi(np.repeat([0, 1], 4), np.tile([0, 1], 4)).mi == pytest.approx(0.0, abs=1e-12)


def test_estimates_with_stderr_equal_the_plug_in():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, 300), rng.integers(0, 3, 300)
    assert entropy_with_stderr(a)[0] == pytest.approx(discrete_entropy(a))
    assert mi_with_stderr(a, b)[0] == pytest.approx(discrete_mi(a, b).mi)
    assert entropy_with_stderr(np.arange(50))[1] == pytest.approx(0.0, abs=1e-12)  # every term is log 50


def test_delta_method_stderr_matches_the_spread_over_sample_draws():
    """Population: A over 6 symbols with probabilities P, B = A mod 2 flipped with probability 0.2.
    Over 400 draws of N = 1,000 the sd of the estimates is known to about 1 / sqrt(2 * 399) = 3.5%; the
    mean reported error must match it within 15%, and the estimates must centre on the truth within
    3 standard errors of their mean plus the plug-in bias (K - 1) / (2 N). (A uniform A would be the
    degenerate case where the first-order error vanishes.)"""
    rng = np.random.default_rng(7)
    n, draws = 1000, 400
    p = np.array([0.4, 0.2, 0.15, 0.1, 0.1, 0.05])
    h_true = float(-(p * np.log(p)).sum())
    joint = np.array([[p[i] * (0.8 if j == i % 2 else 0.2) for j in range(2)] for i in range(6)])
    mi_true = float((joint * np.log(joint / (p[:, None] * joint.sum(0)))).sum())
    h, h_se, mi, mi_se = [], [], [], []
    for _ in range(draws):
        a = rng.choice(6, n, p=p)
        b = (a % 2) ^ (rng.random(n) < 0.2)
        for (est, se), vals, ses in ((entropy_with_stderr(a), h, h_se), (mi_with_stderr(a, b), mi, mi_se)):
            vals.append(est)
            ses.append(se)
    for vals, ses, truth, bias in ((h, h_se, h_true, -5 / (2 * n)), (mi, mi_se, mi_true, 5 / (2 * n))):
        assert np.mean(ses) == pytest.approx(np.std(vals, ddof=1), rel=0.15)
        assert abs(np.mean(vals) - truth - bias) < 3 * np.std(vals, ddof=1) / math.sqrt(draws) + 1e-3


def test_bad_input():
    with pytest.raises(InputError, match="same number of rows"):
        discrete_mi(np.zeros(3), np.zeros(4))
    with pytest.raises(InputError, match="NaN"):
        discrete_mi(np.array([0.0, np.nan]), np.zeros(2))
