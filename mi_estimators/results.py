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
    """Mutual-information estimate with its uncertainty and provenance.

    ``mi_xz``/``mi_zy`` are the information-plane coordinates I(X;Z) and I(Y;Z); ``mi`` is used by
    two-variable estimators such as ``ksg_mi(x, y)``. ``*_stderr`` are Monte Carlo (or bootstrap)
    standard errors where the method defines one. ``log_n`` is log of the number of distinct inputs,
    the ceiling of I(X;Z) for X uniform on a finite sample; ``h_y`` the ceiling of I(Y;Z).
    """

    method: str
    mi_xz: float | None = None
    mi_xz_stderr: float | None = None
    mi_zy: float | None = None
    mi_zy_stderr: float | None = None
    mi: float | None = None
    mi_stderr: float | None = None
    h_z: float | None = None
    h_z_stderr: float | None = None
    h_z_given_x: float | None = None
    h_z_given_y: float | None = None
    h_y: float | None = None
    log_n: float | None = None
    n_samples: int | None = None
    params: dict[str, Any] = field(default_factory=dict)

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
