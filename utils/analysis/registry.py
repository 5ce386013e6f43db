"""The estimators of the information-plane command by name: one adapter signature, one registry line each.

Every adapter takes a :class:`LayerData` (one layer, split and epoch of a run) and the entry's
``settings`` and returns an :class:`~mi_estimators.results.MIResult`; its :class:`EstimatorSpec` says
which plane coordinates it gives and from which result field, the dropout kinds it applies to and its
own settings (part of the cache key of ``IP/estimates.json``). To add an estimator::

    def _mine(data: LayerData, settings: Mapping[str, Any]) -> MIResult:
        return my_estimator(data.noisy_z(), data.labels, **settings)

    ESTIMATORS["mine"] = EstimatorSpec("what it estimates", _mine, gives={"mi_zy": "mi"}, uses_noise=True)

One Z per plane: estimators that see the noisy representation get draw 0 of the mixture estimate's
noise (:func:`mi_estimators.noise.noisy_representations`), so EDGE, KSG and binning describe the same
Z as the dropout estimator (Adilova, Geiger & Fischer, ICLR 2023); ``binning_f`` bins the noise-free
f(x) instead, as Shwartz-Ziv & Tishby (2017) did, and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from mi_estimators.binning import binning_mi
from mi_estimators.checks import NOISE_KINDS
from mi_estimators.dropout_MI import estimate_layer_mi
from mi_estimators.edge import edge_mi
from mi_estimators.ksg import ksg_mi_labels
from mi_estimators.noise import noisy_representations
from mi_estimators.results import MIResult
from mi_estimators.upper_bound import gaussian_dropout_upper_bound
from utils.analysis.entries import COORDINATES, UPPER

INFINITE_MI = (
    "I(X;Z) is infinite under Bernoulli dropout (the all-ones mask has positive probability; "
    "Adilova et al. 2023): only binning and the cross-entropy bound are defined"
)


@dataclass(frozen=True)
class LayerData:
    """What an estimator sees: the layer's ``config.json`` entry, its noise-free f (N inputs, dim), alpha(x)
    (information dropout), the labels, and the noise draws per input and seed of this request."""

    layer: Mapping[str, Any]
    f: np.ndarray
    alphas: np.ndarray | None
    labels: np.ndarray
    draws: int
    seed: int
    progress: bool = False
    clip_min: float | None = None
    """|f| below it is raised to it for the estimators whose density needs |f| > 0 (``clips``)."""

    def noisy_z(self) -> np.ndarray:
        """Draw 0 of the noisy Z (the mixture estimate's first draw); f itself for Bernoulli dropout,
        whose Z has no finite-noise density."""
        kind = self.layer["dropout"]
        if kind == "gaussian":
            return noisy_representations(self.f, noise_std=self.layer["noise_std"], seed=self.seed)
        if kind == "additive":
            return noisy_representations(self.f, additive_std=self.layer["noise_std"], seed=self.seed)
        if kind == "information":
            return noisy_representations(self.f, alphas=self.alphas, seed=self.seed)
        return self.f


@dataclass(frozen=True)
class EstimatorSpec:
    """One estimator of the command: ``gives`` maps plane coordinates to the MIResult field holding them."""

    describe: str
    run: Callable[[LayerData, Mapping[str, Any]], MIResult]
    gives: Mapping[str, str]
    kinds: tuple[str, ...] = NOISE_KINDS
    settings: Mapping[str, Any] = field(default_factory=dict)
    uses_noise: bool = False
    """Draws noise: the number of draws and the seed are part of its cache key."""
    clips: bool = False
    """Takes ``clip_min`` (part of its cache key): its conditional density needs |f| > 0."""
    sees: str = "noisy Z"
    version: int = 1
    """Part of the cache key: raise it when a fix changes the estimator's numbers, so cached entries
    computed before the fix are recomputed."""


def _mixture(data: LayerData, settings: Mapping[str, Any]) -> MIResult:
    return estimate_layer_mi(
        data.layer,
        data.f,
        alphas=data.alphas,
        labels=data.labels,
        clip_min=data.clip_min,
        draws=data.draws,
        seed=data.seed,
        progress=data.progress,
        **settings,
    )


def _upper_bound(data: LayerData, settings: Mapping[str, Any]) -> MIResult:
    return gaussian_dropout_upper_bound(
        data.f, data.layer["noise_std"], draws=data.draws, seed=data.seed, clip_min=data.clip_min, **settings
    )


def _binning(data: LayerData, settings: Mapping[str, Any]) -> MIResult:
    return binning_mi(data.noisy_z(), data.labels, **settings)


def _binning_f(data: LayerData, settings: Mapping[str, Any]) -> MIResult:
    return binning_mi(data.f, data.labels, **settings)


def _edge(data: LayerData, settings: Mapping[str, Any]) -> MIResult:
    return edge_mi(data.noisy_z(), data.labels, seed=data.seed, discrete_y=True, **settings)


def _ksg(data: LayerData, settings: Mapping[str, Any]) -> MIResult:
    return ksg_mi_labels(data.noisy_z(), data.labels, seed=data.seed, **settings)


ESTIMATORS: dict[str, EstimatorSpec] = {
    "mixture": EstimatorSpec(
        "dropout mixture estimator of I(X;Z) and I(Y;Z) (log space for information dropout)",
        _mixture,
        {"mi_xz": "mi_xz", "mi_zy": "mi_zy", UPPER: UPPER},
        kinds=("gaussian", "information", "additive"),
        uses_noise=True,
        clips=True,
        version=2,
    ),
    "binning": EstimatorSpec(
        "binning (Shwartz-Ziv & Tishby) of one noisy draw of Z, 30 bins over its range",
        _binning,
        {"mi_xz": "mi_xz", "mi_zy": "mi_zy"},
        settings={"n_bins": 30},
        uses_noise=True,
        version=2,
    ),
    "binning_f": EstimatorSpec(
        "binning of the noise-free f(x), 30 bins over its range",
        _binning_f,
        {"mi_xz": "mi_xz", "mi_zy": "mi_zy"},
        settings={"n_bins": 30},
        sees="noise-free f(x)",
        version=2,
    ),
    "upper_bound": EstimatorSpec(
        "Gaussian (Ledoit-Wolf) upper bound on I(X;Z)",
        _upper_bound,
        {"mi_xz": "mi_xz"},
        kinds=("gaussian",),
        uses_noise=True,
        clips=True,
    ),
    "edge": EstimatorSpec("EDGE estimate of I(Y;Z) from one noisy draw of Z", _edge, {"mi_zy": "mi"}, uses_noise=True),
    "ksg": EstimatorSpec(
        "KSG (Ross 2014 form for discrete Y) estimate of I(Y;Z) from one noisy draw of Z",
        _ksg,
        {"mi_zy": "mi"},
        uses_noise=True,
    ),
}


def plane_entry(spec: EstimatorSpec, result: MIResult, *, n_inputs: int, h_y: float) -> dict[str, Any]:
    """The ``estimates.json`` fields of a result: each coordinate with its Monte Carlo and sampling errors
    (``None`` where the estimator does not give it), the number of inputs N and log N, H(Y) of their
    labels, the saturation and the provenance."""
    entry: dict[str, Any] = {}
    values = result.to_dict()
    for coordinate in (*COORDINATES, UPPER):
        source = spec.gives.get(coordinate)
        for suffix in ("", "_stderr", "_sampling_stderr"):
            entry[coordinate + suffix] = None if source is None else values.get(source + suffix)
    params = values["params"]
    entry.update(
        {
            "n_inputs": n_inputs,
            "log_n": math.log(n_inputs),
            "h_y": h_y,
            "saturation": values["saturation"],
            "convergence": params.pop("convergence", None),
            "sees": spec.sees,
            "params": params,
        }
    )
    return entry
