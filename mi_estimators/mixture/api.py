"""The public face of the mixture kernel: validated components (:class:`Mixture`) and their log-density.

See :mod:`mi_estimators.mixture` for the expansion and :mod:`mi_estimators.mixture.bound` for the
accuracy guarantee.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mi_estimators.checks import LOG_2PI, InputError, as_labels, as_samples, check_float
from mi_estimators.mixture import prune as pruning
from mi_estimators.mixture.bound import STAT_FLOOR
from mi_estimators.mixture.streaming import DensePass

BACKENDS = ("numpy", "keras")
PRUNE = ("auto", "never", "always")
_MAX_SCALE = 1e150


def mixture_log_density(
    points: np.ndarray,
    means: np.ndarray,
    stds: np.ndarray | float,
    *,
    groups: np.ndarray | None = None,
    leave_out: np.ndarray | None = None,
    backend: str = "numpy",
    dtype: str = "float32",
    max_memory_mb: float = 256,
    progress: bool = False,
    atol: float = 1e-3,
    prune: str = "auto",
) -> np.ndarray:
    """log p(z) of each point z under the equal-weight mixture of N diagonal Gaussians (nats).

    ``points`` (M, d), ``means`` (N, d), ``stds`` (N, d), (N, 1) or a scalar. With ``groups`` (N
    integers 0..G-1, every group non-empty) the result is (M, G): column g is the log-density of
    group g's own equal-weight sub-mixture, log (1/N_g) sum_{j in g} N(z; mu_j, s_j^2), all from one
    pass over the pairs. ``leave_out`` (M,) names one component per point (-1: none) that is left
    out of that point's sums, which are then normalised by one component fewer: the leave-one-out
    density of Poole et al. (ICML 2019). ``backend="keras"`` runs the products with ``keras.ops`` on
    Keras' backend and accelerator. ``dtype`` is the precision of the products; ``atol`` (nats) is the
    rounding-error bound above which a point is recomputed in float64. ``max_memory_mb`` bounds the
    working buffers (arrays proportional to the inputs, such as a copy of the component terms, come in
    addition). ``prune``: "auto" (the default) skips blocks of components that provably add less than
    a quarter of ``atol`` (at most 1e-3 nats) where a pilot says that pays (one group of at least
    ``mixture.prune.MIN_COMPONENTS`` components, NumPy backend; :mod:`mi_estimators.mixture.prune`),
    "never" always sums every pair, "always" prunes wherever it can (one group, NumPy).
    """
    mix = prepare_mixture(means, stds, groups=groups)
    out, _ = mix.log_density(
        points,
        leave_out=leave_out,
        backend=backend,
        dtype=dtype,
        max_memory_mb=max_memory_mb,
        progress=progress,
        atol=atol,
        prune=prune,
    )
    return out if groups is not None else out[:, 0]


def prepare_mixture(means: np.ndarray, stds: np.ndarray | float, *, groups: np.ndarray | None = None) -> "Mixture":
    """Validate the components once, for evaluating many batches of points (see ``mixture_log_density``)."""
    mu = as_samples(means, "means", min_rows=1)
    n, d = mu.shape
    if isinstance(stds, (str, bytes)) or stds is None:
        raise InputError(f"stds must be a number or an array, got {stds!r}")
    s = np.asarray(stds, dtype=np.float64) if np.ndim(stds) else np.full((n, 1), float(stds))
    if s.ndim != 2 or s.shape[0] != n or s.shape[1] not in (1, d):
        raise InputError(
            f"stds must be a scalar, ({n}, 1) or ({n}, {d}) for means of shape {mu.shape}; got shape {np.shape(stds)}"
        )
    bad = ~np.isfinite(s) | (s <= 0)
    if bad.any():
        raise InputError(f"stds must be positive and finite; {int(bad.sum())} entries are not")
    ids = _group_ids(groups, n)
    spread = _spread(n)
    order = spread[np.argsort(ids[spread], kind="stable")]
    # Squares of values beyond 1e150 (means, their distances, 1/s^2) leave float64: rescale instead of NaN.
    if np.abs(mu).max() > _MAX_SCALE or s.max() > _MAX_SCALE or s.min() < 1.0 / _MAX_SCALE:
        raise InputError(
            f"means and stds must lie within 1e-150..1e150 in magnitude (largest |mean| "
            f"{np.abs(mu).max():.3g}, stds {s.min():.3g}..{s.max():.3g}): their squares would "
            "leave float64; rescale the problem"
        )
    prec = 1.0 / s[order] ** 2
    log_norm = -np.log(s[order]).sum(axis=1) * (d / s.shape[1]) - 0.5 * d * LOG_2PI
    return _build(mu[order], prec, log_norm, ids[order], order)


_SPREAD_SEED = 0x5EED


def _spread(n: int) -> np.ndarray:
    """A fixed permutation of n components: the kernel streams every group's components in an order
    unrelated to the caller's. Its running shift starts at a point's largest term in the first chunk; with
    components sorted by class (as many datasets are), that chunk holds other classes only, the shift
    starts far below the maximum, and a quarter of the points needed float64 (2-3 times the time,
    measured on Fashion-MNIST codes)."""
    return np.random.default_rng(_SPREAD_SEED).permutation(n)


def _build(mu: np.ndarray, prec: np.ndarray, log_norm: np.ndarray, ids: np.ndarray, order: np.ndarray) -> "Mixture":
    """The float64 pieces of the expansion for validated components sorted by group ``ids``."""
    # Precision-weighted mean of the means: the centre that minimises sum_j C_j (package docstring).
    centre = (mu * prec).sum(axis=0) / np.broadcast_to(prec, mu.shape).sum(axis=0)
    offset_sq = ((mu - centre) ** 2 * prec).sum(axis=1)
    group_edges = np.searchsorted(ids, np.arange(ids.max() + 2))
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    return Mixture(
        mu, prec, log_norm, centre, offset_sq, group_edges, position, float(np.median(log_norm - 0.5 * offset_sq))
    )


def direct_log_density(
    points: np.ndarray,
    means: np.ndarray,
    stds: np.ndarray | float,
    *,
    groups: np.ndarray | None = None,
    leave_out: np.ndarray | None = None,
) -> np.ndarray:
    """The reference for checks: ``mixture_log_density`` from float64 differences z - mu_j, one point
    at a time (M N d operations, no expansion, no bound)."""
    mu = as_samples(means, "means", min_rows=1)
    s = np.broadcast_to(np.asarray(stds, dtype=np.float64), mu.shape) if np.ndim(stds) else np.full(mu.shape, stds)
    ids = _group_ids(groups, len(mu))
    z = as_samples(points, "points", min_rows=1)
    skip = _leave_out_ids(leave_out, len(z), len(mu))
    w = 1.0 / s**2
    log_norm = -np.log(s).sum(axis=1) - 0.5 * mu.shape[1] * LOG_2PI
    out = np.empty((len(z), ids.max() + 1))
    for i, zi in enumerate(z):
        terms = log_norm - 0.5 * (((zi - mu) ** 2) * w).sum(axis=1)
        keep = np.arange(len(mu)) != skip[i]
        sizes = np.bincount(ids[keep], minlength=out.shape[1])
        top = np.full(out.shape[1], -np.inf)
        np.maximum.at(top, ids[keep], terms[keep])
        safe_top = np.where(sizes > 0, top, 0.0)
        sums = np.bincount(ids[keep], np.exp(terms[keep] - safe_top[ids[keep]]), minlength=out.shape[1])
        with np.errstate(divide="ignore", invalid="ignore"):
            out[i] = np.where(sizes > 0, safe_top + np.log(sums / sizes), -np.inf)
    return out if groups is not None else out[:, 0]


def _group_ids(groups: np.ndarray | None, n: int) -> np.ndarray:
    if groups is None:
        return np.zeros(n, dtype=np.int64)
    ids = as_labels(groups, n, "groups")
    if ids.min() < 0:
        raise InputError("groups must be integers 0..G-1; found negative values")
    empty = np.flatnonzero(np.bincount(ids) == 0)
    if empty.size:
        raise InputError(f"groups must be 0..G-1 with every group non-empty; groups {empty.tolist()} are empty")
    return ids


def _leave_out_ids(leave_out: np.ndarray | None, m: int, n: int) -> np.ndarray:
    """``leave_out`` as (m,) int64 component indices in -1..n-1 (-1: none), validated."""
    if leave_out is None:
        return np.full(m, -1, dtype=np.int64)
    ids = as_labels(leave_out, m, "leave_out")
    if ids.min() < -1 or ids.max() >= n:
        raise InputError(f"leave_out must hold component indices 0..{n - 1} or -1 (none)")
    return ids


def check_options(backend: str, dtype: str, max_memory_mb: float, atol: float = 1e-3) -> None:
    """Raise :class:`InputError` for an unknown backend or dtype, or a non-positive memory bound or atol."""
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if str(dtype) not in ("float32", "float64"):
        raise InputError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    check_float(max_memory_mb, "max_memory_mb")
    check_float(atol, "atol")


@dataclass
class Mixture:
    """Components sorted by group, with the float64 pieces of the expansion (package docstring)."""

    means: np.ndarray  # (N, d)
    prec: np.ndarray  # (N, q), q = d or 1: 1 / s^2
    log_norm: np.ndarray  # (N,) kappa_j
    centre: np.ndarray  # (d,)
    offset_sq: np.ndarray  # (N,) C_j
    group_edges: np.ndarray  # (G + 1,) group g is rows group_edges[g]:group_edges[g+1]
    position: np.ndarray  # (N,) where the caller's component j sits in the sorted order
    ref: float = 0.0  # s_0
    _terms: dict = field(default_factory=dict, repr=False)
    _parts: dict = field(default_factory=dict, repr=False)

    @property
    def n_groups(self) -> int:
        return len(self.group_edges) - 1

    def group_sizes(self) -> np.ndarray:
        return np.diff(self.group_edges)

    def part(self, group: int | None) -> "Mixture":
        """One group alone, or the whole mixture as one group (``None``), as a mixture of its own (cached)."""
        if group is None and self.n_groups == 1:
            return self
        if group not in self._parts:
            # The whole mixture's components spread over its chunks again (``_spread``), not group by group.
            rows = (
                _spread(len(self.means))
                if group is None
                else np.arange(self.group_edges[group], self.group_edges[group + 1])
            )
            self._parts[group] = _build(
                self.means[rows],
                self.prec[rows],
                self.log_norm[rows],
                np.zeros(len(rows), dtype=np.int64),
                rows - rows.min(),
            )
        return self._parts[group]

    def log_density_own_group(
        self, points: np.ndarray, point_groups: np.ndarray, *, leave_out: np.ndarray | None = None, **options: Any
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """(M, 2): log p(z) under the whole mixture and log p(z | g_m) under each point's own group g_m.

        What the I(Y;Z) estimate needs (the whole mixture weighs group g by N_g / N), from one
        ungrouped pass plus one pass of each group's points against that group: about 1 + 1/G times
        the pairs of the ungrouped pass. ``log_density`` with groups instead restarts the running
        shift in every group and, for groups far from a point, needs float64 products (float32
        cannot give a log-density of -10^4 nats to 1e-3). ``leave_out`` as in ``log_density``, applied
        to both columns. ``options`` are those of ``log_density``; the diagnostics add up over the passes.
        """
        z = as_samples(points, "points", min_rows=1)
        own = as_labels(point_groups, len(z), "point_groups")
        if own.min() < 0 or own.max() >= self.n_groups:
            raise InputError(f"point_groups must be group indices 0..{self.n_groups - 1}")
        sorted_out = self._sorted_leave_out(leave_out, len(z))
        out = np.empty((len(z), 2))
        whole_mixture = self.part(None)  # (itself when it has one group: positions unchanged)
        whole_out = (
            sorted_out
            if whole_mixture is self
            else np.where(sorted_out >= 0, whole_mixture.position[np.maximum(sorted_out, 0)], -1)
        )
        whole, info = whole_mixture._evaluate(z, None, whole_out, **options)
        out[:, 0] = whole[:, 0]
        bound = info["error_bound"].copy()
        for group in np.unique(own):
            idx = np.flatnonzero(own == group)
            lo, hi = self.group_edges[group], self.group_edges[group + 1]
            local = np.where((sorted_out[idx] >= lo) & (sorted_out[idx] < hi), sorted_out[idx] - lo, -1)
            part, more = self.part(int(group))._evaluate(z[idx], None, local, **options)
            out[idx, 1] = part[:, 0]
            bound[idx] = np.maximum(bound[idx], more["error_bound"])
            for key in ("float64_rows", "exact_pairs", "pairs_computed", "pairs_total"):
                info[key] += more[key]
        info.update(
            max_error_bound=float(bound.max()),
            error_bound=bound,
            pairs_fraction=info["pairs_computed"] / info["pairs_total"],
        )
        return out, info

    def magnitudes(self) -> np.ndarray:
        """v_j of step 1 of the bound (unclipped): the per-component part of the rounding-error bound (cached)."""
        if "v" not in self._terms:
            rel = self.log_norm - self.ref
            self._terms["v"] = 2.0 * rel + 3.5 * self.offset_sq + np.abs(rel - 0.5 * self.offset_sq)
        return self._terms["v"]

    def term_max(self) -> float:
        """The largest magnitude of a component term of the product (1/(2 s^2), (mu - c)/s^2, constants)."""
        if "term_max" not in self._terms:
            lin = np.abs(self.means - self.centre) * self.prec
            const = np.abs(self.log_norm - 0.5 * self.offset_sq - self.ref)
            self._terms["term_max"] = float(max(self.prec.max(), lin.max(), const.max()))
        return self._terms["term_max"]

    def terms(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """B (N, K) and the columns V = [1, v_j] (N, 2) in ``dtype``, cached."""
        if dtype not in self._terms:
            lin = (self.means - self.centre) * self.prec
            const = self.log_norm - 0.5 * self.offset_sq - self.ref
            b = np.hstack([-0.5 * self.prec, lin, const[:, None], np.ones((len(const), 1))])
            v = np.stack([np.ones_like(const), np.maximum(self.magnitudes(), STAT_FLOOR)], axis=1)
            self._terms[dtype] = (np.ascontiguousarray(b, dtype=dtype), np.ascontiguousarray(v, dtype=dtype))
        return self._terms[dtype]

    def log_density(
        self,
        points: np.ndarray,
        *,
        shift_hint: np.ndarray | None = None,
        leave_out: np.ndarray | None = None,
        **options: Any,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """(M, G) log-densities of every group's sub-mixture, and diagnostics.

        ``shift_hint`` (M, G), optional: the exact log-density of one component of group g at point
        m (NaN where none is known), e.g. the component a point was drawn from; it starts the
        running shift there. ``leave_out`` (M,), optional: one component per point (the caller's
        index, -1: none) left out of its group's sum, which is then normalised by N_g - 1 (-inf where
        nothing is left). ``options``: ``backend`` ("numpy" or "keras"), ``dtype``, ``max_memory_mb``,
        ``progress`` (a bar of points done, updated after every chunk of pairs), ``atol`` and ``prune``
        as in ``mixture_log_density``. The diagnostics are ``float64_rows`` (points redone with float64
        products after the working-precision pass), ``max_error_bound`` (largest error bound, nats),
        ``exact_pairs`` (pairs evaluated from float64 differences), ``path`` ("pruned" or "dense"),
        ``pairs_fraction`` (pairs computed over all M N pairs; ``pairs_computed``, ``pairs_total``),
        ``pilot_kept_fraction`` (the estimate of the check that chose the path, None where none ran),
        ``prune_check`` (that check: "overlap", the look at a few points; "groups", the groups' bounds,
        with no block built; "pilot"; None), ``dense_rows`` (points on the dense path); ``error_bound``
        (M,) is each point's bound.
        """
        z = as_samples(points, "points", min_rows=1)
        if shift_hint is not None and np.shape(shift_hint) != (len(z), self.n_groups):
            raise InputError(f"shift_hint must have shape {(len(z), self.n_groups)}, got {np.shape(shift_hint)}")
        return self._evaluate(z, shift_hint, self._sorted_leave_out(leave_out, len(z)), **options)

    def _sorted_leave_out(self, leave_out: np.ndarray | None, m: int) -> np.ndarray:
        ids = _leave_out_ids(leave_out, m, len(self.means))
        return np.where(ids >= 0, self.position[np.maximum(ids, 0)], -1)

    def _evaluate(
        self,
        z: np.ndarray,
        shift_hint: np.ndarray | None,
        left_out: np.ndarray,
        *,
        backend: str = "numpy",
        dtype: str = "float32",
        max_memory_mb: float = 256,
        progress: bool = False,
        atol: float = 1e-3,
        prune: str = "auto",
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """``log_density`` for validated points and ``left_out`` in the sorted order."""
        if z.shape[1] != self.means.shape[1]:
            raise InputError(f"points have {z.shape[1]} features but the components have {self.means.shape[1]}")
        check_options(backend, dtype, max_memory_mb, atol)
        if prune not in PRUNE:
            raise InputError(f"prune must be one of {PRUNE}, got {prune!r}")
        hint = np.full((len(z), self.n_groups), np.nan) if shift_hint is None else np.asarray(shift_hint, np.float64)
        plan = self._prune_plan(z, left_out, backend, atol, prune)
        if plan.get("path") == "pruned":
            return self._pruned(z, hint, left_out, plan, backend, dtype, max_memory_mb, progress, atol)
        return self._dense(z, hint, left_out, backend, dtype, max_memory_mb, progress, atol, plan)

    def groups(self) -> pruning.Groups:
        """The first level of the components' blocks (cached)."""
        if "groups" not in self._terms:
            self._terms["groups"] = pruning.split_groups(self)
        return self._terms["groups"]

    def blocks(self) -> pruning.Blocks:
        """The components' blocks for the pruned path (cached)."""
        if "blocks" not in self._terms:
            self._terms["blocks"] = pruning.build_blocks(self, groups=self.groups())
        return self._terms["blocks"]

    def _prune_plan(self, z: np.ndarray, left_out: np.ndarray, backend: str, atol: float, prune: str) -> dict[str, Any]:
        """Whether the pruned path runs: one group, the NumPy backend, at least two blocks of components
        (``MIN_COMPONENTS`` for ``"auto"``, codes that do not all overlap, and groups that do not keep
        nearly every pair), and a pilot that says it pays (``"always"``: whatever it says).
        ``kept_fraction``: the estimate of the check that decided (``check``)."""
        n = len(self.means)
        if prune == "never" or backend != "numpy" or self.n_groups > 1 or n < 2 * pruning.LEAF:
            return {}
        if prune == "auto" and n < pruning.MIN_COMPONENTS:
            return {}
        if prune == "auto":
            seen = pruning.look(self, z)
            if seen.near > pruning.OVERLAP_MAX:
                return {"path": "dense", "kept_fraction": seen.near, "check": "overlap"}
            early = pruning.group_check(self.groups(), self, z, seen, atol)
            if early["relative_cost"] >= pruning.PAYS:
                return {**early, "path": "dense", "check": "groups"}
        plan = pruning.pilot(self.blocks(), self, z, left_out, atol)
        pays = prune == "always" or plan["relative_cost"] < pruning.PAYS
        return {**plan, "path": "pruned" if pays else "dense", "check": "pilot"}

    def _pruned(
        self,
        z: np.ndarray,
        hint: np.ndarray,
        left_out: np.ndarray,
        plan: dict[str, Any],
        backend: str,
        dtype: str,
        max_memory_mb: float,
        progress: bool,
        atol: float,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The pruned path; points whose bound exceeds ``atol`` there (step 5) are redone on the dense path."""
        with tqdm(total=len(z), unit="point", disable=not progress, leave=False, desc="mixture (pruned)") as bar:
            value, bound, pairs = pruning.evaluate(self.blocks(), self, z, left_out, atol, max_memory_mb)
            bar.update(len(z))
        out = value[:, None]
        redo = np.flatnonzero(~(bound <= atol))
        info: dict[str, Any] = {"float64_rows": 0, "exact_pairs": 0}
        if redo.size:
            again, info = self._dense(
                z[redo], hint[redo], left_out[redo], backend, dtype, max_memory_mb, False, atol, {}
            )
            out[redo], bound[redo] = again, info["error_bound"]
            pairs += redo.size * len(self.means)
        return out, {
            "float64_rows": info["float64_rows"],
            "max_error_bound": float(bound.max()) if bound.size else 0.0,
            "exact_pairs": info["exact_pairs"],
            "error_bound": bound,
            "path": "pruned",
            "pairs_computed": pairs,
            "pairs_total": len(z) * len(self.means),
            "pairs_fraction": pairs / (len(z) * len(self.means)),
            "pilot_kept_fraction": plan["kept_fraction"],
            "prune_check": plan["check"],
            "dense_rows": int(redo.size),
        }

    def _dense(
        self,
        z: np.ndarray,
        hint: np.ndarray,
        left_out: np.ndarray,
        backend: str,
        dtype: str,
        max_memory_mb: float,
        progress: bool,
        atol: float,
        plan: dict[str, Any],
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """The dense path: every pair, working precision with the float64 redo (:class:`DensePass`)."""
        with tqdm(
            total=len(z),
            unit="point",
            disable=not progress,
            leave=False,
            desc="mixture log-density",
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} points [{elapsed}<{remaining}]",
        ) as bar:
            dense = DensePass(self, z, hint, left_out, backend, np.dtype(str(dtype)), max_memory_mb, atol, bar)
            out, bound = dense.all_rows()
        # A density is finite and positive, so +inf or NaN means the float64 products lost every digit.
        broken = np.isnan(out) | (out == np.inf)
        if broken.any():
            raise InputError(
                f"{int(broken.any(axis=1).sum())} points got no finite log-density: the means are "
                "too far apart for stds this small to be resolved in float64 (rounding errors of "
                "many nats); rescale the problem or use wider components"
            )
        if bound.size and bound.max() > atol:
            warnings.warn(
                f"{int((bound > atol).sum())} points have a rounding-error bound above atol={atol} "
                f"even with float64 products (largest {bound.max():.2g} nats): the components are "
                "extremely narrow compared with their distance from each other",
                RuntimeWarning,
                stacklevel=3,
            )
        return out, {
            "float64_rows": dense.n64,
            "max_error_bound": float(bound.max()) if bound.size else 0.0,
            "exact_pairs": dense.exact_pairs,
            "error_bound": bound,
            "path": "dense",
            "pairs_computed": len(z) * len(self.means),
            "pairs_total": len(z) * len(self.means),
            "pairs_fraction": 1.0,
            "pilot_kept_fraction": plan.get("kept_fraction"),
            "prune_check": plan.get("check"),
            "dense_rows": len(z),
        }
