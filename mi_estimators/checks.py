"""Validators and constants shared by the whole toolkit: bad input raises :class:`InputError` (a
``ValueError``) with a message that names the culprit.

This module imports nothing from the rest of the project (and only NumPy), so every layer (estimators,
training, analysis, validation scripts) can use it and a command line's ``--help`` stays fast.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np


class InputError(ValueError):
    """The caller's input is wrong (shape, type, range, file contents): the message names the culprit.

    The only exception that command lines turn into one ``error:`` line with exit code 2; any other
    exception is a bug and is reported with its traceback. A ``ValueError``, so that callers of the
    Python API can catch either.
    """


MAX_ABS = 1e150
"""Largest magnitude :func:`as_samples` accepts by default: the estimators square and sum entries, and
squares of larger values overflow float64 (1.8e308) into NaN results."""
MAX_EXACT_LABEL = 2.0**53
"""Float labels at or above this magnitude are not exact integers any more."""


def as_array(x: Any, name: str) -> np.ndarray:
    """``x`` as a real numeric (or bool) NumPy array; :class:`InputError` naming ``name`` otherwise.

    Refuses None, strings, mappings, sets, ragged or object data and complex values (whose imaginary
    part a float conversion would silently drop).
    """
    if x is None or isinstance(x, (str, bytes, dict, set, frozenset)):
        raise InputError(f"{name} must be a numeric array, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise InputError(f"{name} must be a numeric array: {err}") from None
    if np.iscomplexobj(arr):
        raise InputError(
            f"{name} must be real, got complex dtype {arr.dtype}; pass its real part, modulus or "
            f"both parts as separate features"
        )
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    return arr


def as_samples(
    x: Any, name: str = "x", *, min_rows: int = 2, dtype: Any = np.float64, max_abs: float | None = MAX_ABS
) -> np.ndarray:
    """Return ``x`` as a finite 2-D real array of shape (n_rows, n_features).

    A 1-D array is read as n rows of one feature. Raises :class:`InputError` for other ranks,
    non-numeric or complex data, NaN/inf, magnitudes above ``max_abs`` (None: no limit) or fewer than
    ``min_rows`` rows. ``dtype`` None keeps the array's own dtype.
    """
    arr = as_array(x, name)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InputError(f"{name} must be 2-D (rows x features), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise InputError(f"{name} has no features (shape {arr.shape})")
    if arr.shape[0] < min_rows:
        raise InputError(f"{name} has {arr.shape[0]} rows; this estimator needs at least {min_rows}")
    if dtype is not None:
        arr = _cast(arr, dtype, name)
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise InputError(
            f"{name} contains {int(bad.sum())} NaN/inf values in {rows.size} rows (first at row {rows[0]})"
        )
    if max_abs is not None and arr.dtype != bool and arr.size and np.abs(arr).max() > max_abs:
        raise InputError(
            f"{name} has values up to {float(np.abs(arr).max()):.3g} in magnitude; the estimators "
            f"square them, which overflows above {max_abs:g}: rescale {name}"
        )
    return arr


def _cast(arr: np.ndarray, dtype: Any, name: str) -> np.ndarray:
    """``arr`` as ``dtype``; a value too large for it is an :class:`InputError`, not a silent inf."""
    with np.errstate(over="ignore"):
        out = arr.astype(dtype, copy=False)
    if np.isinf(out).any() and not np.isinf(arr).any():
        raise InputError(f"{name} has values too large for {np.dtype(dtype).name}")
    return out


def as_labels(y: Any, n_rows: int, name: str = "labels") -> np.ndarray:
    """Return discrete labels as a 1-D integer array of length ``n_rows``.

    2-D labels of shape (n, k > 1) must be one-hot rows (0/1, one 1 per row) and are converted with
    argmax; (n, 1) is one column of indices. Raises :class:`InputError` for anything else, a length
    mismatch, non-integer values, NaN/inf or complex values.
    """
    arr = as_array(y, name)
    if arr.ndim == 2 and arr.shape[1] > 1:
        arr = _one_hot_indices(arr, name)
    elif arr.ndim == 2:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D class indices or 2-D one-hot, got shape {arr.shape}")
    if arr.shape[0] != n_rows:
        raise InputError(f"{name} has {arr.shape[0]} entries but there are {n_rows} rows")
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        whole = np.isfinite(arr) & (arr == np.round(arr)) & (np.abs(arr) < MAX_EXACT_LABEL)
        if not whole.all():
            first = int(np.flatnonzero(~whole)[0])
            raise InputError(
                f"{name} must be integer class indices (below 2^53 in magnitude), got {arr[first]!r} at entry {first}"
            )
        arr = arr.astype(np.int64)
    return arr


def _one_hot_indices(arr: np.ndarray, name: str) -> np.ndarray:
    """Class indices of one-hot rows; :class:`InputError` unless every row is 0/1 with exactly one 1."""
    ok = np.all((arr == 0) | (arr == 1), axis=1) & (np.count_nonzero(arr, axis=1) == 1)
    if not ok.all():
        first = int(np.flatnonzero(~ok)[0])
        raise InputError(
            f"{name} of shape {arr.shape} must be one-hot rows (0/1 with exactly one 1); row {first} "
            f"is {arr[first].tolist()}; pass 1-D class indices instead"
        )
    return arr.argmax(axis=1)


def check_same_length(**arrays: Any) -> None:
    """Raise :class:`InputError` unless every argument is an array with the same number of rows."""
    lengths = {}
    for key, value in arrays.items():
        arr = as_array(value, key)
        if arr.ndim == 0:
            raise InputError(f"{key} must be an array with one row per input, got the scalar {value!r}")
        lengths[key] = len(arr)
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise InputError(f"the arrays must have the same number of rows ({listed})")


def power_of_two_scale(a: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Powers of two at the magnitude of ``a`` (per column with ``axis=0``; 1 where ``a`` is 0).

    Dividing by them is exact in floating point and keeps the squares and sums of an estimator finite
    for any input :func:`as_samples` accepts.
    """
    peak = np.max(np.abs(a), axis=axis, keepdims=axis is not None)
    return np.where(peak > 0, np.ldexp(1.0, np.frexp(peak)[1]), 1.0)


# -- constants shared by the estimators, the run folder and the training code ------------------------

LOG_2PI = math.log(2.0 * math.pi)
LOG_SQRT_2PI = 0.5 * LOG_2PI
LOG_SQRT_2PI_E = 0.5 * (LOG_2PI + 1.0)
"""Entropy of N(0, 1) in nats: h = log(sqrt(2 pi e) s) for a Gaussian of standard deviation s."""

DROPOUT_KINDS = ("gaussian", "information", "bernoulli")
"""Dropout kinds a run can use; Bernoulli dropout leaves I(X;Z) infinite (Adilova et al. 2023)."""
NOISE_KINDS = (*DROPOUT_KINDS, "additive")
"""The noise a run's analysed layer can carry: a dropout kind, or additive Gaussian noise Z = f(x) + sigma e
(Keras' ``GaussianNoise``; Goldfeld et al., ICML 2019)."""


def check_fits_in_memory(nbytes: float, what: str) -> None:
    """Raise :class:`InputError` when ``what`` needs more than 80% of this machine's physical memory
    (nothing is checked where the operating system does not say how much there is)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return
    if nbytes > 0.8 * total:
        raise InputError(
            f"{what} needs {nbytes / 2**30:.3g} GiB, more than this machine's "
            f"{total / 2**30:.0f} GiB of memory allows; ask for less"
        )


# -- scalar validators: InputError naming the argument ------------------------------------------------


def check_int(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum]; bools, floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        allowed = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise InputError(f"{name} must be an integer {allowed}, got {value!r}")
    return int(value)


def check_bool(value: Any, name: str) -> bool:
    """``value`` as a bool; only True and False (also NumPy's) are accepted, not 0, 1 or strings."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def gaussian_dropout_std(noise_std: Any = None, p: Any = None) -> tuple[float, float]:
    """(sigma, p) of Gaussian dropout from exactly one of them: the standard deviation sigma of the
    multiplicative noise N(1, sigma^2) matches the dropout rate p in its first two moments when
    sigma = sqrt(p / (1 - p)), i.e. p = sigma^2 / (1 + sigma^2) (Srivastava et al., JMLR 2014, sec. 10)."""
    if (noise_std is None) == (p is None):
        raise InputError(
            "give exactly one of noise_std (the standard deviation sigma of Gaussian dropout's multiplicative "
            f"noise) and p (its dropout rate, sigma = sqrt(p / (1 - p))); got noise_std={noise_std!r}, p={p!r}"
        )
    if p is not None:
        rate = check_float(p, "p")
        if rate >= 1:
            raise InputError(f"p must be a dropout rate in (0, 1), got {p!r}")
        return math.sqrt(rate / (1.0 - rate)), rate
    sigma = check_float(noise_std, "noise_std")
    variance = sigma * sigma
    return sigma, variance / (1.0 + variance) if math.isfinite(variance) else 1.0


def check_float(
    value: Any, name: str, *, minimum: float = 0.0, inclusive: bool = False, maximum: float | None = None
) -> float:
    """``value`` as a finite float above ``minimum`` (``inclusive``: at least it) and at most ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or np.ndim(value):
        raise InputError(f"{name} must be a number, got {value!r}")
    x = float(value)
    low_ok = x >= minimum if inclusive else x > minimum
    if not math.isfinite(x) or not low_ok or (maximum is not None and x > maximum):
        need = (">= " if inclusive else "> ") + f"{minimum:g}" + ("" if maximum is None else f" and <= {maximum:g}")
        raise InputError(f"{name} must be a finite number {need}, got {value!r}")
    return x
