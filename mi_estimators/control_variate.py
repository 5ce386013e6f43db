"""Mean of per-input Monte Carlo terms with a control variate, and its two standard errors.

The mixture estimators write I_N = (1/N) sum_k a_k, a_k = E_eps[t(x_k, eps)], with X uniform over the
N analysed inputs and t a per-draw term (e.g. log p(z|x_k) - log p(z)). Each input k has R_k draws.

* Control variate: c = (d - |eps|^2) / 2 has mean exactly 0 within every input; the estimate is the mean
  of t + beta c with beta = -Cov(t, c) / Var(c) fitted WITHIN inputs (only inputs with R_k >= 2), so
  the spread of a_k between inputs never enters the fit. beta = 0 is the plain ("unpaired") form,
  beta = 1 the paired form; the fitted beta is never worse than either, up to O(1/M) from the fit.
* Monte Carlo error (inputs fixed, the error of I_N): Var = (1/N^2) sum_k s_k^2 / R_k, s_k^2 the
  within-input variance; inputs with one draw get the mean s^2 of the inputs with several, which is
  unbiased because those are a random subset (the "pilot" draws of :mod:`mi_estimators.dropout_MI`).
* Sampling error (over the draw of the N inputs from the data distribution): a_k - I is the influence
  function of I(X;Z) = E_x KL(p(z|x) || p(z)) at x_k (the derivative of h(Z) along a point mass at x is
  -E_{z|x} log p(z) - h(Z); the "+1" terms integrate to zero), so by the delta method
  Var(I_N) = Var_x(a_x) / N + O(1/N^2). Var_x(a) is estimated by the spread of the per-input means
  minus their Monte Carlo part, floored at 0. The same holds for I(Y;Z) with the per-input
  E[log p(z|y_k) - log p(z)].
The sampling error says nothing about the bias of I_N (I_N <= log N): that is what the
convergence-in-N diagnostic measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MCMean:
    """An estimate of (1/N) sum_k a_k with its Monte Carlo and input-sampling standard errors."""

    value: float
    stderr: float
    sampling_stderr: float
    beta: float


def control_variate_mean(
    values: np.ndarray, cv: np.ndarray, inputs: np.ndarray, n: int, beta: float | None = None
) -> MCMean:
    """Per-draw ``values`` and control variate ``cv`` of inputs ``inputs`` (ints 0..n-1, every input
    drawn at least once); ``beta`` None fits it within inputs (module docstring)."""
    counts = np.bincount(inputs, minlength=n).astype(np.float64)
    if beta is None:
        beta = _within_beta(values, cv, inputs, counts)
    u = values + beta * cv
    row_mean = np.bincount(inputs, u, minlength=n) / counts
    within_sq = np.bincount(inputs, (u - row_mean[inputs]) ** 2, minlength=n)
    several = counts >= 2
    if several.any():
        within = within_sq[several] / (counts[several] - 1)
        s2 = np.full(n, within.mean())
        s2[several] = within
    else:  # no input drawn twice: the total spread bounds the Monte Carlo part from above
        s2 = np.full(n, float(np.var(u, ddof=1)) if len(u) > 1 else math.nan)
    mc_part = s2 / counts
    between = float(np.var(row_mean, ddof=1)) - float(mc_part.mean()) if n > 1 else math.nan
    return MCMean(
        value=float(row_mean.mean()),
        stderr=math.sqrt(mc_part.sum()) / n,
        sampling_stderr=math.sqrt(max(between, 0.0) / n),
        beta=float(beta),
    )


def _within_beta(values: np.ndarray, cv: np.ndarray, inputs: np.ndarray, counts: np.ndarray) -> float:
    keep = counts[inputs] >= 2
    if not keep.any():
        return 0.0
    v, c, k = values[keep], cv[keep], inputs[keep]
    vc = v - (np.bincount(k, v, minlength=len(counts)) / np.maximum(counts, 1))[k]
    cc = c - (np.bincount(k, c, minlength=len(counts)) / np.maximum(counts, 1))[k]
    denom = float((cc * cc).sum())
    return -float((vc * cc).sum()) / denom if denom > 0 else 0.0
