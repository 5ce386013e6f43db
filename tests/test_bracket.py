"""The lower (mixture) and upper (leave-one-out) estimates of I(X;Z) bracket the truth on the toy problem.

Toy problem of Adilova, Geiger & Fischer (ICLR 2023) in 1 to 5 dimensions, truth by quadrature
(``estimator_validation.ground_truth``). Both sides are bounds in expectation only, so the check
allows 3 total errors (Monte Carlo and input sampling in quadrature) on each side.
"""

import math

import numpy as np
import pytest

from estimator_validation.ground_truth import toy_truth
from estimator_validation.toy_problem import make_toy
from mi_estimators.dropout_MI import gaussian_dropout_mi, information_dropout_mi

NOISE_STD = math.sqrt(0.1)  # the paper's noise variance 0.1
SIZES = (250, 1000, 2000)
K_ERR = 3.0


def bracket(dim: int, n: int, seed: int) -> tuple[float, float, float, float]:
    data = make_toy(dim, dim, n, NOISE_STD, 1, seed=seed)
    res = gaussian_dropout_mi(data.f, NOISE_STD, draws=4, seed=seed, nested=False)
    return (
        res.mi_xz,
        math.hypot(res.mi_xz_stderr, res.mi_xz_sampling_stderr),
        res.mi_xz_upper,
        math.hypot(res.mi_xz_upper_stderr, res.mi_xz_upper_sampling_stderr),
    )


@pytest.mark.parametrize("dim", [1, 2, 3, 4, 5])
def test_truth_inside_the_bracket_and_the_bracket_narrows_with_n(dim):
    truth = toy_truth(dim, dim, NOISE_STD)["mi"]
    widths = []
    for n in SIZES:
        lower, lower_err, upper, upper_err = bracket(dim, n, seed=dim)
        assert lower - K_ERR * lower_err <= truth <= upper + K_ERR * upper_err, (n, lower, truth, upper)
        assert lower <= upper
        widths.append(upper - lower)
    # The gap shrinks roughly like 1/N where it is wide; where it is already a hundredth of a nat (1-D)
    # its own noise shows, so demand a fall at the first step and by half over the eightfold range.
    assert widths[1] < widths[0] and widths[2] < 0.5 * widths[0], widths


def test_upper_is_not_capped_by_log_n_where_the_lower_is():
    """5-D toy at N = 250: the truth (8.95 nats) is far above log N (5.52); the lower estimate sits near
    log N, the upper one above the truth."""
    truth = toy_truth(5, 5, NOISE_STD)["mi"]
    lower, _, upper, _ = bracket(5, 250, seed=0)
    assert lower <= math.log(250) < truth < upper


def test_information_dropout_carries_the_bracket():
    rng = np.random.default_rng(0)
    f = np.log1p(np.exp(rng.standard_normal((400, 3))))
    alphas = np.full(f.shape, 0.5)
    res = gaussian_dropout_mi(f, 0.5, draws=2)
    info = information_dropout_mi(f, alphas, draws=2)
    for r in (res, info):
        assert r.mi_xz <= r.mi_xz_upper
        assert r.mi_xz_upper_stderr > 0 and r.mi_xz_upper_sampling_stderr >= 0
        assert {"mi_xz_upper", "mi_xz_upper_stderr"} <= set(r.params["convergence"][0])
