"""Validators and constants shared by the whole toolkit: bad input raises :class:`InputError` (a
``ValueError``) with a message that names the culprit.

This module imports nothing from the rest of the project (and only NumPy), so every layer (estimators,
training, analysis, validation scripts) can use it and a command line's ``--help`` stays fast.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np


class InputError(ValueError):
    """The caller's input is wrong (shape, type, range, file contents): the message names the culprit.

    The only exception that command lines turn into one ``error:`` line with exit code 2; any other
    exception is a bug and is reported with its traceback. A ``ValueError``, so that callers of the
    Python API can catch either.
    """


def as_samples(x: np.ndarray, name: str = "x", *, min_samples: int = 2, dtype=np.float64) -> np.ndarray:
    """Return ``x`` as a finite 2-D float array of shape (n_samples, n_features).

    A 1-D array is read as n samples of one feature. Raises :class:`InputError` for other ranks,
    non-numeric data, NaN/inf, or fewer than ``min_samples`` rows.
    """
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise InputError(f"{name} must be 2-D (samples in rows, features in columns), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise InputError(f"{name} has no features (shape {arr.shape})")
    if arr.shape[0] < min_samples:
        raise InputError(f"{name} has {arr.shape[0]} samples; this estimator needs at least {min_samples}")
    arr = arr.astype(dtype, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise InputError(
            f"{name} contains {int(bad.sum())} NaN/inf values in {rows.size} samples (first at row {rows[0]})"
        )
    return arr


def as_labels(y: np.ndarray, n_samples: int, name: str = "labels") -> np.ndarray:
    """Return discrete labels as a 1-D integer array of length ``n_samples``.

    One-hot (2-D) labels are converted with argmax. Raises :class:`InputError` for a length mismatch,
    non-integer values or NaN.
    """
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] > 1:
        arr = arr.argmax(axis=1)
    elif arr.ndim == 2:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D class indices or 2-D one-hot, got shape {np.shape(y)}")
    if arr.shape[0] != n_samples:
        raise InputError(f"{name} has {arr.shape[0]} entries but there are {n_samples} samples")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise InputError(f"{name} must be integer class indices")
        arr = arr.astype(np.int64)
    return arr


def check_same_length(**arrays: np.ndarray) -> None:
    """Raise :class:`InputError` unless every array has the same number of rows."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise InputError(f"inputs must have the same number of samples ({listed})")


# -- constants shared by the estimators, the run folder and the training code ------------------------

LOG_2PI = math.log(2.0 * math.pi)
LOG_SQRT_2PI = 0.5 * LOG_2PI
LOG_SQRT_2PI_E = 0.5 * (LOG_2PI + 1.0)
"""Entropy of N(0, 1) in nats: h = log(sqrt(2 pi e) s) for a Gaussian of standard deviation s."""

DROPOUT_KINDS = ("gaussian", "information", "bernoulli")
"""Dropout kinds a run can use; Bernoulli dropout leaves I(X;Z) infinite (Adilova et al. 2023)."""


# -- scalar validators: InputError naming the argument ------------------------------------------------

def check_int(value: Any, name: str, *, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int in [minimum, maximum]; bools, floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise InputError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


def check_float(value: Any, name: str, *, minimum: float = 0.0, inclusive: bool = False,
                maximum: float | None = None) -> float:
    """``value`` as a finite float above ``minimum`` (``inclusive``: at least it) and at most ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or np.ndim(value):
        raise InputError(f"{name} must be a number, got {value!r}")
    x = float(value)
    low_ok = x >= minimum if inclusive else x > minimum
    if not math.isfinite(x) or not low_ok or (maximum is not None and x > maximum):
        need = (">= " if inclusive else "> ") + f"{minimum:g}" + ("" if maximum is None else f" and <= {maximum:g}")
        raise InputError(f"{name} must be a finite number {need}, got {value!r}")
    return x
