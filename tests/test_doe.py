"""Difference-of-Entropies estimator (McAllester & Stratos 2020) on problems with a known answer."""
import math

import numpy as np
import pytest

from estimator_validation.doe import _cluster_stderr, doe_mi


@pytest.fixture(scope="module")
def gaussian_channel():
    """X ~ N(0, 1), Z = X + N(0, 0.5^2): I = 1/2 log(1 + 1/0.25), h(Z) = 1/2 log(2 pi e 1.25), in nats."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 1))
    z = 3.0 * (x + 0.5 * rng.standard_normal((3000, 1))) + 7.0  # affine map: the MI is unchanged
    h_z = 0.5 * math.log(2 * math.pi * math.e * 1.25) + math.log(3.0)
    return x, z, 0.5 * math.log(5.0), h_z


def test_gaussian_doe_recovers_a_gaussian_channel(gaussian_channel):
    x, z, mi, h_z = gaussian_channel
    r = doe_mi(x, z, family="gaussian", seed=0)
    # both models are exact here, so only the held-out sampling error (and a little fitting error) remains
    assert abs(r.mi - mi) < 4 * r.mi_stderr + 0.02
    assert abs(r.h_z - h_z) < 4 * r.h_z_stderr + 0.02  # the Jacobian of the internal standardisation is added back
    assert r.params["n_test"] == 600 and r.params["epochs_run"] >= 1
    again = doe_mi(x, z, family="gaussian", seed=0)
    assert again.mi == r.mi  # deterministic for a seed


def test_logistic_doe_is_close_below_for_gaussian_data(gaussian_channel):
    x, z, mi, _ = gaussian_channel
    r = doe_mi(x, z, family="logistic", seed=1)
    # a logistic conditional cannot match the Gaussian noise: its cross-entropy exceeds h(Z|X)
    assert mi - 0.15 < r.mi < mi + 4 * r.mi_stderr


def test_groups_stay_together_and_bad_input():
    rng = np.random.default_rng(2)
    x = np.repeat(rng.standard_normal((40, 1)), 5, axis=0)
    z = x * (1 + 0.3 * rng.standard_normal(x.shape))
    r = doe_mi(x, z, groups=np.repeat(np.arange(40), 5), epochs=3, seed=0)
    assert r.params["n_test"] % 5 == 0 and r.params["n_test"] == 40  # 8 whole inputs held out
    with pytest.raises(ValueError, match="family"):
        doe_mi(x, z, family="laplace")
    with pytest.raises(ValueError, match="groups"):
        doe_mi(x, z, groups=np.repeat(np.arange(3), 5))
    with pytest.raises(ValueError, match="more groups"):
        doe_mi(x[:15], z[:15], groups=np.repeat(np.arange(3), 5))
    with pytest.raises(ValueError, match="NaN"):
        doe_mi(np.full((20, 1), np.nan), z[:20])


def test_cluster_stderr_counts_groups_not_rows():
    values = np.random.default_rng(3).standard_normal(50)
    plain = values.std(ddof=1) / math.sqrt(50)
    assert _cluster_stderr(values, np.arange(50)) == pytest.approx(plain)
    # every value seen 4 times (4 noise draws of one input): still 50 independent pieces of evidence
    assert _cluster_stderr(np.repeat(values, 4), np.repeat(np.arange(50), 4)) == pytest.approx(plain)
