"""Mutual-information estimators for information-plane analysis of dropout networks.

Adilova, Geiger & Fischer, "Information Plane Analysis for Dropout Neural Networks", ICLR 2023.
The estimators return :class:`~mi_estimators.results.MIResult` with values in nats; the helpers
``discrete_entropy`` (a float), ``mixture_log_density`` and ``noisy_representations`` (arrays) do not.
The names below are imported on first use (PEP 562), so that importing one module of the package,
such as ``mi_estimators.checks`` from a command line, does not load SciPy and scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "MIResult": "results",
    "additive_noise_mi": "dropout_MI",
    "binning_mi": "binning",
    "discrete_entropy": "discrete",
    "discrete_mi": "discrete",
    "edge_mi": "edge",
    "estimate_layer_mi": "dropout_MI",
    "gaussian_dropout_mi": "dropout_MI",
    "gaussian_dropout_upper_bound": "upper_bound",
    "gaussian_entropy_upper_bound": "upper_bound",
    "information_dropout_mi": "dropout_MI",
    "kde_mi_bounds": "kde",
    "ksg_mi": "ksg",
    "ksg_mi_labels": "ksg",
    "mixture_log_density": "mixture",
    "noisy_representations": "noise",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
