"""Plug-in entropies and mutual information of discrete variables against hand-computed values."""
import math

import numpy as np
import pytest

from mi_estimators.discrete import discrete_entropy, discrete_mi


def test_entropy_of_known_distributions():
    assert discrete_entropy(np.arange(8)) == pytest.approx(math.log(8))
    assert discrete_entropy(np.zeros(5)) == 0.0
    p = np.array([0.5, 0.25, 0.25])
    assert discrete_entropy(np.repeat([0, 1, 2], [2, 1, 1])) == pytest.approx(-(p * np.log(p)).sum())
    rows = np.array([[0, 1], [0, 1], [1, 0], [1, 1]])          # rows are symbols: 3 distinct, counts 2, 1, 1
    assert discrete_entropy(rows) == pytest.approx(-(p * np.log(p)).sum())


def test_mutual_information_of_a_known_joint_table():
    # joint counts [[3, 1], [1, 3]] over 8 samples: I = log 2 - H_b(1/4)
    a = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    b = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    res = discrete_mi(a, b)
    h_b = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert res.mi == pytest.approx(math.log(2) - h_b)
    assert res.params["h_a"] == pytest.approx(math.log(2)) and res.n_samples == 8
    assert discrete_mi(a, a).mi == pytest.approx(math.log(2))              # I(A;A) = H(A)
    assert discrete_mi(np.repeat([0, 1], 4), np.tile([0, 1], 4)).mi == pytest.approx(0.0, abs=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="same number of samples"):
        discrete_mi(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        discrete_mi(np.array([0.0, np.nan]), np.zeros(2))
