"""Binning estimates of I(X;T) and I(Y;T) for a representation T (the classic information-plane baseline).

Every entry of T (and, for ``form="binned_x"``, of X) is put on a uniform grid; the plug-in
entropies of the resulting discrete rows give the mutual informations (``mi_estimators.discrete``),
with their delta-method standard errors over the draw of the inputs as ``*_sampling_stderr``.

- ``form="szt"``: Shwartz-Ziv & Tishby, "Opening the black box of deep neural networks via
  information" (2017). X is uniform over the N inputs and T = h(X) is deterministic, so
  I(X;T) = H(T_b) and I(Y;T) = H(T_b) - H(T_b|Y) = H(T_b) - sum_y p(y) H(T_b|Y=y).
- ``form="binned_x"``: the form of the reference implementation of Adilova, Geiger & Fischer (ICLR
  2023, ``estimator_validation``), which also bins the inputs (over their own range, with the same
  bin count or bin size) and uses the plug-in I(X_b;T_b) = H(X_b) + H(T_b) - H(X_b,T_b).

For continuous X the result measures the geometry of T at the chosen bin size, not a property of the
network (Amjad & Geiger 2019; Adilova et al. 2023): the bin settings and range are always reported.
"""

from __future__ import annotations

import math

import numpy as np

from mi_estimators.checks import InputError, as_array, as_labels, as_samples, check_float, check_int, check_same_length
from mi_estimators.discrete import discrete_entropy, entropy_with_stderr, mi_with_stderr, symbol_ids
from mi_estimators.results import MIResult

FORMS = ("szt", "binned_x")
MAX_BINS = 2**52
"""Most bins per coordinate: bin indices above 2^53 are no longer exact in float64 (silently merged bins)."""


def bin_values(
    values: np.ndarray,
    *,
    n_bins: int | None = None,
    bin_size: float | None = None,
    value_range: tuple[float, float] | None = None,
    name: str = "values",
) -> tuple[np.ndarray, dict]:
    """Bin every entry of ``values`` (N x d) on one uniform grid; return (N x d int bin indices, grid info).

    The grid starts at ``value_range[0]`` (default: the smallest entry) and has either ``n_bins`` bins
    spanning ``value_range`` (default: min to max) or bins of width ``bin_size``. Entries outside an
    explicit range go to the first or last bin; their number is reported as ``n_outside_range``.
    """
    # Binning only subtracts and divides, so any finite magnitude works.
    arr = as_samples(values, name, min_rows=1, max_abs=None)
    if (n_bins is None) == (bin_size is None):
        raise InputError("give exactly one of n_bins and bin_size")
    if value_range is None:
        lo, hi = float(arr.min()), float(arr.max())
    else:
        lo, hi = _check_range(value_range)
    span = hi - lo
    if not math.isfinite(span):
        raise InputError(f"{name} spans {lo:g} to {hi:g}, wider than the largest float: rescale it")
    if n_bins is not None:
        count = check_int(n_bins, "n_bins", maximum=MAX_BINS)
        # Constant values (span 0, only possible with a data-derived range) falls into one bin.
        width = span / count if span > 0 else 1.0
    else:
        width = check_float(bin_size, "bin_size")
        if span / width > MAX_BINS:
            raise InputError(
                f"bin_size {width:g} cuts the range {lo:g} to {hi:g} into {span / width:.3g} bins; at "
                f"most 2^52 keep the bin indices exact: use a larger bin_size"
            )
        count = max(1, math.ceil(span / width))
    outside = int(np.count_nonzero((arr < lo) | (arr > hi)))
    ids = np.clip(np.floor((arr - lo) / width), 0, count - 1).astype(np.int64)
    info = {
        "value_range": [lo, hi],
        "n_bins": count,
        "bin_size": width,
        "n_outside_range": outside,
        "range_from_data": value_range is None,
    }
    return ids, info


def binning_mi(
    z: np.ndarray,
    labels: np.ndarray | None = None,
    inputs: np.ndarray | None = None,
    *,
    n_bins: int | None = None,
    bin_size: float | None = None,
    value_range: tuple[float, float] | None = None,
    input_range: tuple[float, float] | None = None,
    form: str = "szt",
) -> MIResult:
    """Binning estimate of I(X;T) (``mi_xz``) and, with labels, I(Y;T) (``mi_zy``), in nats; T is the
    representation ``z`` (N, d), one row per input: the noisy Z, or the codes f(x) themselves.

    ``form="szt"`` (Shwartz-Ziv & Tishby 2017): I(X;T) = H(T_b), X uniform over the inputs.
    ``form="binned_x"`` (reference repo of Adilova et al. 2023): I(X;T) = H(X_b) + H(T_b) - H(X_b,T_b),
    with ``inputs`` binned by the same ``n_bins``/``bin_size`` over ``input_range`` (default: their
    min/max). Either way I(Y;T) = H(T_b) - sum_y p(y) H(T_b|Y=y). Give exactly one of ``n_bins`` and
    ``bin_size``; ``value_range`` (default: min/max of T) is reported in ``params``. Both coordinates carry
    their delta-method error over the draw of the inputs (``mi_estimators.discrete``); a noise draw in
    ``z`` is part of that draw.
    """
    if not isinstance(form, str) or form not in FORMS:
        raise InputError(f"unknown form {form!r}; expected one of {FORMS}")
    t = as_samples(z, "z", min_rows=1, max_abs=None)
    n = t.shape[0]
    t_ids, t_info = bin_values(t, n_bins=n_bins, bin_size=bin_size, value_range=value_range, name="z")
    t_sym = symbol_ids(t_ids)
    h_t, h_t_stderr = entropy_with_stderr(t_sym)
    params: dict = {"form": form, **t_info}

    if form == "szt":
        if inputs is not None:
            raise InputError(
                "form 'szt' takes X uniform over the rows of z and ignores inputs; "
                "use form='binned_x' to bin the inputs too"
            )
        (mi_xz, mi_xz_stderr), log_n = (h_t, h_t_stderr), math.log(n)
    else:
        (mi_xz, mi_xz_stderr), log_n = _binned_x_mi(
            t, t_sym, inputs, params, n_bins=n_bins, bin_size=bin_size, input_range=input_range
        )
    params["h_t_binned"] = h_t

    mi_zy = mi_zy_stderr = h_y = None
    if labels is not None:
        y = symbol_ids(as_labels(labels, n))
        h_y = discrete_entropy(y)
        mi_zy, mi_zy_stderr = mi_with_stderr(t_sym, y)
        params["h_t_given_y_binned"] = h_t - mi_zy
    return MIResult(
        method=f"binning_{form}",
        mi_xz=mi_xz,
        mi_xz_sampling_stderr=mi_xz_stderr,
        mi_zy=mi_zy,
        mi_zy_sampling_stderr=mi_zy_stderr,
        h_y=h_y,
        log_n=log_n,
        n_inputs=n,
        params=params,
    )


def _binned_x_mi(
    t: np.ndarray,
    t_sym: np.ndarray,
    inputs: np.ndarray | None,
    params: dict,
    *,
    n_bins: int | None,
    bin_size: float | None,
    input_range: tuple[float, float] | None,
) -> tuple[tuple[float, float], float]:
    """(I(X_b;T_b) = H(X_b) + H(T_b) - H(X_b,T_b) with X binned like T (the reference repo's form), its
    delta-method error) and log of the number of distinct inputs; the input grid goes into ``params``."""
    if inputs is None:
        raise InputError("form 'binned_x' needs the inputs X (one row per input, aligned with the rows of z)")
    x = as_array(inputs, "inputs")
    # Image-shaped inputs are binned pixel by pixel, like any other feature vector.
    x = as_samples(x.reshape(len(x), -1) if x.ndim > 2 else x, "inputs", min_rows=1, max_abs=None)
    check_same_length(z=t, inputs=x)
    x_ids, x_info = bin_values(x, n_bins=n_bins, bin_size=bin_size, value_range=input_range, name="inputs")
    x_sym = symbol_ids(x_ids)
    h_x = discrete_entropy(x_sym)
    params.update(
        {
            "h_x_binned": h_x,
            "input_range": x_info["value_range"],
            "input_n_bins": x_info["n_bins"],
            "input_bin_size": x_info["bin_size"],
            "input_n_outside_range": x_info["n_outside_range"],
        }
    )
    return mi_with_stderr(x_sym, t_sym), math.log(len(np.unique(x, axis=0)))


def _check_range(value_range) -> tuple[float, float]:
    try:
        if isinstance(value_range, (str, bytes)):  # "12" would otherwise read as (1, 2)
            raise TypeError
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise InputError(f"value_range must be a pair (low, high), got {value_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise InputError(f"value_range must be finite with low < high, got {value_range!r}")
    return lo, hi
