"""The public estimator API's contract, fuzzed with Hypothesis: every call gives a finite result of the
right type, or an :class:`InputError` (a ``ValueError``) whose message names the culprit argument; never
another exception, never a NaN/inf estimate, never a numerical RuntimeWarning.

Generated inputs: arrays of random rank and length in every dtype a user may hold (int, float32,
float64, bool, complex, object), with NaN, inf, huge, tiny, empty and 1-row cases, and wrong kinds of
argument (None, a string, a dict, a list of strings, a ragged list, a scalar).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mi_estimators import (
    MIResult,
    binning_mi,
    discrete_entropy,
    discrete_mi,
    edge_mi,
    gaussian_dropout_mi,
    gaussian_dropout_upper_bound,
    gaussian_entropy_upper_bound,
    information_dropout_mi,
    kde_mi_bounds,
    ksg_mi,
    ksg_mi_labels,
    mixture_log_density,
    noisy_representations,
)
from mi_estimators.checks import InputError, as_labels

FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
KNOWN = settings(FUZZ, phases=(Phase.explicit, Phase.generate))
"""For the tests whose explicit example is a violation found once: it runs first, and without shrinking."""

WRONG_KINDS = st.sampled_from([None, "abc", {"a": 1}, ["a", "b"], [[1.0, 2.0], [3.0]], 3.5, {1, 2}])
SPECIAL = [0.0, 1.0, -1.0, 0.5, math.nan, math.inf, -math.inf, 1e300, -1e300, 1e-300, 3e38, 1e150]
SPECIAL32 = [float(np.float32(v)) for v in SPECIAL if not abs(v) > 3.4e38 or math.isinf(v)]
DTYPES = ["int64", "float32", "float64", "bool", "complex128", "object"]
NARROW = np.abs(np.random.default_rng(0).standard_normal((25, 2))) + 0.1
"""Positive codes; scaled by 1e100 their Gaussian-dropout components are far narrower than their distances."""


def _elements(dtype: str) -> st.SearchStrategy:
    if dtype == "int64":
        return st.integers(-(2**62), 2**62) | st.integers(-3, 3)
    if dtype in ("float32", "float64"):
        width = 32 if dtype == "float32" else 64
        return st.floats(width=width, min_value=-4.0, max_value=4.0) | st.sampled_from(
            SPECIAL32 if width == 32 else SPECIAL
        )
    if dtype == "complex128":
        return st.complex_numbers(max_magnitude=4.0)
    if dtype == "object":
        return st.one_of(st.floats(-4, 4), st.text(max_size=2), st.none())
    return st.booleans()


@st.composite
def any_array(draw: st.DrawFn, rows: int | None = None) -> Any:
    """A random array (any rank, dtype and length; ``rows`` fixes the length when the rank allows) or,
    rarely, a wrong kind of argument."""
    if draw(st.integers(0, 9)) == 0:
        return draw(WRONG_KINDS)
    dtype = draw(st.sampled_from(DTYPES))
    ndim = draw(st.sampled_from([0, 1, 2, 2, 2, 3]))
    shape = tuple(draw(st.integers(0, 40)) if i == 0 else draw(st.integers(0, 4)) for i in range(ndim))
    if rows is not None and ndim and draw(st.booleans()):
        shape = (rows, *shape[1:])
    return draw(hnp.arrays(np.dtype(dtype), shape, elements=_elements(dtype)))


@st.composite
def codes(draw: st.DrawFn, rows: int | None = None, positive: bool = False) -> np.ndarray:
    """Mostly valid float data (n >= 25 rows, finite, occasionally huge or tiny), or any array."""
    if draw(st.integers(0, 3)) == 0:
        return draw(any_array(rows))
    n = rows if rows is not None else draw(st.integers(25, 40))
    d = draw(st.integers(1, 3))
    scale = draw(st.sampled_from([1.0, 1.0, 1e-150, 1e100, 1e140, 1e200]))
    dtype = draw(st.sampled_from(["float64", "float32"])) if scale == 1.0 else "float64"
    low = 0.0625 if positive else -3.0
    arr = draw(hnp.arrays(np.dtype(dtype), (n, d), elements=st.floats(low, 3.0, width=32)))
    return arr * scale


@st.composite
def labels_for(draw: st.DrawFn, n: int) -> Any:
    """Class labels of length n: valid indices, one-hot rows, floats of shape (n, k), or any array."""
    kind = draw(st.sampled_from(["indices", "one_hot", "floats", "any"]))
    ids = np.asarray(draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)), dtype=np.int64)
    if kind == "indices":
        return ids
    if kind == "one_hot":
        return np.eye(3)[ids]
    if kind == "floats":
        return draw(hnp.arrays(np.float64, (n, 3), elements=st.floats(0.0, 1.0)))
    return draw(any_array(n))


OPTION = st.one_of(st.integers(-2, 12), st.sampled_from([0.5, True, "3", None, 2**70, math.nan]))


ESTIMATES = ("mi", "mi_xz", "mi_zy", "h_z", "h_z_given_x", "h_z_given_y", "h_y", "log_n")


def _length(x: Any) -> int | None:
    """Length of an array-like argument; None for scalars, wrong kinds and ragged lists."""
    try:
        shape = np.shape(x)
    except ValueError:
        return None
    return shape[0] if shape else None


def _check_result(result: Any, kind: type) -> None:
    assert isinstance(result, kind), type(result)
    if isinstance(result, MIResult):
        values = {k: getattr(result, k) for k in ESTIMATES if getattr(result, k) is not None}
        assert values, "no estimate"
        assert all(math.isfinite(v) for v in values.values()), values
        # a standard error may be NaN where it is undefined (one sample), never infinite
        assert not any(math.isinf(v) for k, v in vars(result).items() if k.endswith("stderr") and v is not None)
    elif isinstance(result, np.ndarray):
        assert result.size and np.isfinite(result).all()
    else:
        assert math.isfinite(result)


def honour_contract(
    call: Callable[[], Any], names: tuple[str, ...], kind: type = MIResult, *, quiet: bool = True
) -> Any:
    """Run ``call``: a finite result of type ``kind``, or an InputError naming one of ``names``; any
    other exception, a NaN/inf result or (``quiet``) a numerical RuntimeWarning fails the test."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = call()
        except InputError as err:
            assert any(name in str(err) for name in names), f"{err} names none of {names}"
            return None
    numeric = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert not (quiet and numeric), numeric
    _check_result(result, kind)
    return result


# -- one test per public function -------------------------------------------------------------------


@FUZZ
@given(a=any_array())
@example(a=np.array([1.0, np.nan, np.nan]))
@example(a=np.array([]))
@example(a=np.array([1 + 1j, 1 + 2j]))
def test_discrete_entropy(a):
    h = honour_contract(lambda: discrete_entropy(a), ("a",), float)
    if h is not None:
        assert 0.0 <= h <= math.log(_length(a)) + 1e-12


@FUZZ
@given(st.data())
def test_discrete_mi(data):
    a = data.draw(any_array())
    b = data.draw(any_array(rows=_length(a)))
    res = honour_contract(lambda: discrete_mi(a, b), ("a", "b"))
    if res is not None:
        assert 0.0 <= res.mi <= min(res.params["h_a"], res.params["h_b"]) + 1e-12


@FUZZ
@given(st.data())
def test_binning_mi(data):
    z = data.draw(codes())
    labels = data.draw(st.none() | labels_for(_length(z)) if _length(z) is not None else st.none())
    bins = data.draw(
        st.sampled_from(
            [
                {"n_bins": 10},
                {"bin_size": 0.5},
                {"bin_size": 1e-300},
                {"n_bins": 2**60},
                {"n_bins": "10"},
                {},
                {"n_bins": 3, "bin_size": 1.0},
            ]
        )
    )
    res = honour_contract(lambda: binning_mi(z, labels, **bins), ("z", "labels", "n_bins", "bin_size"))
    if res is not None:
        assert 0.0 <= res.mi_xz <= math.log(res.n_inputs) + 1e-9


@FUZZ
@given(st.data())
def test_ksg_mi(data):
    x = data.draw(codes())
    y = data.draw(codes(rows=_length(x)))
    k, seed = data.draw(OPTION), data.draw(OPTION)
    honour_contract(lambda: ksg_mi(x, y, k=k, seed=seed), ("x", "y", "k", "seed"))


@FUZZ
@given(st.data())
def test_ksg_mi_labels(data):
    z = data.draw(codes())
    labels = data.draw(labels_for(_length(z)) if _length(z) is not None else any_array())
    form = data.draw(st.sampled_from(["ross", "micd", "bogus", 3]))
    honour_contract(lambda: ksg_mi_labels(z, labels, form=form), ("z", "labels", "k=", "form"))


@FUZZ
@given(st.data())
def test_edge_mi(data):
    x = data.draw(codes())
    y = data.draw(codes(rows=_length(x)))
    seed = data.draw(OPTION)
    bias_powers = data.draw(st.sampled_from([None, (2.0, -1.0), "ab", (math.nan,), (0.0,)]))
    discrete_y = data.draw(st.sampled_from([False, True, "yes"]))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="EDGE: ", category=UserWarning)  # sparse buckets: documented
        honour_contract(
            lambda: edge_mi(x, y, seed=seed, bias_powers=bias_powers, discrete_y=discrete_y),
            ("x", "y", "seed", "bias_powers", "discrete_y"),
        )


@FUZZ
@given(z=codes())
def test_gaussian_entropy_upper_bound(z):
    honour_contract(lambda: gaussian_entropy_upper_bound(z), ("z",))


@FUZZ
@given(f=codes(positive=True), noise_std=st.sampled_from([0.5, 0.0, -1.0, math.inf, "0.5", None, 1e200]))
def test_gaussian_dropout_upper_bound(f, noise_std):
    honour_contract(lambda: gaussian_dropout_upper_bound(f, noise_std), ("f", "noise_std"))


@FUZZ
@given(st.data())
def test_noisy_representations(data):
    f = data.draw(codes(positive=True))
    kind = data.draw(st.sampled_from(["noise_std", "alphas", "both", "neither"]))
    noise = {
        "noise_std": {"noise_std": data.draw(st.sampled_from([0.5, 1e200, -1.0, "x"]))},
        "alphas": {"alphas": data.draw(codes(rows=_length(f), positive=True))},
        "both": {"noise_std": 0.5, "alphas": f},
        "neither": {},
    }[kind]
    seed = data.draw(OPTION)
    honour_contract(
        lambda: noisy_representations(f, seed=seed, **noise), ("f", "noise_std", "alphas", "seed"), np.ndarray
    )


# -- the mixture estimators: their float32 kernel warns about overflowing casts on huge codes and then
# -- redoes those rows in float64, so only the result is checked.


@FUZZ
@given(st.data())
def test_gaussian_dropout_mi(data):
    f = data.draw(codes(positive=True))
    labels = data.draw(st.none() | labels_for(_length(f)) if _length(f) is not None else st.none())
    honour_contract(lambda: gaussian_dropout_mi(f, 0.5, labels), ("f", "labels"), quiet=False)


@FUZZ
@given(f=codes(positive=True), alphas=codes(rows=25, positive=True))
@example(f=np.ones((25, 2)), alphas=np.ones((25, 1)))
def test_information_dropout_mi(f, alphas):
    honour_contract(lambda: information_dropout_mi(f, alphas), ("f", "alphas"), quiet=False)


@KNOWN
@given(means=codes(), points=codes(), stds=st.sampled_from([0.5, 1e-3, -1.0, "x"]))
@example(means=NARROW * 1e100, points=NARROW * 1e100, stds=0.5)
def test_mixture_log_density(means, points, stds):
    honour_contract(
        lambda: mixture_log_density(points, means, stds), ("points", "means", "stds"), np.ndarray, quiet=False
    )


@KNOWN
@given(f=codes())
@example(f=NARROW * 1e10)
def test_kde_mi_bounds(f):
    honour_contract(lambda: kde_mi_bounds(f, 0.5), ("f",), quiet=False)


# -- bad inputs found by a review, as plain regression tests --------------------------------------------


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: binning_mi(np.arange(30.0) + 1j, n_bins=4), "z must be real, got complex"),
        (lambda: ksg_mi(np.arange(30.0), np.arange(30.0).astype(np.complex64)), "y must be real, got complex"),
        (lambda: discrete_entropy(np.array([1.0, np.nan, np.nan])), "a contains 2 NaN/inf"),
        (lambda: discrete_entropy(np.array([])), "a has 0 rows"),
        (lambda: discrete_mi(np.zeros(0), np.zeros(0)), "a has 0 rows"),
        (lambda: discrete_mi(None, np.arange(3)), "a must be a numeric array, got NoneType"),
        (lambda: discrete_entropy(["x", "y"]), "a must be a numeric array, got dtype <U1"),
        (
            lambda: binning_mi(np.arange(30.0), np.full((30, 3), 0.3), n_bins=4),
            "labels of shape (30, 3) must be one-hot",
        ),
        (lambda: binning_mi(np.arange(30.0), np.full(30, 1e300), n_bins=4), "below 2^53"),
        (lambda: binning_mi(np.arange(30.0), bin_size=1e-300), "use a larger bin_size"),
        (lambda: binning_mi(np.arange(30.0), n_bins=4, value_range="12"), "value_range must be a pair"),
        (lambda: ksg_mi(np.arange(30.0) * 1e300, np.arange(30.0)), "x has values up to 2.9e+301"),
        (lambda: edge_mi(np.arange(30.0), np.arange(30.0), seed="a"), "seed must be an integer"),
        (
            lambda: edge_mi(np.arange(30.0), np.arange(30.0), n_bandwidths=10**9),
            "n_bandwidths must be an integer between",
        ),
        (lambda: noisy_representations(np.ones((3, 2)), noise_std=0.5, draw=2**70), "draw must be an integer between"),
        (lambda: ksg_mi_labels(np.arange(30.0), np.arange(30) % 2, workers=0), "workers must be -1"),
        (lambda: noisy_representations(np.ones((3, 2)) * 1e150, alphas=np.full((3, 2), 1e3)), "overflows"),
        (lambda: gaussian_dropout_mi(np.ones((30, 2)) * 1e300, 0.5), "f has values up to 1e+300"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_named_bad_inputs(call, message):
    with pytest.raises(InputError) as err:
        call()
    assert message in str(err.value)


def test_one_hot_labels_and_class_indices_agree():
    ids = np.arange(12) % 3
    assert as_labels(np.eye(3)[ids], 12).tolist() == ids.tolist()
    assert as_labels(np.eye(3, dtype=bool)[ids], 12).tolist() == ids.tolist()
    assert as_labels(ids.astype(np.float32)[:, None], 12).tolist() == ids.tolist()
    assert as_labels(ids % 2 == 1, 12).tolist() == (ids % 2).tolist()


def test_large_integer_symbols_stay_distinct():
    """Ids above 2^53 would merge in float64; discrete estimators keep the array's own dtype."""
    a = np.array([2**62, 2**62 + 1, 2**62 + 2, 2**62 + 3])
    assert discrete_entropy(a) == pytest.approx(math.log(4))
    assert discrete_mi(a, np.arange(4)).mi == pytest.approx(math.log(4))
