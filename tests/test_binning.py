"""Binning estimator against hand-computed entropies."""

import math

import numpy as np
import pytest

from mi_estimators.binning import bin_values, binning_mi
from mi_estimators.checks import InputError

LOG2 = math.log(2.0)
# Over [0, 1] with 2 bins the rows bin to (0,0), (0,1), (0,0), (1,1): p = 1/2, 1/4, 1/4.
T2 = np.array([[0.1, 0.1], [0.1, 0.9], [0.2, 0.2], [0.9, 0.9]])


def test_szt_hand_computed():
    res = binning_mi(T2, labels=[0, 0, 1, 1], n_bins=2, value_range=(0.0, 1.0))
    assert res.mi_xz == pytest.approx(1.5 * LOG2)
    # H(T|Y=0) = H(T|Y=1) = log 2 (two distinct bins each), so I(Y;T) = 1.5 log 2 - log 2.
    assert res.mi_zy == pytest.approx(0.5 * LOG2)
    assert res.h_y == pytest.approx(LOG2)
    assert res.log_n == pytest.approx(math.log(4))
    assert res.params["value_range"] == [0.0, 1.0]
    assert res.params["n_bins"] == 2 and res.params["bin_size"] == pytest.approx(0.5)
    # delta-method errors: the per-sample terms -log p(t_i) are log 2, log 4, log 2, log 4
    assert res.mi_xz_sampling_stderr == pytest.approx(np.std([LOG2, 2 * LOG2] * 2, ddof=1) / 2)
    assert res.mi_zy_sampling_stderr is not None and res.mi_xz_stderr is None


def test_labels_determined_by_bins_and_independent_labels():
    t = np.array([0.1, 0.2, 0.6, 0.9])
    assert binning_mi(t, labels=[0, 0, 1, 1], n_bins=2, value_range=(0, 1)).mi_zy == pytest.approx(LOG2)
    assert binning_mi(t, labels=[0, 1, 0, 1], n_bins=2, value_range=(0, 1)).mi_zy == pytest.approx(0.0, abs=1e-12)


def test_binned_x_hand_computed():
    # X over its range [0, 3] in 2 bins -> 0, 0, 1, 1; the joint rows are all distinct (H = log 4).
    res = binning_mi(T2, inputs=np.arange(4.0), n_bins=2, value_range=(0.0, 1.0), form="binned_x")
    assert res.mi_xz == pytest.approx(LOG2 + 1.5 * LOG2 - 2 * LOG2)
    assert res.params["input_range"] == [0.0, 3.0]
    assert res.params["h_x_binned"] == pytest.approx(LOG2)


def test_bin_size_and_data_range():
    # Range from the data [0, 1]; width 0.3 -> 4 bins; indices 0, 0, 1, 3.
    ids, info = bin_values(np.array([0.0, 0.25, 0.5, 1.0]), bin_size=0.3)
    assert ids.ravel().tolist() == [0, 0, 1, 3]
    assert info["value_range"] == [0.0, 1.0] and info["n_bins"] == 4 and info["range_from_data"]
    res = binning_mi(np.array([0.0, 0.25, 0.5, 1.0]), bin_size=0.3)
    assert res.mi_xz == pytest.approx(1.5 * LOG2)


def test_values_outside_explicit_range_saturate_and_are_counted():
    ids, info = bin_values(np.array([-5.0, 0.2, 0.7, 9.0]), n_bins=2, value_range=(0.0, 1.0))
    assert ids.ravel().tolist() == [0, 0, 1, 1]
    assert info["n_outside_range"] == 2


def test_fine_bins_reach_log_n_and_one_bin_gives_zero():
    t = np.random.default_rng(0).standard_normal((500, 3))
    assert binning_mi(t, n_bins=10_000).mi_xz == pytest.approx(math.log(500))
    assert binning_mi(t, n_bins=1).mi_xz == 0.0
    assert binning_mi(np.ones((10, 2)), n_bins=5).mi_xz == 0.0


def test_to_dict_is_json_ready():
    import json

    json.dumps(binning_mi(T2, labels=[0, 1, 0, 1], n_bins=3).to_dict())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_bins=2, bin_size=0.1), "exactly one"),
        (dict(), "exactly one"),
        (dict(n_bins=0), "n_bins must be an integer between 1 and"),
        (dict(n_bins=2.5), "n_bins must be an integer"),
        (dict(bin_size=-1.0), "bin_size must be a finite number > 0"),
        (dict(bin_size=float("nan")), "bin_size must be a finite number > 0"),
        (dict(n_bins=2, value_range=(1.0, 0.0)), "low < high"),
        (dict(n_bins=2, value_range=(0.0, np.inf)), "low < high"),
        (dict(n_bins=2, value_range=3.0), "pair"),
        (dict(n_bins=2, form="tishby"), "unknown form"),
        (dict(n_bins=2, form="binned_x"), "needs the inputs"),
        (dict(n_bins=2, inputs=np.zeros(4)), "ignores inputs"),
        (dict(n_bins=2, form="binned_x", inputs=np.zeros(3)), "same number of rows"),
        (dict(n_bins=2, labels=[0, 1, 0]), "entries"),
        (dict(n_bins=2, labels=[0.5, 1, 0, 1]), "integer"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(InputError, match=match):
        binning_mi(T2, **kwargs)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), "NaN/inf"),
        (np.zeros((2, 2, 2, 2)), "2-D"),
        (np.zeros((0, 3)), "rows"),
        (np.array(["a", "b"]), "numeric"),
    ],
)
def test_bad_representations(bad, match):
    with pytest.raises(InputError, match=match):
        binning_mi(bad, n_bins=2)
