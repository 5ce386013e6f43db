"""k-nearest-neighbour estimators of mutual information (max-norm, SciPy KD-trees).

- ``ksg_mi``: Kraskov, Stoegbauer & Grassberger, "Estimating mutual information", Phys. Rev. E 69,
  066138 (2004), algorithm 1: I(X;Y) = psi(k) + psi(N) - < psi(n_x + 1) + psi(n_y + 1) >, where
  eps_i is the max-norm distance from (x_i, y_i) to its k-th neighbour in the joint space and
  n_x(i), n_y(i) count the other points strictly closer than eps_i in the X and Y subspaces.
- ``ksg_mi_labels``: I(Z;Y) for discrete Y, in one of two forms.
  ``form="ross"`` (default): Ross, "Mutual information between discrete and continuous data sets",
  PLoS ONE 9, e87357 (2014): I = psi(N) - <psi(N_{y_i})> + psi(k) - <psi(m_i)>, r_i the distance from
  z_i to its k-th neighbour within its own class and m_i the number of points of any class within r_i
  (the form of scikit-learn's ``mutual_info_classif``). Like KSG it reuses one neighbourhood for both
  counts, so the dimension-dependent biases largely cancel.
  ``form="micd"``: H(Z) - sum_y p(y) H(Z|Y=y), each differential entropy by the Kozachenko-Leonenko
  estimator with the max-norm (Kraskov et al. 2004, eq. 20): H = psi(N) - psi(k) + d log 2 +
  (d/N) sum_i log r_i, r_i the distance to the k-th neighbour (a max-norm ball of radius r has volume
  (2r)^d). This is the ``micd`` form of the NPEET toolbox (Ver Steeg), except that NPEET returns the
  absolute value of the difference and silently substitutes H(Z) for classes with too few samples;
  here the difference keeps its sign and such classes are an error. Its entropy biases depend on the
  sample size and do not cancel between H(Z) (N points) and H(Z|Y=y) (N p(y) points): for independent
  Z and 10 classes it gives about -0.1 nats at d = 8 and -1.6 nats at d = 32 (N = 5000), where the Ross
  form gives ~0. Use it only in low dimension.

``ksg_mi`` first scales every column of X and Y to unit standard deviation (as scikit-learn's
``mutual_info_regression`` does): the max-norm compares X and Y distances, so without it a change of
units of one variable (X in 1e10 units, say) moves the estimate (to 0), although I(aX; bY) = I(X;Y).

Like NPEET, a tiny seeded jitter (1e-10 of each column's standard deviation) breaks the ties that
repeated values would otherwise create in the neighbour counts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import digamma
from tqdm.auto import tqdm

from mi_estimators.checks import (
    InputError,
    as_labels,
    as_samples,
    check_bool,
    check_int,
    check_same_length,
    power_of_two_scale,
)
from mi_estimators.discrete import discrete_entropy
from mi_estimators.results import MIResult

_JITTER = 1e-10
# Rows per KD-tree query call: granularity of the progress bar, no effect on the result.
_CHUNK = 4096
LABEL_FORMS = ("ross", "micd")


def ksg_mi(
    x: np.ndarray, y: np.ndarray, k: int = 3, *, seed: int = 0, workers: int = 1, progress: bool = False
) -> MIResult:
    """KSG estimate (Kraskov et al. 2004, algorithm 1) of I(X;Y) in nats (field ``mi``).

    I = psi(k) + psi(N) - mean_i[psi(n_x(i) + 1) + psi(n_y(i) + 1)], max-norm throughout.
    ``x`` (N x d_x) and ``y`` (N x d_y) hold samples in rows; needs N > k. ``workers`` is the number
    of threads of the KD-tree queries (-1: all cores); ``progress`` shows a bar over the queries.
    """
    k = check_int(k, "k")
    _check_options(seed, workers, progress)
    x = _unit_std(as_samples(x, "x", min_rows=k + 1))
    y = _unit_std(as_samples(y, "y", min_rows=k + 1))
    check_same_length(x=x, y=y)
    rng = np.random.default_rng(seed)
    x, y = _jitter(x, rng), _jitter(y, rng)
    n = x.shape[0]
    with _bar(3 * n, progress, "KSG") as bar:
        eps = _kth_neighbour_distance(np.hstack([x, y]), k, workers, bar)
        # query_ball_point counts distance <= r; the next float below eps makes the counts strict.
        inner = np.nextafter(eps, 0.0)
        n_x = _count_within(x, inner, workers, bar)
        n_y = _count_within(y, inner, workers, bar)
    mi = digamma(k) + digamma(n) - np.mean(digamma(n_x + 1) + digamma(n_y + 1))
    return MIResult(
        method="ksg",
        mi=float(mi),
        n_inputs=n,
        params={"k": k, "seed": seed, "norm": "max", "algorithm": 1, "jitter": _JITTER},
    )


def ksg_mi_labels(
    z: np.ndarray,
    labels: np.ndarray,
    k: int = 3,
    *,
    seed: int = 0,
    form: str = "ross",
    workers: int = 1,
    progress: bool = False,
) -> MIResult:
    """k-NN estimate of I(Z;Y) in nats for discrete labels Y (field ``mi``); every class needs > k samples.

    ``form="ross"`` (Ross 2014): I = psi(N) - <psi(N_{y_i})> + psi(k) - <psi(m_i)>, with r_i the distance
    from z_i to its k-th neighbour of the same class and m_i the number of points of any class within r_i.
    ``form="micd"`` (NPEET): H(Z) - sum_y p(y) H(Z|Y=y), each entropy the Kozachenko-Leonenko estimate
    H = psi(N) - psi(k) + d log 2 + (d/N) sum_i log r_k(i) (Kraskov et al. 2004, eq. 20); no point may
    then repeat more than k times (its r_k would be 0 and log r_k infinite). Max-norm throughout.
    ``workers`` and ``progress`` as in :func:`ksg_mi`.
    """
    k = check_int(k, "k")
    _check_options(seed, workers, progress)
    if not isinstance(form, str) or form not in LABEL_FORMS:
        raise InputError(f"unknown form {form!r}; expected one of {LABEL_FORMS}")
    z = as_samples(z, "z", min_rows=k + 1)
    y = as_labels(labels, z.shape[0])
    classes, y, counts = np.unique(y, return_inverse=True, return_counts=True)
    if counts.min() <= k:
        small = ", ".join(f"{c}: {m}" for c, m in zip(classes[counts <= k], counts[counts <= k]))
        raise InputError(f"every class needs more than k={k} samples for the k-NN estimate; too few in ({small})")
    if form == "micd":
        _, multiplicity = np.unique(z, axis=0, return_counts=True)
        if multiplicity.max() > k:
            raise InputError(
                f"z has a point repeated {multiplicity.max()} times (> k={k}), so its k-th neighbour distance is 0 "
                f"and the Kozachenko-Leonenko entropy diverges; use form='ross', add noise or a discrete estimator"
            )
    z = _jitter(z, np.random.default_rng(seed))
    n = z.shape[0]
    p = counts / n
    h_y = discrete_entropy(y)
    params = {"k": k, "seed": seed, "form": form, "norm": "max", "jitter": _JITTER, "n_classes": int(classes.size)}
    with _bar(2 * n, progress, f"KSG labels ({form})") as bar:
        if form == "ross":
            radius = np.empty(n)
            for c in range(classes.size):
                members = y == c
                radius[members] = _kth_neighbour_distance(z[members], k, workers, bar)
            # All points within r_i, the k same-class neighbours included.
            m = _count_within(z, radius, workers, bar)
            mi = digamma(n) - np.mean(digamma(counts[y])) + digamma(k) - np.mean(digamma(m))
            return MIResult(method="ksg_labels_ross", mi=float(mi), h_y=h_y, n_inputs=n, params=params)
        h_z = _kl_entropy(z, k, workers, bar)
        h_given = [_kl_entropy(z[y == c], k, workers, bar) for c in range(classes.size)]
    h_z_given_y = float(p @ np.array(h_given))
    return MIResult(
        method="ksg_labels_micd",
        mi=h_z - h_z_given_y,
        h_z=h_z,
        h_z_given_y=h_z_given_y,
        h_y=h_y,
        n_inputs=n,
        params=params,
    )


def _check_options(seed: Any, workers: Any, progress: Any) -> None:
    """:class:`InputError` naming a bad ``seed``, ``workers`` (-1: all cores, else >= 1) or ``progress``."""
    check_int(seed, "seed", minimum=0)
    if check_int(workers, "workers", minimum=-1) == 0:
        raise InputError("workers must be -1 (all cores) or a positive number of threads, got 0")
    check_bool(progress, "progress")


def _unit_std(a: np.ndarray) -> np.ndarray:
    """Every column scaled to unit standard deviation (constant columns left as they are)."""
    a = a / power_of_two_scale(a, axis=0)
    std = a.std(axis=0)
    return a / np.where(std > 0, std, 1.0)


def _kl_entropy(z: np.ndarray, k: int, workers: int, bar: tqdm) -> float:
    n, d = z.shape
    r = _kth_neighbour_distance(z, k, workers, bar)
    return float(digamma(n) - digamma(k) + d * math.log(2.0) + d * np.mean(np.log(r)))


def _kth_neighbour_distance(a: np.ndarray, k: int, workers: int, bar: tqdm) -> np.ndarray:
    """Max-norm distance from each row to its k-th nearest other row."""
    tree, out = cKDTree(a), np.empty(len(a))
    for rows in _chunks(len(a)):
        # k + 1 because each point is its own nearest neighbour at distance 0.
        out[rows] = tree.query(a[rows], k=[k + 1], p=np.inf, workers=workers)[0][:, 0]
        bar.update(rows.stop - rows.start)
    return out


def _count_within(a: np.ndarray, radius: np.ndarray, workers: int, bar: tqdm) -> np.ndarray:
    """Number of other rows within max-norm distance <= radius[i] of row i."""
    tree, out = cKDTree(a), np.empty(len(a), dtype=np.int64)
    for rows in _chunks(len(a)):
        out[rows] = tree.query_ball_point(a[rows], r=radius[rows], p=np.inf, return_length=True, workers=workers) - 1
        bar.update(rows.stop - rows.start)
    return out


def _chunks(n: int) -> list[slice]:
    return [slice(s, min(s + _CHUNK, n)) for s in range(0, n, _CHUNK)]


def _bar(total: int, progress: bool, desc: str) -> tqdm:
    return tqdm(total=total, unit="query", desc=desc, disable=not progress, leave=False)


def _jitter(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # std() of exactly rescaled columns: its squares stay finite for huge values.
    unit = power_of_two_scale(a, axis=0)
    scale = (a / unit).std(axis=0) * unit[0]
    scale[scale == 0] = 1.0
    return a + _JITTER * scale * rng.random(a.shape)
