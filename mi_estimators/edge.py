"""EDGE: the ensemble dependence-graph estimator of mutual information.

Noshad, Zeng & Hero, "Scalable Mutual Information Estimation using Dependence Graphs", ICASSP 2019
(arXiv 1801.09125). Written from the paper; the facts below were checked against the authors' code
(github.com/mrtnoshad/EDGE), whose conventions differ where noted.

1. Hashing. Each coordinate is standardised; X (and Y) with more coordinates than
   k = max(1, floor(log2(N / 10))) are first projected to k coordinates by a Gaussian random matrix
   (p-stable LSH, as in the authors' code) and standardised again. A point u is hashed to the bucket
   floor((u + b) / eps) coordinate-wise, with a random shift b ~ U[0, eps)^k.
2. Dependence graph. With N_i points in X-bucket i, M_j in Y-bucket j and N_ij in both, the edge (i, j)
   has weight N_ij / N and ratio w_ij = N_ij N / (N_i M_j); the base estimate is
   I_eps = sum_edges (N_ij / N) * min(log w_ij, U)   (nats; g(x) = log x capped at U).
   Uncapped this is the plug-in MI of the two bucket variables. The authors' code uses log base 2 and
   also floors each term at 0.001; we keep negative terms, so independent variables give ~0.
3. Ensemble. Bandwidths eps_l = t_l * bandwidth * N^(-1/(2D)), t_l = linspace(1, t_max, L), D the
   total hashed dimension (X plus Y; X only for discrete Y); eps ~ N^(-1/(2D)) is the paper's rate.
   The paper bounds the base bias by O(eps^gamma) + O(1/(N eps^D)); the weights w are the
   minimum-norm solution of sum_l w_l = 1 and sum_l w_l t_l^p = 0 for p in ``bias_powers`` (default
   (2, -D): the smoothing bias of a twice differentiable density and the sparse-bucket bias), the
   weighted ensemble of Moon, Sricharan, Greenewald & Hero ("Ensemble estimation of information
   divergence", Entropy 2018) that the paper uses, solved exactly instead of the authors' relaxed
   convex program. I = sum_l w_l I_{eps_l}. The defaults (bandwidth 1.5, t in [1, 4], 12 bandwidths)
   were chosen on correlated Gaussians: for 1-D pairs and for 1-D X with discrete Y the bias is about
   0.015 nats or less at N = 2000-4000 (``tests/test_edge.py``).

Limits: like every histogram estimate, EDGE needs many samples per joint bucket. With D >= 4 hashed
dimensions at a few thousand samples most buckets hold one point and the estimate drifts towards
log N (independent 3-D Gaussian pairs, N = 4000: ~0.5 nats instead of 0); a ``UserWarning`` says
so when the finest hashing leaves fewer than 2 samples per occupied joint bucket.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from mi_estimators.checks import (
    MAX_ABS,
    InputError,
    as_samples,
    check_bool,
    check_float,
    check_int,
    check_same_length,
    power_of_two_scale,
)
from mi_estimators.discrete import symbol_ids
from mi_estimators.results import MIResult

MIN_ROWS = 20
# Below ~2 samples per joint bucket most points sit alone and the plug-in saturates towards log N.
MIN_OCCUPANCY = 2.0
MAX_BANDWIDTHS = 1000
"""Each bandwidth is one hashing of all the data; the default ensemble uses 12."""


def edge_mi(
    x: np.ndarray,
    y: np.ndarray,
    *,
    U: float = 10.0,
    seed: int = 0,
    discrete_y: bool = False,
    n_bandwidths: int = 12,
    bandwidth: float = 1.5,
    t_max: float = 4.0,
    bias_powers: tuple[float, ...] | None = None,
) -> MIResult:
    """EDGE estimate (Noshad, Zeng & Hero 2019) of I(X;Y) in nats (field ``mi``).

    I = sum_l w_l sum_{edges (i,j)} (N_ij / N) min(log(N_ij N / (N_i M_j)), U) over ``n_bandwidths``
    random-shift hashings with bandwidths t_l * ``bandwidth`` * N^(-1/(2D)) (in standard deviations),
    w the ensemble weights described in the module docstring. ``discrete_y=True`` uses the distinct
    rows of ``y`` (e.g. class labels) as its buckets. A ``UserWarning`` says when terms hit the cap U,
    which biases the estimate low. ``params`` holds the weights and the per-bandwidth estimates.
    """
    U = check_float(U, "U")
    bandwidth = check_float(bandwidth, "bandwidth")
    t_max = check_float(t_max, "t_max")
    if t_max <= 1.0:
        raise InputError(f"t_max must exceed 1 so that the bandwidths differ, got {t_max}")
    check_int(seed, "seed", minimum=0)
    check_bool(discrete_y, "discrete_y")
    x = as_samples(x, "x", min_rows=MIN_ROWS)
    # Discrete labels are only compared, so any magnitude works.
    y = as_samples(y, "y", min_rows=MIN_ROWS, max_abs=None if discrete_y else MAX_ABS)
    check_same_length(x=x, y=y)
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    u = _hash_coordinates(x, rng)
    # Discrete labels are their own buckets at every bandwidth; continuous y is hashed like x.
    y_coded = symbol_ids(y) if discrete_y else _hash_coordinates(y, rng)
    dim = u.shape[1] + (0 if discrete_y else y_coded.shape[1])
    powers = (2.0, -float(dim)) if bias_powers is None else _check_powers(bias_powers)
    # One more bandwidth than the number of cancelled bias terms.
    t = np.linspace(
        1.0, t_max, check_int(n_bandwidths, "n_bandwidths", minimum=len(powers) + 1, maximum=MAX_BANDWIDTHS)
    )
    weights = ensemble_weights(t, powers)
    eps = t * bandwidth * n ** (-1.0 / (2 * dim))

    base, capped, occupancy = np.empty(len(t)), np.empty(len(t)), np.empty(len(t))
    for idx, e in enumerate(eps):
        ix = _buckets(u, e, rng)
        iy = y_coded if discrete_y else _buckets(y_coded, e, rng)
        base[idx], capped[idx], n_edges = _dependence_graph_mi(ix, iy, U)
        occupancy[idx] = n / n_edges
    if capped.max() > 0:
        warnings.warn(
            f"EDGE: up to {capped.max():.1%} of the sample weight hit the cap U={U} (log N = "
            f"{math.log(n):.2f}); the estimate is biased low, raise U",
            UserWarning,
            stacklevel=2,
        )
    if occupancy[0] < MIN_OCCUPANCY:
        warnings.warn(
            f"EDGE: at the finest bandwidth the {dim} hashed dimensions leave {occupancy[0]:.1f} "
            f"samples per occupied joint bucket (< {MIN_OCCUPANCY}); the sparse-bucket bias dominates "
            f"and the estimate is unreliable (more samples, a larger bandwidth or fewer dimensions help)",
            UserWarning,
            stacklevel=2,
        )
    return MIResult(
        method="edge",
        mi=float(weights @ base),
        n_inputs=n,
        log_n=math.log(n),
        params={
            "U": U,
            "seed": seed,
            "discrete_y": discrete_y,
            "hashed_dims": dim,
            "x_hashed_dims": u.shape[1],
            "bandwidth": bandwidth,
            "t": t,
            "epsilons": eps,
            "bias_powers": list(powers),
            "weights": weights,
            "base_estimates": base,
            "capped_weight_fraction": capped,
            "mean_bucket_occupancy": occupancy,
        },
    )


def ensemble_weights(t: np.ndarray, powers: tuple[float, ...]) -> np.ndarray:
    """Minimum-norm w with sum(w) = 1 and sum(w * t**p) = 0 for each p in ``powers`` (Moon et al. 2018)."""
    t = np.asarray(t, dtype=np.float64)
    a = np.vstack([np.ones_like(t)] + [t**p for p in powers])
    target = np.zeros(len(a))
    target[0] = 1.0
    w = np.linalg.pinv(a) @ target
    if not np.allclose(a @ w, target, atol=1e-8):
        raise InputError(
            f"the ensemble constraints for bias_powers {list(powers)} cannot be met with "
            f"t = {t.tolist()}; use distinct powers and more bandwidths"
        )
    return w


def _check_powers(bias_powers: Any) -> tuple[float, ...]:
    """``bias_powers`` as a tuple of finite numbers, else :class:`InputError`."""
    if isinstance(bias_powers, (str, bytes)) or np.ndim(bias_powers) != 1:
        raise InputError(f"bias_powers must be a sequence of numbers, got {bias_powers!r}")
    return tuple(check_float(p, "bias_powers entry", minimum=-math.inf) for p in bias_powers)


def _dependence_graph_mi(ix: np.ndarray, iy: np.ndarray, cap: float) -> tuple[float, float, int]:
    """sum over edges of (N_ij/N) min(log(N_ij N / (N_i M_j)), cap), the weight of capped edges, #edges."""
    n = len(ix)
    n_y = int(iy.max()) + 1
    edges, n_ij = np.unique(ix * n_y + iy, return_counts=True)
    n_i, m_j = np.bincount(ix)[edges // n_y], np.bincount(iy)[edges % n_y]
    log_ratio = np.log(n_ij * n / (n_i * m_j))
    hit = log_ratio > cap
    weight = n_ij / n
    return float(weight @ np.minimum(log_ratio, cap)), float(weight[hit].sum()), len(edges)


def _buckets(a: np.ndarray, eps: float, rng: np.random.Generator) -> np.ndarray:
    shift = rng.uniform(0.0, eps, a.shape[1])
    return symbol_ids(np.floor((a + shift) / eps).astype(np.int64))


def _hash_coordinates(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Standardised coordinates, projected to max(1, floor(log2(N/10))) Gaussian directions if wider."""
    k = max(1, int(math.floor(math.log2(a.shape[0] / 10))))
    a = _standardise(a)
    if a.shape[1] > k:
        a = _standardise(a @ rng.normal(0.0, 1.0 / math.sqrt(a.shape[1]), (a.shape[1], k)))
    return a


def _standardise(a: np.ndarray) -> np.ndarray:
    # An exact power-of-two rescaling first: the squares inside std() stay finite for huge values.
    a = a / power_of_two_scale(a, axis=0)
    std = a.std(axis=0)
    # Constant coordinates carry no information; leave them centred at 0 with unit scale.
    std[std == 0] = 1.0
    return (a - a.mean(axis=0)) / std
