"""What the kernel's passes read of a mixture (:class:`mi_estimators.mixture.api.Mixture` provides it).

A protocol rather than the class itself, so that the passes (:mod:`~mi_estimators.mixture.streaming`,
:mod:`~mi_estimators.mixture.prune`) do not import the module that imports them.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class Components(Protocol):
    """Validated components sorted by group, with the float64 pieces of the expansion."""

    means: np.ndarray  # (N, d)
    prec: np.ndarray  # (N, q), q = d or 1: 1 / s^2
    log_norm: np.ndarray  # (N,) kappa_j
    centre: np.ndarray  # (d,)
    group_edges: np.ndarray  # (G + 1,) group g is rows group_edges[g]:group_edges[g+1]
    ref: float  # s_0

    @property
    def n_groups(self) -> int: ...

    def group_sizes(self) -> np.ndarray: ...

    def magnitudes(self) -> np.ndarray: ...

    def term_max(self) -> float: ...

    def terms(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]: ...
