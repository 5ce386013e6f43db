"""How to read an entry of ``IP/estimates.json``: its plane coordinates, their total error and when a
point is limited by the number of inputs. The figures, the comparison tables and the command share it."""

from __future__ import annotations

import math
from typing import Any, Mapping

COORDINATES = ("mi_xz", "mi_zy")
"""The plane coordinates: I(X;Z) and I(Y;Z)."""
UPPER = "mi_xz_upper"
"""The upper (leave-one-out) estimate of I(X;Z) that brackets ``mi_xz`` with it (mixture entries; None
elsewhere), with its own ``_stderr`` and ``_sampling_stderr``."""
SATURATION_LIMIT = 0.5
"""A point whose dI(X;Z)/dlog N exceeds this is limited by the number of inputs N (McAllester &
Stratos 2020): another N gives another value. Figures draw such points hollow."""


def total_error(entry: Mapping[str, Any], coordinate: str) -> float | None:
    """The Monte Carlo and input-sampling errors of ``coordinate`` (``"xz"``, ``"zy"`` or ``"xz_upper"``) in
    quadrature: the error of the population value at this N (None when the estimator reports neither)."""
    found = [entry.get(f"mi_{coordinate}_stderr"), entry.get(f"mi_{coordinate}_sampling_stderr")]
    parts = [float(p) for p in found if p is not None]
    return math.hypot(*parts) if parts else None
