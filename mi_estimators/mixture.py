"""Log-density of equal-weight diagonal Gaussian mixtures at BLAS speed, with float64 accuracy.

For M samples z and N components N(mu_j, diag s_j^2),

    log p(z) = log (1/N) sum_j exp(L_j(z)),   L_j(z) = kappa_j - 1/2 sum_i (z_i - mu_ji)^2 / s_ji^2,

with kappa_j = -sum_i log s_ji - d/2 log(2 pi). Expanding the square about a centre c gives
L_j(z) = A(z) . B_j, one matrix product for all (sample, component) pairs:

    A(z) = [(z - c)^2, z - c, 1, -shift],  B_j = [-w_j/2, (mu_j - c) w_j, kappa_j - C_j/2, 1],

w = 1/s^2 and C_j = sum_i (mu_ji - c_i)^2 w_ji (for one width per component the first block is
the single column |z - c|^2). This evaluates the Gaussian-mixture density of Adilova, Geiger &
Fischer (ICLR 2023) as a sum of exponentials of quadratic forms: matrix products plus a log-sum-exp.
The log-sum-exp streams over component chunks with a per-sample running shift folded into the
product (the ``-shift`` column), so memory is bounded whatever M and N.

Accuracy. The expansion cancels: its terms are of size C_j while the result is of size d, so in
float32 narrow components far from c lose whole nats. Three measures keep the answer at float64
accuracy:
1. c is the precision-weighted mean of the component means, which minimises sum_j C_j (for
   multiplicative dropout noise this makes C_j about d / sigma^2 instead of the 1e6 or more that
   the plain mean gives for units with small activations);
2. the leading component of every (sample, group) is re-evaluated exactly (direct differences in
   float64) and swapped into the sum;
3. the rounding error of the remaining terms is bounded by the deterministic dot-product bound
   K u / (1 - K u) x (sum of magnitudes of the K product terms), the magnitudes taken from sums
   accumulated in the same pass; samples whose bound exceeds ``atol`` are recomputed with float64
   products.
Well separated narrow components are therefore exact after step 2, broad ones are accurate in
float32, and only overlapping narrow ones (many near-duplicate inputs, small noise) pay for float64.

Speed. Per chunk of pairs: one product, then, on blocks of rows that stay in cache, a row argmax,
a clamp, one exp and a two-column product for the sums. A known component log-density per sample
(``shift_hint``, e.g. the component a dropout sample was drawn from) seeds the running shift and
saves the extra subtraction pass that otherwise starts each group.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mi_estimators.checks import as_labels, as_samples

_LOG_2PI = math.log(2.0 * math.pi)
# A row is re-shifted when its chunk maximum exceeds the running shift by this much; e^30 times a
# chunk of terms (and times the magnitude columns, capped at _STAT_CAP) stays finite in float32.
_SAFE_EXP = 30.0
_STAT_CAP = 1e20
# Terms below e^-80 of a row's largest are raised to e^-80 before exp: subnormal float32 results make
# exp and the following product 10-100x slower. Each row's sum is >= 1, so this adds < N e^-80
# (relative) to it. The magnitude columns are floored at _STAT_FLOOR so no product is subnormal.
_EXP_FLOOR = -80.0
_STAT_FLOOR = 1e-3
_MAX_COLS = 2048
_MAX_ROWS = 2048
_BLOCK_ROWS = 128
_UNIT_ROUNDOFF = {np.dtype(np.float32): 2.0 ** -24, np.dtype(np.float64): 2.0 ** -53}
_BACKENDS = ("numpy", "tensorflow")


def mixture_log_density(samples: np.ndarray, means: np.ndarray, stds: np.ndarray | float, *,
                        groups: np.ndarray | None = None, backend: str = "numpy", dtype: str = "float32",
                        max_memory_mb: float = 256, progress: bool = False, atol: float = 1e-3) -> np.ndarray:
    """log p(z) of each sample under the equal-weight mixture of N diagonal Gaussians (nats).

    ``samples`` (M, d), ``means`` (N, d), ``stds`` (N, d), (N, 1) or a scalar. With ``groups`` (N
    integers 0..G-1, every group non-empty) the result is (M, G): column g is the log-density of
    group g's own equal-weight sub-mixture, log (1/N_g) sum_{j in g} N(z; mu_j, s_j^2), all from one
    pass over the pairs. ``backend="tensorflow"`` runs the products on a GPU when one is present.
    ``dtype`` is the precision of the products; ``atol`` (nats) is the rounding-error bound above
    which a sample is recomputed in float64. ``max_memory_mb`` bounds the working buffers (arrays
    proportional to the inputs, such as a copy of the component terms, come in addition).
    """
    mix = prepare_mixture(means, stds, groups=groups)
    out, _ = mix.log_density(samples, backend=backend, dtype=dtype, max_memory_mb=max_memory_mb,
                             progress=progress, atol=atol)
    return out if groups is not None else out[:, 0]


def prepare_mixture(means: np.ndarray, stds: np.ndarray | float, *, groups: np.ndarray | None = None) -> "Mixture":
    """Validate the components once, for evaluating many batches of samples (see ``mixture_log_density``)."""
    mu = as_samples(means, "means", min_samples=1)
    n, d = mu.shape
    s = np.asarray(stds, dtype=np.float64) if np.ndim(stds) else np.full((n, 1), float(stds))
    if s.ndim != 2 or s.shape[0] != n or s.shape[1] not in (1, d):
        raise ValueError(f"stds must be a scalar, ({n}, 1) or ({n}, {d}) for means of shape {mu.shape}; "
                         f"got shape {np.shape(stds)}")
    bad = ~np.isfinite(s) | (s <= 0)
    if bad.any():
        raise ValueError(f"stds must be positive and finite; {int(bad.sum())} entries are not")
    if groups is None:
        ids = np.zeros(n, dtype=np.int64)
    else:
        ids = as_labels(groups, n, "groups")
        if ids.min() < 0:
            raise ValueError("groups must be integers 0..G-1; found negative values")
        empty = np.flatnonzero(np.bincount(ids) == 0)
        if empty.size:
            raise ValueError(f"groups must be 0..G-1 with every group non-empty; groups {empty.tolist()} are empty")
    order = np.argsort(ids, kind="stable")
    mu, s, ids = mu[order], s[order], ids[order]
    prec = 1.0 / s ** 2
    if not np.isfinite(prec).all():
        raise ValueError("stds below 1e-154 overflow 1/s^2; rescale the problem")
    log_norm = -np.log(s).sum(axis=1) * (d / s.shape[1]) - 0.5 * d * _LOG_2PI
    # Precision-weighted mean of the means: the centre that minimises sum_j C_j (module docstring).
    centre = (mu * prec).sum(axis=0) / np.broadcast_to(prec, mu.shape).sum(axis=0)
    offset_sq = ((mu - centre) ** 2 * prec).sum(axis=1)
    bounds = np.searchsorted(ids, np.arange(ids.max() + 2))
    return Mixture(mu, prec, log_norm, centre, offset_sq, bounds)


@dataclass
class Mixture:
    """Components sorted by group, with the float64 pieces of the expansion (module docstring)."""

    means: np.ndarray       # (N, d)
    prec: np.ndarray        # (N, q), q = d or 1: 1 / s^2
    log_norm: np.ndarray    # (N,) kappa_j
    centre: np.ndarray      # (d,)
    offset_sq: np.ndarray   # (N,) C_j
    bounds: np.ndarray      # (G + 1,) group g is rows bounds[g]:bounds[g+1]
    _terms: dict = field(default_factory=dict, repr=False)

    @property
    def n_groups(self) -> int:
        return len(self.bounds) - 1

    def group_sizes(self) -> np.ndarray:
        return np.diff(self.bounds)

    def terms(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """B (N, K) and the columns V = [1, C_j + |kappa_j|] (N, 2) in ``dtype``, cached."""
        if dtype not in self._terms:
            lin = (self.means - self.centre) * self.prec
            const = self.log_norm - 0.5 * self.offset_sq
            b = np.hstack([-0.5 * self.prec, lin, const[:, None], np.ones((len(const), 1))])
            v = np.stack([np.ones_like(const), self.offset_sq + np.abs(self.log_norm)], axis=1)
            self._terms[dtype] = (np.ascontiguousarray(b, dtype=dtype),
                                  np.ascontiguousarray(np.clip(v, _STAT_FLOOR, _STAT_CAP), dtype=dtype))
        return self._terms[dtype]

    def log_density(self, samples: np.ndarray, *, backend: str = "numpy", dtype: str = "float32",
                    max_memory_mb: float = 256, progress: bool = False, atol: float = 1e-3,
                    shift_hint: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """(M, G) log-densities of every group's sub-mixture, and diagnostics.

        ``shift_hint`` (M, G), optional: the exact log-density of one component of group g at sample
        m (NaN where none is known), e.g. the component a sample was drawn from. It starts the
        running shift there, which saves a pass over the first chunk of each group. The diagnostics
        are ``float64_rows`` (samples computed with float64 products) and ``max_error_bound``
        (largest remaining rounding-error bound, nats).
        """
        z = as_samples(samples, "samples", min_samples=1)
        if z.shape[1] != self.means.shape[1]:
            raise ValueError(f"samples have {z.shape[1]} features but the components have {self.means.shape[1]}")
        check_options(backend, dtype, max_memory_mb, atol)
        if shift_hint is None:
            shift_hint = np.full((len(z), self.n_groups), np.nan)
        elif np.shape(shift_hint) != (len(z), self.n_groups):
            raise ValueError(f"shift_hint must have shape {(len(z), self.n_groups)}, got {np.shape(shift_hint)}")
        dt = np.dtype(str(dtype))
        f64 = np.dtype(np.float64)
        kernels = {dt: _kernel(self, backend, dt, len(z), max_memory_mb / 2)}

        def exact(idx) -> tuple[np.ndarray, np.ndarray]:
            if f64 not in kernels:
                kernels[f64] = _kernel(self, backend, f64, len(z), max_memory_mb / 2)
            return self._rows(kernels[f64], z[idx], shift_hint[idx])

        out = np.empty((len(z), self.n_groups))
        bound = np.zeros(len(z))
        # Beyond _STAT_CAP the magnitude sums would be clipped and the float32 bound could not be trusted.
        use64 = dt == f64 or float((self.offset_sq + np.abs(self.log_norm)).max()) > _STAT_CAP
        n64 = 0
        block = kernels[dt].n_rows
        with kernels[dt].session(), tqdm(total=len(z), unit="sample", disable=not progress, leave=False,
                                         desc="mixture log-density") as bar:
            for r0 in range(0, len(z), block):
                rows = slice(r0, min(r0 + block, len(z)))
                if use64:
                    out[rows], bound[rows] = exact(rows)
                    n64 += rows.stop - r0
                else:
                    out[rows], bound[rows] = self._rows(kernels[dt], z[rows], shift_hint[rows])
                    redo = r0 + np.flatnonzero(bound[rows] > atol)
                    if redo.size:
                        out[redo], bound[redo] = exact(redo)
                    n64 += redo.size
                    # Once most samples need float64, the working-precision pass is wasted work.
                    use64 = n64 > 0.5 * rows.stop
                bar.update(rows.stop - r0)
        if bound.size and bound.max() > atol:
            warnings.warn(f"{int((bound > atol).sum())} samples have a rounding-error bound above atol={atol} "
                          f"even with float64 products (largest {bound.max():.2g} nats): the components are "
                          "extremely narrow compared with their distance from each other", RuntimeWarning,
                          stacklevel=2)
        return out, {"float64_rows": n64, "max_error_bound": float(bound.max()) if bound.size else 0.0}

    def _rows(self, kernel, z: np.ndarray, hint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All groups for the samples ``z``, in chunks of ``kernel.n_rows``."""
        out = np.empty((len(z), self.n_groups))
        bound = np.zeros(len(z))
        q = self.prec.shape[1]
        for r0 in range(0, len(z), kernel.n_rows):
            rows = slice(r0, min(r0 + kernel.n_rows, len(z)))
            zc = z[rows] - self.centre
            a = np.empty((len(zc), kernel.k), dtype=kernel.dtype)
            a[:, :q] = zc ** 2 if q > 1 else (zc ** 2).sum(axis=1, keepdims=True)
            a[:, q:-2] = zc
            a[:, -2] = 1.0
            for g in range(self.n_groups):
                out[rows, g], err = self._group(kernel, a, z[rows], g, hint[rows, g])
                np.maximum(bound[rows], err, out=bound[rows])
        return out, bound

    def _group(self, kernel, a: np.ndarray, z: np.ndarray, g: int, hint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Streaming log-sum-exp over group g, leading term made exact; returns (log p(z|g), error bound).

        The bound is gamma_K = K u / (1 - K u) times the weighted magnitudes of the terms left in
        working precision: the deterministic bound on a length-K dot product (Higham, "Accuracy and
        Stability of Numerical Algorithms", 2002, sec. 3.1), valid whatever order the BLAS kernel
        accumulates in.
        """
        m = len(a)
        unknown = np.isnan(hint)
        shift = np.where(unknown, 0.0, hint)
        top_val = np.full(m, -np.inf)
        top_idx = np.zeros(m, dtype=np.int64)
        lo, hi = self.bounds[g], self.bounds[g + 1]
        for c0 in range(lo, hi, kernel.n_cols):
            a[:, -1] = -shift
            idx, mx, adj, seg_sums = kernel.segment(a, c0, min(c0 + kernel.n_cols, hi),
                                                    unknown if c0 == lo else None)
            cand = shift + mx
            better = cand > top_val
            top_val[better], top_idx[better] = cand[better], c0 + idx[better]
            if c0 == lo:
                sums = seg_sums
            else:
                sums = sums * np.exp(-adj)[:, None] + seg_sums
            shift += adj
        # Exact float64 value of the leading component, swapped for its float32 term.
        exact = self.log_norm[top_idx] - 0.5 * ((z - self.means[top_idx]) ** 2 * self.prec[top_idx]).sum(axis=1)
        e_top = np.exp(top_val - shift)
        with np.errstate(divide="ignore"):
            rest = np.maximum(sums[:, 0] - e_top, 0.0)
            lse = np.logaddexp(shift + np.log(rest), exact)
        scale = np.exp(shift - lse)          # 1 / (total of the corrected terms, in units e^shift)
        rho = rest * scale                   # weight of the terms left in float32
        w_top = self.offset_sq[top_idx] + np.abs(self.log_norm[top_idx])
        w_rest = np.maximum(sums[:, 1] - e_top * w_top, 0.0) * scale     # sum_rest pi_j (C_j + |kappa_j|)
        # Per pair, the terms of the product sum in magnitude to <= a + C + |kappa| + |shift|, with
        # a = sum (z-c)^2 w <= (sqrt Q + sqrt C)^2 and Q = 2 (kappa - L) the Mahalanobis term; over
        # the rest, sum pi_j (-L_j) is at most what the largest entropy of the rest allows.
        n = hi - lo
        with np.errstate(divide="ignore", invalid="ignore"):
            q_rest = 2.0 * (w_rest + rho * (math.log(n) - lse) - np.where(rho > 0, rho * np.log(rho), 0.0))
        q_rest = np.maximum(q_rest, 0.0)
        magnitude = q_rest + 2.0 * w_rest + 2.0 * np.sqrt(q_rest * w_rest) + rho * np.abs(shift)
        u = _UNIT_ROUNDOFF[kernel.dtype]
        gamma = kernel.k * u / (1.0 - kernel.k * u)
        # The exp and the chunk sums add a relative error of a few units of roundoff per level.
        return lse - math.log(n), gamma * magnitude + u * (2 + math.log2(n))


def check_options(backend: str, dtype: str, max_memory_mb: float, atol: float = 1e-3) -> None:
    """Raise ``ValueError`` for an unknown backend or dtype, or a non-positive memory bound or atol."""
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if str(dtype) not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    for name, value in (("max_memory_mb", max_memory_mb), ("atol", atol)):
        real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not (real and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")


def _plan(m: int, n_max: int, k: int, itemsize: int, d: int, n_groups: int, max_memory_mb: float) -> tuple[int, int]:
    """Chunk sizes (rows, columns) whose working buffers fit ``max_memory_mb``.

    Columns shrink (not below 256, where products get slow) only when fewer than 64 rows would fit.
    """
    budget = max_memory_mb * 2 ** 20
    fixed = k * itemsize + 8 * (3 * d + 6 * n_groups + 8)
    n_cols = min(n_max, _MAX_COLS)
    if budget // (fixed + n_cols * itemsize) < 64:
        n_cols = min(n_cols, max(256, int((budget / 64 - fixed) / itemsize)))
    n_rows = int(budget // (fixed + n_cols * itemsize))
    return max(1, min(n_rows, m, _MAX_ROWS)), n_cols


def _kernel(mix: Mixture, backend: str, dt: np.dtype, m: int, max_memory_mb: float):
    b, v = mix.terms(dt)
    n_rows, n_cols = _plan(m, int(mix.group_sizes().max()), b.shape[1], dt.itemsize, mix.means.shape[1],
                           mix.n_groups, max_memory_mb)
    return (_NumpySegments if backend == "numpy" else _TensorflowSegments)(b, v, n_rows, n_cols)


class _NumpySegments:
    """One chunk of components against one chunk of samples: product, row max, exp, magnitude sums."""

    def __init__(self, b: np.ndarray, v: np.ndarray, n_rows: int, n_cols: int):
        self.b, self.v = b, v
        self.dtype, self.k, self.n_rows, self.n_cols = b.dtype, b.shape[1], n_rows, n_cols
        self.buf = np.empty(n_rows * n_cols, dtype=b.dtype)

    @contextlib.contextmanager
    def session(self):
        yield

    def segment(self, a: np.ndarray, c0: int, c1: int, forced: np.ndarray | None):
        """Rows in ``forced``, and rows whose maximum exceeds the shift by _SAFE_EXP, are re-shifted.

        After the product, the passes run over blocks of rows small enough to stay in cache.
        """
        m = len(a)
        prod = self.buf[: m * (c1 - c0)].reshape(m, c1 - c0)
        np.matmul(a, self.b[c0:c1].T, out=prod)
        v = self.v[c0:c1]
        idx = np.empty(m, dtype=np.int64)
        mx = np.empty(m)
        adj = np.zeros(m)
        sums = np.empty((m, v.shape[1]), dtype=prod.dtype)
        for r0 in range(0, m, _BLOCK_ROWS):
            rows = slice(r0, min(r0 + _BLOCK_ROWS, m))
            block = prod[rows]
            idx[rows] = block.argmax(axis=1)
            mx[rows] = block[np.arange(len(block)), idx[rows]]
            need = mx[rows] > _SAFE_EXP if forced is None else forced[rows] | (mx[rows] > _SAFE_EXP)
            if need.any():
                adj[rows] = np.where(need, mx[rows], 0.0)
                np.subtract(block, adj[rows, None].astype(block.dtype), out=block)
            np.maximum(block, _EXP_FLOOR, out=block)
            np.exp(block, out=block)
            np.matmul(block, v, out=sums[rows])
        return idx, mx, adj, sums.astype(np.float64)


class _TensorflowSegments:
    """The same segment computation as a ``tf.function`` (on the GPU when TensorFlow sees one).

    TensorFloat-32 matrix products are switched off for the duration: their 10-bit mantissa would
    void the rounding-error model of the module docstring.
    """

    def __init__(self, b: np.ndarray, v: np.ndarray, n_rows: int, n_cols: int):
        import tensorflow as tf

        self.tf = tf
        self.dtype, self.k, self.n_rows, self.n_cols = b.dtype, b.shape[1], n_rows, n_cols
        self.b, self.v = tf.constant(b), tf.constant(v)
        self.fn = _tf_segment_fn(tf, b.dtype)

    @contextlib.contextmanager
    def session(self):
        tf = self.tf
        previous = tf.config.experimental.tensor_float_32_execution_enabled()
        tf.config.experimental.enable_tensor_float_32_execution(False)
        try:
            yield
        finally:
            tf.config.experimental.enable_tensor_float_32_execution(previous)

    def segment(self, a: np.ndarray, c0: int, c1: int, forced: np.ndarray | None):
        forced = np.zeros(len(a), dtype=bool) if forced is None else forced
        idx, mx, adj, sums = self.fn(self.tf.constant(a), self.b[c0:c1], self.v[c0:c1], self.tf.constant(forced))
        return (idx.numpy(), mx.numpy().astype(np.float64), adj.numpy().astype(np.float64),
                sums.numpy().astype(np.float64))


_TF_FUNCTIONS: dict = {}


def _tf_segment_fn(tf, dtype: np.dtype):
    if dtype not in _TF_FUNCTIONS:
        spec = tf.TensorSpec([None, None], tf.as_dtype(dtype))

        @tf.function(input_signature=[spec, spec, spec, tf.TensorSpec([None], tf.bool)], autograph=False)
        def segment(a, b, v, forced):
            prod = tf.matmul(a, b, transpose_b=True)
            idx = tf.argmax(prod, axis=1)
            mx = tf.reduce_max(prod, axis=1)
            adj = tf.where(tf.logical_or(forced, mx > _SAFE_EXP), mx, tf.zeros_like(mx))
            return idx, mx, adj, tf.matmul(tf.exp(tf.maximum(prod - adj[:, None], _EXP_FLOOR)), v)

        _TF_FUNCTIONS[dtype] = segment
    return _TF_FUNCTIONS[dtype]
