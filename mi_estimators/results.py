"""The result object every estimator in this package returns.

All information quantities are in nats. A field an estimator does not define stays ``None`` and is
written to JSON as ``null``; ``params`` records the settings that produced the number (noise level,
bin size and range, number of components used, ...), so that every saved estimate says how it was
made.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class MIResult:
    """Mutual-information estimate with its uncertainty and provenance; every field has one meaning.

    ============================  ===================================================================
    field                         meaning (nats; ``None`` where the method does not define it)
    ============================  ===================================================================
    ``mi_xz``, ``mi_zy``          the information-plane coordinates I(X;Z) and I(Y;Z) of a layer's
                                  representation Z, X uniform over the N analysed inputs (estimators of
                                  a dropout layer, binning, the Gaussian bound)
    ``mi_xz_upper``               the leave-one-out (upper) estimate of I(X;Z) from the same matrix as
                                  ``mi_xz`` (mixture estimators): in expectation ``mi_xz`` <= I(X;Z) <=
                                  ``mi_xz_upper`` for the population of inputs (Poole et al. 2019)
    ``mi``                        I(A;B) of the two arrays given to a two-variable estimator
                                  (``ksg_mi(a, b)``, ``edge_mi(a, b)``, ``discrete_mi(a, b)``)
    ``*_stderr``                  Monte Carlo (or bootstrap) standard error with the N inputs fixed: the
                                  error of I_N, the MI of X uniform over exactly these inputs
    ``*_sampling_stderr``         standard error of I_N over the draw of the N inputs from the data
                                  distribution (delta method, :mod:`mi_estimators.dropout_MI`); add it in
                                  quadrature to ``*_stderr`` for the error of the population value
    ``h_z``, ``h_z_given_x``,     differential entropies of Z (of log Z for information dropout)
    ``h_z_given_y``, ``h_z_stderr``
    ``h_y``                       plug-in entropy of the labels, the ceiling of I(Y;Z)
    ``log_n``                     log N, the ceiling of I(X;Z) for X uniform over N inputs
    ``n_inputs``                  N, the number of analysed inputs
    ``saturation``                dI(X;Z)/dlog N between nested random subsets of N/4 and N inputs: near
                                  1 the estimate is limited by N, not by the network (McAllester &
                                  Stratos 2020); the subset estimates are in ``params["convergence"]``
    ``params``                    the settings that produced the number (noise level, draws, bins, ...)
    ``warnings``                  why the number cannot be trusted as it stands (outside what it can be, a
                                  biased shortcut); empty for a sound estimate
    ============================  ===================================================================
    """

    method: str
    mi_xz: float | None = None
    mi_xz_stderr: float | None = None
    mi_xz_sampling_stderr: float | None = None
    mi_xz_upper: float | None = None
    mi_xz_upper_stderr: float | None = None
    mi_xz_upper_sampling_stderr: float | None = None
    mi_zy: float | None = None
    mi_zy_stderr: float | None = None
    mi_zy_sampling_stderr: float | None = None
    mi: float | None = None
    mi_stderr: float | None = None
    h_z: float | None = None
    h_z_stderr: float | None = None
    h_z_given_x: float | None = None
    h_z_given_y: float | None = None
    h_y: float | None = None
    log_n: float | None = None
    n_inputs: int | None = None
    saturation: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary (floats, ints, strings, lists, None; NaN becomes None)."""
        return _jsonable(asdict(self))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
