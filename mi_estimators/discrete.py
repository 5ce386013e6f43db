"""Plug-in entropies and mutual information of discrete variables (in nats).

H(A) = -sum_a p(a) log p(a) with p the empirical frequencies of the distinct rows of A;
I(A;B) = H(A) + H(B) - H(A,B). These are the maximum-likelihood ("plug-in") estimators; they are
exact for the empirical distribution and biased low for the population when the alphabet is
large compared with the sample (Paninski 2003).

Their error over the draw of the N samples follows from the delta method (Basharin 1959 for H; the
same influence-function argument for I): each is the mean of per-sample terms, -log p(a_i) for H(A)
and log p(a_i, b_i) / (p(a_i) p(b_i)) for I(A;B), and its standard error is the standard deviation of
those terms over sqrt(N). That describes the variance only. When most occupied cells hold one sample
the terms are nearly equal, the error goes to 0, and the plug-in bias (up to (K - 1) / (2 N) for K
occupied cells) is what limits the estimate of the population value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mi_estimators.checks import as_samples, check_same_length
from mi_estimators.results import MIResult


def symbol_ids(a: np.ndarray) -> np.ndarray:
    """Integer id per sample, equal ids for equal rows (a 1-D array is one symbol per entry)."""
    arr = np.asarray(a)
    if arr.ndim == 1:
        return np.unique(arr, return_inverse=True)[1].ravel()
    return np.unique(np.ascontiguousarray(arr), axis=0, return_inverse=True)[1].ravel()


def as_symbols(a: Any, name: str) -> np.ndarray:
    """``a`` as a non-empty 2-D array of finite real symbols in its own dtype (rows are symbols; 1-D:
    entries), so that large integer ids stay distinct; :class:`InputError` naming ``name`` otherwise."""
    return as_samples(a, name, min_rows=1, dtype=None, max_abs=None)


def discrete_entropy(a: np.ndarray) -> float:
    """Plug-in entropy H(A) in nats of the rows of ``a`` (1-D: entries); NaN/inf, complex and empty
    input are refused (:class:`~mi_estimators.checks.InputError`)."""
    counts = np.bincount(symbol_ids(as_symbols(a, "a")))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def entropy_with_stderr(a: np.ndarray) -> tuple[float, float]:
    """Plug-in H(A) and its delta-method standard error std(-log p(a_i)) / sqrt(N)."""
    ids = symbol_ids(a)
    terms = -np.log(np.bincount(ids)[ids] / len(ids))
    return float(terms.mean()), _stderr(terms)


def mi_with_stderr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Plug-in I(A;B) and its delta-method standard error std(log p(a_i,b_i)/(p(a_i)p(b_i))) / sqrt(N)."""
    ia, ib = symbol_ids(a), symbol_ids(b)
    joint = symbol_ids(_joint_ids(ia, ib))
    n = len(ia)
    terms = np.log(n * np.bincount(joint)[joint] / (np.bincount(ia)[ia] * np.bincount(ib)[ib]))
    # The plug-in I(A;B) is >= 0 exactly; the clip only removes round-off.
    return max(float(terms.mean()), 0.0), _stderr(terms)


def _joint_ids(ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """One integer per (a, b) pair of symbol ids, equal for equal pairs."""
    return ia.astype(np.int64) * (ib.max() + 1) + ib


def _stderr(terms: np.ndarray) -> float:
    return float(terms.std(ddof=1) / np.sqrt(len(terms))) if len(terms) > 1 else float("nan")


def discrete_mi(a: np.ndarray, b: np.ndarray) -> MIResult:
    """Plug-in I(A;B) = H(A) + H(B) - H(A,B) of two discrete variables, samples in rows."""
    a, b = as_symbols(a, "a"), as_symbols(b, "b")
    check_same_length(a=a, b=b)
    ia, ib = symbol_ids(a), symbol_ids(b)
    joint = _joint_ids(ia, ib)
    h_a, h_b, h_ab = discrete_entropy(ia), discrete_entropy(ib), discrete_entropy(joint)
    return MIResult(
        method="discrete_plugin",
        mi=max(h_a + h_b - h_ab, 0.0),
        n_inputs=len(ia),
        params={"h_a": h_a, "h_b": h_b, "h_ab": h_ab},
    )
