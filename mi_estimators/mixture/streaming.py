"""The streaming log-sum-exp over chunks of (point, component) pairs: memory plan, working-precision
pass with the rounding-error bound, float64 redo of the points above ``atol`` (products, then, where
those are not enough, differences), progress.

Per chunk of pairs: one product, then, on blocks of rows that stay in cache, a comparison (hits), one
exp (with subnormal results flushed to 0, or else after the raise of tiny terms: ``bound.raise_tiny``)
and the sums; rows with no shift yet (the first chunk of a group without ``shift_hint``) also pay a row
maximum and a subtraction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mi_estimators.mixture.bound import STAT_CAP, TERM_CAP, UNIT_ROUNDOFF, Accumulator, Segment, gamma
from mi_estimators.mixture.components import Components
from mi_estimators.mixture.keras_backend import KerasSegments
from mi_estimators.mixture.numpy_backend import MAX_COLS, NumpySegments

MAX_ROWS = 2048


def chunk_plan(
    m: int,
    n_max: int,
    k: int,
    itemsize: int,
    d: int,
    n_groups: int,
    max_memory_mb: float,
    cap: int = MAX_COLS,
    buffers: int = 1,
) -> tuple[int, int]:
    """Chunk sizes (rows, columns) whose working buffers fit ``max_memory_mb``, for ``m`` points against
    groups of at most ``n_max`` components, ``k`` product columns of ``itemsize`` bytes and ``d`` features.

    ``buffers`` (rows, columns) arrays are held at once. Columns shrink (not below 256, where products
    get slow) only when fewer than 64 rows would fit; they are balanced so that the last chunk of the
    largest group is not much smaller than the others.
    """
    max_bytes = max_memory_mb * 2**20
    fixed = k * itemsize + 8 * (3 * d + 8 * n_groups + 8)
    n_cols = min(n_max, cap)
    per_col = buffers * itemsize
    if max_bytes // (fixed + n_cols * per_col) < 64:
        n_cols = min(n_cols, max(256, int((max_bytes / 64 - fixed) / per_col)))
    n_cols = -(-n_max // -(-n_max // n_cols))
    n_rows = int(max_bytes // (fixed + n_cols * per_col))
    return max(1, min(n_rows, m, cap if cap > MAX_ROWS else MAX_ROWS)), n_cols


def _make_kernel(mix: Components, backend: str, dt: np.dtype, m: int, max_memory_mb: float):
    b, v = mix.terms(dt)
    cls = NumpySegments if backend == "numpy" else KerasSegments
    n_rows, n_cols = chunk_plan(
        m,
        int(mix.group_sizes().max()),
        b.shape[1],
        dt.itemsize,
        mix.means.shape[1],
        mix.n_groups,
        max_memory_mb,
        cap=cls.cap,
        buffers=cls.buffers,
    )
    return cls(b, v, n_rows, n_cols, mix.group_edges)


class DensePass:
    """One dense pass of a mixture over a set of points (every pair): working-precision pass, float64 redo,
    progress.

    ``hint`` (M, G): exact log-density of one component of each group (NaN: none known);
    ``left_out`` (M,): the component (in the mixture's sorted order) each point leaves out (-1: none).
    """

    def __init__(
        self,
        mix: Components,
        z: np.ndarray,
        hint: np.ndarray,
        left_out: np.ndarray,
        backend: str,
        dt: np.dtype,
        max_memory_mb: float,
        atol: float,
        bar: Any,
    ):
        self.mix, self.z, self.hint, self.left_out, self.atol, self.bar = mix, z, hint, left_out, atol, bar
        self.memory = max_memory_mb / 2
        # Beyond STAT_CAP the magnitude sums could overflow float32 and the bound could not be trusted;
        # beyond TERM_CAP the product terms themselves (1/s^2 of stds below 1e-18) would overflow float32.
        # Rows whose products overflow all the same (far points) get a NaN bound and go to float64 below.
        self.use64 = dt == np.float64 or float(mix.magnitudes().max()) > STAT_CAP or mix.term_max() > TERM_CAP
        dt = np.dtype(np.float64) if self.use64 else dt
        # Float64 work always runs on NumPy (JAX, for one, would silently compute it in float32).
        self.kernels = {dt: _make_kernel(mix, backend if dt == np.float32 else "numpy", dt, len(z), self.memory)}
        self.dt, self.n64, self.exact_pairs, self.progress = dt, 0, 0, [0, 0]

    def all_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(M, G) log-densities and the (M,) largest rounding-error bound of each point."""
        m = len(self.z)
        out, bound = np.empty((m, self.mix.n_groups)), np.zeros(m)
        kernel = self.kernels[self.dt]
        redo, n_redo = [], 0
        with kernel.session():
            for r0 in range(0, m, kernel.n_rows):
                rows = slice(r0, min(r0 + kernel.n_rows, m))
                if self.use64:
                    self._exact(np.arange(rows.start, rows.stop), out, bound, counted=False)
                    continue
                out[rows], bound[rows] = self.rows(kernel, rows)
                # A NaN bound or a non-finite value (overflow) fails the test too: only rows known to be
                # within atol stay (-inf is exact where a row left out the only component of a group).
                value_ok = np.isfinite(out[rows]) | (out[rows] == -np.inf)
                redo.append(r0 + np.flatnonzero(~(bound[rows] <= self.atol) | ~value_ok.all(axis=1)))
                n_redo += redo[-1].size
                # Once most points need float64, the working-precision pass is wasted work.
                self.use64 = self.n64 + n_redo > 0.5 * rows.stop
            # One float64 pass for all the points to redo: each product call repacks the components,
            # which costs more than the products of a few rows (d = 128: 9 ms per call for 2 points).
            if n_redo:
                self._exact(np.concatenate(redo), out, bound, counted=True)
        # Float64 products were not enough (far, narrow components): float64 differences, point by point.
        lost = np.flatnonzero(~(bound <= self.atol) | (np.isnan(out) | (out == np.inf)).any(axis=1))
        for i in lost:
            out[i], bound[i] = self._direct(int(i))
        return out, bound

    def _direct(self, i: int) -> tuple[np.ndarray, float]:
        """One point from float64 differences z - mu_j, for a point whose float64 products were not within
        atol or lost every digit (terms of -1e19 nats and below: stds near float32's smallest normal, far
        means; they may also give -inf where the own component is near). Each term is then
        within e_j = gamma_{d+8} (|kappa_j| + Q_j / 2) (Higham 2002, sec. 3.1), so by monotonicity the
        log-sum-exp lies between its values at L^ - e and L^ + e: that is the bound, which can be far above
        atol (the value is then only known to be very low), but no longer NaN or inf."""
        mix = self.mix
        quad = _quadratic(self.z[i] - mix.means, mix.prec)
        terms = mix.log_norm - 0.5 * quad
        err = gamma(mix.means.shape[1] + 8, UNIT_ROUNDOFF[np.dtype(np.float64)]) * (np.abs(mix.log_norm) + 0.5 * quad)
        left = self.left_out[i]
        if left >= 0:
            terms[left] = -np.inf
        out, bound = np.empty(mix.n_groups), 0.0
        for group in range(mix.n_groups):
            lo, hi = int(mix.group_edges[group]), int(mix.group_edges[group + 1])
            count = hi - lo - int(lo <= left < hi)
            if count == 0:
                out[group] = -np.inf
                continue
            t = terms[lo:hi]
            e = np.where(np.isfinite(t), err[lo:hi], 0.0)  # (a term of -inf, overflowed, adds nothing)
            out[group] = _log_sum_exp(t) - np.log(count)
            bound = max(bound, _log_sum_exp(t + e) - _log_sum_exp(t), _log_sum_exp(t) - _log_sum_exp(t - e))
        return out, bound

    def _exact(self, idx: np.ndarray, out: np.ndarray, bound: np.ndarray, *, counted: bool) -> None:
        """Float64 products (always NumPy: every backend supports them there) for the points ``idx``."""
        f64 = np.dtype(np.float64)
        if f64 not in self.kernels:
            self.kernels[f64] = _make_kernel(self.mix, "numpy", f64, len(self.z), self.memory)
        if counted:
            self.bar.total += len(idx)
        kernel = self.kernels[f64]
        for r0 in range(0, len(idx), kernel.n_rows):
            part = idx[r0 : r0 + kernel.n_rows]
            out[part], bound[part] = self.rows(kernel, part)
        self.n64 += len(idx)

    def rows(self, kernel, rows: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All groups for the points ``z[rows]`` (at most ``kernel.n_rows``)."""
        mix, z = self.mix, self.z[rows]
        q = mix.prec.shape[1]
        zc = z - mix.centre
        a = np.zeros((len(zc), kernel.k), dtype=kernel.dtype)
        # Points beyond float32's range give inf/NaN products, whose rows are redone in float64.
        with np.errstate(over="ignore"):
            a[:, :q] = zc**2 if q > 1 else (zc**2).sum(axis=1, keepdims=True)
            a[:, q:-2] = zc
        a[:, -2] = 1.0
        kernel.load(a)
        out = np.empty((len(z), mix.n_groups))
        bound = np.zeros(len(z))
        self.progress = [0, 0]  # components done, points shown as done
        left_out = self.left_out[rows]
        for group in range(mix.n_groups):
            out[:, group], err = self._group(kernel, z, group, self.hint[rows, group], left_out)
            np.maximum(bound, err, out=bound)
        return out, bound

    def _group(
        self, kernel, z: np.ndarray, group: int, hint: np.ndarray, left_out: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Streaming log-sum-exp over one group with exact hits; returns (log p(z|group), error bound)."""
        mix = self.mix
        acc = Accumulator.start(hint - mix.ref, kernel.dtype)
        lo, hi = int(mix.group_edges[group]), int(mix.group_edges[group + 1])
        in_group = (left_out >= lo) & (left_out < hi)
        skip = left_out if in_group.any() else None
        for c0 in range(lo, hi, kernel.n_cols):
            c1 = min(c0 + kernel.n_cols, hi)
            seg = kernel.segment(acc.shift, c0, c1, acc.top - acc.shift, acc.forced if acc.forced.any() else None, skip)
            acc.absorb(seg, self._hit_values(z, seg))
            self.exact_pairs += len(seg.rows)
            # The bar moves after every chunk of pairs, in whole points (a fraction of this row block).
            self.progress[0] += c1 - c0
            shown = len(z) * self.progress[0] // len(mix.means)
            self.bar.update(shown - self.progress[1])
            self.progress[1] = shown
        v_max = float(mix.magnitudes()[lo:hi].max())
        return acc.finish(hi - lo, in_group, kernel.k, kernel.n_cols, mix.means.shape[1], v_max, mix.ref)

    def _hit_values(self, z: np.ndarray, seg: Segment) -> tuple[np.ndarray, np.ndarray]:
        """Exact L_j(z) - s_0 of the hits (float64 differences) and their float64 error magnitudes."""
        mix, c = self.mix, seg.cols
        diff = np.take(z, seg.rows, axis=0)  # (np.take: a tenth faster than a fancy index here)
        diff -= np.take(mix.means, c, axis=0)
        half_quad = 0.5 * _quadratic(diff, np.take(mix.prec, c, axis=0))
        log_norm = mix.log_norm[c]
        return log_norm - mix.ref - half_quad, np.abs(log_norm) + abs(mix.ref) + half_quad


def _quadratic(diff: np.ndarray, prec: np.ndarray) -> np.ndarray:
    """Q = sum_k prec_k diff_k^2 per row, in float64 from the differences (``diff`` is overwritten);
    ``prec`` has one column per feature or one for all."""
    np.square(diff, out=diff)
    return np.einsum("ij,ij->i", diff, prec) if prec.shape[1] > 1 else diff.sum(axis=1) * prec[:, 0]


def _log_sum_exp(t: np.ndarray) -> float:
    """log sum e^t in float64 (-inf terms allowed, at least one finite)."""
    top = t.max()
    return float(top + np.log(np.exp(t - top).sum()))
