"""Input validation shared by every estimator: bad input raises ``ValueError`` with a clear message."""
from __future__ import annotations

import numpy as np


def as_samples(x: np.ndarray, name: str = "x", *, min_samples: int = 2, dtype=np.float64) -> np.ndarray:
    """Return ``x`` as a finite 2-D float array of shape (n_samples, n_features).

    A 1-D array is read as n samples of one feature. Raises ``ValueError`` for other ranks,
    non-numeric data, NaN/inf, or fewer than ``min_samples`` rows.
    """
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples in rows, features in columns), got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no features (shape {arr.shape})")
    if arr.shape[0] < min_samples:
        raise ValueError(f"{name} has {arr.shape[0]} samples; this estimator needs at least {min_samples}")
    arr = arr.astype(dtype, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(
            f"{name} contains {int(bad.sum())} NaN/inf values in {rows.size} samples (first at row {rows[0]})"
        )
    return arr


def as_labels(y: np.ndarray, n_samples: int, name: str = "labels") -> np.ndarray:
    """Return discrete labels as a 1-D integer array of length ``n_samples``.

    One-hot (2-D) labels are converted with argmax. Raises ``ValueError`` for a length mismatch,
    non-integer values or NaN.
    """
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] > 1:
        arr = arr.argmax(axis=1)
    elif arr.ndim == 2:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices or 2-D one-hot, got shape {np.shape(y)}")
    if arr.shape[0] != n_samples:
        raise ValueError(f"{name} has {arr.shape[0]} entries but there are {n_samples} samples")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must be integer class indices")
        arr = arr.astype(np.int64)
    return arr


def check_same_length(**arrays: np.ndarray) -> None:
    """Raise ``ValueError`` unless every array has the same number of rows."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise ValueError(f"inputs must have the same number of samples ({listed})")
