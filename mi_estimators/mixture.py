"""Log-density of equal-weight diagonal Gaussian mixtures at BLAS speed, with a proven error bound.

For M samples z and N components N(mu_j, diag s_j^2),

    log p(z) = log (1/N) sum_j exp(L_j(z)),   L_j(z) = kappa_j - 1/2 sum_i (z_i - mu_ji)^2 / s_ji^2,

with kappa_j = -sum_i log s_ji - d/2 log(2 pi). Expanding the square about a centre c gives
L_j(z) - s_0 - r = A(z) . B_j, one matrix product for all (sample, component) pairs:

    A(z) = [(z - c)^2, z - c, 1, -r],  B_j = [-w_j/2, (mu_j - c) w_j, kappa_j - C_j/2 - s_0, 1],

w = 1/s^2, C_j = sum_i (mu_ji - c_i)^2 w_ji, s_0 a fixed reference (the median of kappa_j - C_j/2)
and r a per-sample running shift (for one width per component the first block is the single column
|z - c|^2). This evaluates the Gaussian-mixture density of Adilova, Geiger & Fischer (ICLR 2023) as
a sum of exponentials of quadratic forms: matrix products plus a streaming log-sum-exp over
component chunks, so memory is bounded whatever M and N. c is the precision-weighted mean of the
component means, which minimises sum_j C_j.

Accuracy (working precision float32, unit roundoff u = 2^-24; ``atol`` = 1e-3 nats by default).
Per chunk, the pairs whose float32 value P^ of P = A.B (L_j - s_0 - r) is at least -``_TOP_GAP``
(a row's shift never exceeds its largest term, so these include every pair within 4 nats of it) are
*hits*: taken out of the float32 sum and evaluated exactly (float64 differences z - mu_j), except in
rows with more than ``_MAX_HITS`` of them in a chunk (mass spread over many broad components, e.g.
before training, where float32 is accurate and exact pairs would cost more than the product). Every
other term ("the rest", R, n terms at most) keeps its float32 value; which pairs are hits does not
matter to the proof. The proof that the returned
log p is within the reported bound of the exact value:

1. Dot products (Higham, "Accuracy and Stability of Numerical Algorithms", 2002, sec. 3.1): whatever
   order a BLAS accumulates in, |P^ - P| <= g M, g = gamma_{K+2} = (K+2) u / (1 - (K+2) u), M the sum
   of |a_k b_k| over the K terms (the +2 covers rounding A and B to float32). With a = sum (z-c)^2 w,
   Cauchy-Schwarz and the triangle inequality in the w-norm (sqrt a <= sqrt Q + sqrt C) give
   M <= Q + 3.5 C + |kappa - C/2 - s_0| + |r_c|, Q = 2 (kappa - L) >= 0, r_c the shift of the product.
   Writing L = s_0 + r + P in the final frame r and solving for the error:
   e_j = |P^_j - P_j| <= g' (v_j + sigma - 2 P^_j), g' = g / (1 - 2g), with the per-component column
   v_j = 2 (kappa_j - s_0) + 3.5 C_j + |kappa_j - C_j/2 - s_0| and sigma = max_c |r_c| - 2 r.
2. Re-shifting a row, and (keras backend) subtracting the shift after the product, round once
   each: <= 2u |P^| <= 174 u for a term with -87 <= P^ <= 8 (rows are re-shifted past e^8).
3. The rest's error is sum_R e^P^ (e^e_j - 1) <= e^E sum_R e^P^ e_j, E the largest e_j over terms
   with P^ >= -87 (E = g' (max v + 174 + max_c (|r_c| - 2 f_c)) + 174 u, f_c the frame of chunk c),
   and by Jensen sum_R e^P^ (-P^) <= X log(n / X), X = sum_R e^P^. So
   |X - S_R| <= e^E [g' (V + sigma X + 2 X log(n/X)) + 174 u X] + n (2 e^(E-87) + 2^-140),
   V = sum_R e^P^ v_j; the last term covers terms below -87, whose exp may be subnormal or 0 in
   float32 (true value <= e^(E-87)). X and V come from one extra two-column product of the exps.
4. The exponentials (assumed accurate to 4 ulp; numpy's SIMD exp is within 2.6) and the sums of
   <= n_cols positive float32 terms add eta = 8u + gamma_{n_cols} relative to X and V; the float64
   hits add gamma^{64}_{d+n+8} (1 + |kappa| + |s_0| + Q/2). With S = S_hits + X and D the total of
   these, |log S^ - log S| <= log(S^ / (S^ - D)), the reported bound. Samples whose bound exceeds
   ``atol`` are recomputed with float64 products (the same code with u = 2^-53, always on NumPy).

Why this design (measured on the Fashion-MNIST ``fc`` codes of benchmarks/data, d = 32, noise std
0.5). The float32 expansion is far better than its worst-case bound: on 1,000 samples of epoch 2 the
largest actual error of the raw expansion was 3.5e-5 nats, but the previous bound (only the largest
component exact, the rest bounded by gamma_K times magnitudes of about 470 nats per term) exceeded
1e-3 for 51% of them (5,946 of 10,000 samples in a full estimate, 5x the bare cost). That error
scales with the share rho of the mixture left in float32: at epoch 2 one exact component leaves
rho = 0.21 (median), 0.84 (99%); all components within 4 nats of the largest (5 per sample on
average, 0.05% of the pairs) leave rho < 0.02 (median), < 0.15 (max), and every bound < 1e-3, for
one comparison pass per chunk and 5 exact differences per sample. Re-centring per block of samples
cannot help (different samples' relevant components are far apart at relative precision 0.5 in
every unit); a compensated or split (2 x float32) product would double the product cost.

Speed. Per chunk of pairs: one product, then, on blocks of rows that stay in cache, a comparison
(hits), one exp and a two-column product for the sums; rows with no shift yet (the first chunk of
a group without ``shift_hint``) also pay a row maximum and a subtraction. ``shift_hint`` (e.g. the
component a dropout sample was drawn from) starts the running shift at an exact log-density. Label
groups: ``log_density`` with groups gives every group's log-density to ``atol``, which costs a
restarted shift per group and float64 for groups far from a sample (float32 cannot give -10^4 nats
to 1e-3); ``log_density_own_group`` gives what I(Y;Z) needs, log p(z) and log p(z | own group), in
one ungrouped pass plus one pass per group over its own samples (about 1 + 1/G the pairs).
Backends: ``"numpy"`` (default) and ``"keras"``: the same segment in ``keras.ops`` on whatever
backend Keras runs (TensorFlow, JAX, PyTorch) and accelerator it sees, compiled (``tf.function``,
``jax.jit``), with reduced-precision (TF32) matrix products switched off because they would void
step 1; its hits are those of the ``_DEVICE_TOP_K`` largest terms of a row that pass the threshold.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from mi_estimators.checks import LOG_2PI, as_labels, as_samples, check_float

# A row is re-shifted when a term exceeds its shift by e^8: this keeps the hit threshold tight, and e^8
# times a chunk of terms (and times the magnitude column, capped at _STAT_CAP) stays finite in float32.
_SAFE_EXP = 8.0
_STAT_CAP = 1e20
# Product terms above this stay in float64 (float32 overflows at 3.4e38): real softplus codes reach
# 2e-17 (1/s^2 ~ 1e34), codes clipped at float32's smallest normal 1e-38 (1/s^2 ~ 1e76) do not fit.
_TERM_CAP = 1e36
# exp of a term below _TINY may be subnormal or 0 in float32: such terms are only known to lie in
# [0, e^_TINY] (step 3 of the module docstring). Subnormal exps are slow, but too rare to clamp for.
_TINY = -87.0
_STAT_FLOOR = 1e-3
# Pairs within _TOP_GAP nats of a row's largest term are evaluated exactly (module docstring), unless a
# row has more than _MAX_HITS of them in a chunk (broad overlap), so the exact work stays bounded.
_TOP_GAP = 4.0
_MAX_HITS = 64
_DEVICE_TOP_K = 15      # k + 1 = 16: within the fast top-k of XLA on GPUs
_EXP_ULP = 4
_MAX_COLS = 2048
_MAX_ROWS = 2048
_DEVICE_MAX = 32768
_BLOCK_SIZE = 2 ** 19     # pairs per block of rows in the NumPy passes after each product (measured)
_UNIT_ROUNDOFF = {np.dtype(np.float32): 2.0 ** -24, np.dtype(np.float64): 2.0 ** -53}
_BACKENDS = ("numpy", "keras")


def mixture_log_density(samples: np.ndarray, means: np.ndarray, stds: np.ndarray | float, *,
                        groups: np.ndarray | None = None, backend: str = "numpy", dtype: str = "float32",
                        max_memory_mb: float = 256, progress: bool = False, atol: float = 1e-3) -> np.ndarray:
    """log p(z) of each sample under the equal-weight mixture of N diagonal Gaussians (nats).

    ``samples`` (M, d), ``means`` (N, d), ``stds`` (N, d), (N, 1) or a scalar. With ``groups`` (N
    integers 0..G-1, every group non-empty) the result is (M, G): column g is the log-density of
    group g's own equal-weight sub-mixture, log (1/N_g) sum_{j in g} N(z; mu_j, s_j^2), all from one
    pass over the pairs. ``backend="keras"`` runs the products with ``keras.ops`` on Keras' backend
    and accelerator. ``dtype`` is the precision of the products; ``atol`` (nats) is the rounding-error
    bound above which a sample is recomputed in float64. ``max_memory_mb`` bounds the working buffers
    (arrays proportional to the inputs, such as a copy of the component terms, come in addition).
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
    ids = _group_ids(groups, n)
    order = np.argsort(ids, kind="stable")
    prec = 1.0 / s[order] ** 2
    if not np.isfinite(prec).all():
        raise ValueError("stds below 1e-154 overflow 1/s^2; rescale the problem")
    log_norm = -np.log(s[order]).sum(axis=1) * (d / s.shape[1]) - 0.5 * d * LOG_2PI
    return _build(mu[order], prec, log_norm, ids[order])


def _build(mu: np.ndarray, prec: np.ndarray, log_norm: np.ndarray, ids: np.ndarray) -> "Mixture":
    """The float64 pieces of the expansion for validated components sorted by group ``ids``."""
    # Precision-weighted mean of the means: the centre that minimises sum_j C_j (module docstring).
    centre = (mu * prec).sum(axis=0) / np.broadcast_to(prec, mu.shape).sum(axis=0)
    offset_sq = ((mu - centre) ** 2 * prec).sum(axis=1)
    bounds = np.searchsorted(ids, np.arange(ids.max() + 2))
    return Mixture(mu, prec, log_norm, centre, offset_sq, bounds, float(np.median(log_norm - 0.5 * offset_sq)))


def direct_log_density(samples: np.ndarray, means: np.ndarray, stds: np.ndarray | float, *,
                       groups: np.ndarray | None = None) -> np.ndarray:
    """The reference for checks: ``mixture_log_density`` from float64 differences z - mu_j, one sample
    at a time (M N d operations, no expansion, no bound)."""
    mu = as_samples(means, "means", min_samples=1)
    s = np.broadcast_to(np.asarray(stds, dtype=np.float64), mu.shape) if np.ndim(stds) else np.full(mu.shape, stds)
    ids = _group_ids(groups, len(mu))
    w = 1.0 / s ** 2
    log_norm = -np.log(s).sum(axis=1) - 0.5 * mu.shape[1] * LOG_2PI
    sizes = np.bincount(ids)
    out = np.empty((len(samples), len(sizes)))
    for i, z in enumerate(as_samples(samples, "samples", min_samples=1)):
        terms = log_norm - 0.5 * (((z - mu) ** 2) * w).sum(axis=1)
        top = np.full(len(sizes), -np.inf)
        np.maximum.at(top, ids, terms)
        out[i] = top + np.log(np.bincount(ids, np.exp(terms - top[ids]), minlength=len(sizes)) / sizes)
    return out if groups is not None else out[:, 0]


def _group_ids(groups: np.ndarray | None, n: int) -> np.ndarray:
    if groups is None:
        return np.zeros(n, dtype=np.int64)
    ids = as_labels(groups, n, "groups")
    if ids.min() < 0:
        raise ValueError("groups must be integers 0..G-1; found negative values")
    empty = np.flatnonzero(np.bincount(ids) == 0)
    if empty.size:
        raise ValueError(f"groups must be 0..G-1 with every group non-empty; groups {empty.tolist()} are empty")
    return ids


@dataclass
class Mixture:
    """Components sorted by group, with the float64 pieces of the expansion (module docstring)."""

    means: np.ndarray       # (N, d)
    prec: np.ndarray        # (N, q), q = d or 1: 1 / s^2
    log_norm: np.ndarray    # (N,) kappa_j
    centre: np.ndarray      # (d,)
    offset_sq: np.ndarray   # (N,) C_j
    bounds: np.ndarray      # (G + 1,) group g is rows bounds[g]:bounds[g+1]
    ref: float = 0.0        # s_0
    _terms: dict = field(default_factory=dict, repr=False)
    _parts: dict = field(default_factory=dict, repr=False)

    @property
    def n_groups(self) -> int:
        return len(self.bounds) - 1

    def group_sizes(self) -> np.ndarray:
        return np.diff(self.bounds)

    def part(self, g: int | None) -> "Mixture":
        """Group g alone, or the whole mixture as one group (``g=None``), as a mixture of its own (cached)."""
        if g is None and self.n_groups == 1:
            return self
        if g not in self._parts:
            rows = slice(None) if g is None else slice(self.bounds[g], self.bounds[g + 1])
            ids = np.zeros(len(self.means[rows]), dtype=np.int64)
            self._parts[g] = _build(self.means[rows], self.prec[rows], self.log_norm[rows], ids)
        return self._parts[g]

    def log_density_own_group(self, samples: np.ndarray, sample_groups: np.ndarray, *,
                              shift_hint: np.ndarray | None = None, **options: Any) -> tuple[np.ndarray, dict[str, Any]]:
        """(M, 2): log p(z) under the whole mixture and log p(z | g_m) under each sample's own group g_m.

        What the I(Y;Z) estimate needs (the whole mixture weighs group g by N_g / N), from one
        ungrouped pass plus one pass of each group's samples against that group: about 1 + 1/G times
        the pairs of the ungrouped pass. ``log_density`` with groups instead restarts the running
        shift in every group and, for groups far from a sample, needs float64 products (float32
        cannot give a log-density of -10^4 nats to 1e-3). ``shift_hint`` (M,): the exact log-density
        of one component of the sample's own group (NaN where none is known). ``options`` are those
        of ``log_density``; the diagnostics add up over the passes.
        """
        z = as_samples(samples, "samples", min_samples=1)
        own = as_labels(sample_groups, len(z), "sample_groups")
        if own.min() < 0 or own.max() >= self.n_groups:
            raise ValueError(f"sample_groups must be group indices 0..{self.n_groups - 1}")
        hint = np.full(len(z), np.nan) if shift_hint is None else np.asarray(shift_hint, dtype=np.float64)
        if hint.shape != (len(z),):
            raise ValueError(f"shift_hint must have shape {(len(z),)}, got {np.shape(shift_hint)}")
        out = np.empty((len(z), 2))
        whole, info = self.part(None).log_density(z, shift_hint=hint[:, None], **options)
        out[:, 0] = whole[:, 0]
        for g in np.unique(own):
            idx = np.flatnonzero(own == g)
            part, more = self.part(int(g)).log_density(z[idx], shift_hint=hint[idx, None], **options)
            out[idx, 1] = part[:, 0]
            info = {key: max(info[key], more[key]) if key == "max_error_bound" else info[key] + more[key]
                    for key in info}
        return out, info

    def magnitudes(self) -> np.ndarray:
        """v_j of step 1 (unclipped): the per-component part of the rounding-error bound (cached)."""
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
            v = np.stack([np.ones_like(const), np.maximum(self.magnitudes(), _STAT_FLOOR)], axis=1)
            self._terms[dtype] = (np.ascontiguousarray(b, dtype=dtype), np.ascontiguousarray(v, dtype=dtype))
        return self._terms[dtype]

    def log_density(self, samples: np.ndarray, *, backend: str = "numpy", dtype: str = "float32",
                    max_memory_mb: float = 256, progress: bool = False, atol: float = 1e-3,
                    shift_hint: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """(M, G) log-densities of every group's sub-mixture, and diagnostics.

        ``shift_hint`` (M, G), optional: the exact log-density of one component of group g at sample
        m (NaN where none is known), e.g. the component a sample was drawn from; it starts the
        running shift there. The diagnostics are ``float64_rows`` (samples computed with float64
        products), ``max_error_bound`` (largest rounding-error bound, nats) and ``exact_pairs``
        (sample-component pairs evaluated exactly). ``progress`` shows a bar of samples done, updated
        after every chunk of pairs.
        """
        z = as_samples(samples, "samples", min_samples=1)
        if z.shape[1] != self.means.shape[1]:
            raise ValueError(f"samples have {z.shape[1]} features but the components have {self.means.shape[1]}")
        check_options(backend, dtype, max_memory_mb, atol)
        if shift_hint is None:
            shift_hint = np.full((len(z), self.n_groups), np.nan)
        elif np.shape(shift_hint) != (len(z), self.n_groups):
            raise ValueError(f"shift_hint must have shape {(len(z), self.n_groups)}, got {np.shape(shift_hint)}")
        with tqdm(total=len(z), unit="sample", disable=not progress, leave=False, desc="mixture log-density",
                  bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} samples "
                             "[{elapsed}<{remaining}]") as bar:
            run = _Run(self, z, np.asarray(shift_hint, dtype=np.float64), backend, np.dtype(str(dtype)),
                       max_memory_mb, atol, bar)
            out, bound = run.all_rows()
        if bound.size and bound.max() > atol:
            warnings.warn(f"{int((bound > atol).sum())} samples have a rounding-error bound above atol={atol} "
                          f"even with float64 products (largest {bound.max():.2g} nats): the components are "
                          "extremely narrow compared with their distance from each other", RuntimeWarning,
                          stacklevel=2)
        return out, {"float64_rows": run.n64, "max_error_bound": float(bound.max()) if bound.size else 0.0,
                     "exact_pairs": run.exact_pairs}


class _Run:
    """One call of ``Mixture.log_density``: working-precision pass, float64 redo, progress."""

    def __init__(self, mix: Mixture, z: np.ndarray, hint: np.ndarray, backend: str, dt: np.dtype,
                 max_memory_mb: float, atol: float, bar):
        self.mix, self.z, self.hint, self.atol, self.bar = mix, z, hint, atol, bar
        self.memory = max_memory_mb / 2
        # Beyond _STAT_CAP the magnitude sums could overflow float32 and the bound could not be trusted;
        # beyond _TERM_CAP the product terms themselves (1/s^2 of stds below 1e-18) would overflow float32.
        # Rows whose products overflow all the same (far samples) get a NaN bound and go to float64 below.
        self.use64 = dt == np.float64 or float(mix.magnitudes().max()) > _STAT_CAP or mix.term_max() > _TERM_CAP
        dt = np.dtype(np.float64) if self.use64 else dt
        # Float64 work always runs on NumPy (JAX, for one, would silently compute it in float32).
        self.kernels = {dt: _kernel(mix, backend if dt == np.float32 else "numpy", dt, len(z), self.memory)}
        self.dt, self.n64, self.exact_pairs, self.progress = dt, 0, 0, [0, 0]

    def all_rows(self) -> tuple[np.ndarray, np.ndarray]:
        m = len(self.z)
        out, bound = np.empty((m, self.mix.n_groups)), np.zeros(m)
        kernel = self.kernels[self.dt]
        with kernel.session():
            for r0 in range(0, m, kernel.n_rows):
                rows = slice(r0, min(r0 + kernel.n_rows, m))
                if self.use64:
                    self._exact(np.arange(rows.start, rows.stop), out, bound, counted=False)
                    continue
                out[rows], bound[rows] = self.rows(kernel, rows)
                # A NaN bound or value (overflow) fails the test too: only rows known to be within atol stay.
                redo = r0 + np.flatnonzero(~(bound[rows] <= self.atol) | ~np.isfinite(out[rows]).all(axis=1))
                if redo.size:
                    self._exact(redo, out, bound, counted=True)
                # Once most samples need float64, the working-precision pass is wasted work.
                self.use64 = self.n64 > 0.5 * rows.stop
        return out, bound

    def _exact(self, idx: np.ndarray, out: np.ndarray, bound: np.ndarray, *, counted: bool) -> None:
        """Float64 products (always NumPy: every backend supports them there) for the samples ``idx``."""
        f64 = np.dtype(np.float64)
        if f64 not in self.kernels:
            self.kernels[f64] = _kernel(self.mix, "numpy", f64, len(self.z), self.memory)
        if counted:
            self.bar.total += len(idx)
        kernel = self.kernels[f64]
        for r0 in range(0, len(idx), kernel.n_rows):
            part = idx[r0:r0 + kernel.n_rows]
            out[part], bound[part] = self.rows(kernel, part)
        self.n64 += len(idx)

    def rows(self, kernel, rows) -> tuple[np.ndarray, np.ndarray]:
        """All groups for the samples ``z[rows]`` (at most ``kernel.n_rows``)."""
        mix, z = self.mix, self.z[rows]
        q = mix.prec.shape[1]
        zc = z - mix.centre
        a = np.zeros((len(zc), kernel.k), dtype=kernel.dtype)
        a[:, :q] = zc ** 2 if q > 1 else (zc ** 2).sum(axis=1, keepdims=True)
        a[:, q:-2] = zc
        a[:, -2] = 1.0
        kernel.load(a)
        out = np.empty((len(z), mix.n_groups))
        bound = np.zeros(len(z))
        self.progress = [0, 0]      # components done, samples shown as done
        for g in range(mix.n_groups):
            out[:, g], err = self._group(kernel, z, g, self.hint[rows, g])
            np.maximum(bound, err, out=bound)
        return out, bound

    def _group(self, kernel, z: np.ndarray, g: int, hint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Streaming log-sum-exp over group g with exact hits; returns (log p(z|g), error bound)."""
        mix = self.mix
        acc = _Accumulator.start(hint - mix.ref, kernel.dtype)
        lo, hi = mix.bounds[g], mix.bounds[g + 1]
        for c0 in range(lo, hi, kernel.n_cols):
            c1 = min(c0 + kernel.n_cols, hi)
            seg = kernel.segment(acc.shift, c0, c1, acc.top - acc.shift, acc.forced if c0 == lo else None)
            acc.absorb(seg, self._hit_values(z, seg))
            self.exact_pairs += len(seg.rows)
            # The bar moves after every chunk of pairs, in whole samples (a fraction of this row block).
            self.progress[0] += c1 - c0
            shown = len(z) * self.progress[0] // len(mix.means)
            self.bar.update(shown - self.progress[1])
            self.progress[1] = shown
        return acc.finish(mix, g, kernel)

    def _hit_values(self, z: np.ndarray, seg: "_Segment") -> tuple[np.ndarray, np.ndarray]:
        """Exact L_j(z) - s_0 of the hits (float64 differences) and their float64 error magnitudes."""
        mix, c = self.mix, seg.cols
        diff = z[seg.rows] - mix.means[c]
        np.square(diff, out=diff)
        quad = np.einsum("ij,ij->i", diff, mix.prec[c]) if mix.prec.shape[1] > 1 else diff.sum(axis=1) * mix.prec[c, 0]
        return mix.log_norm[c] - mix.ref - 0.5 * quad, np.abs(mix.log_norm[c]) + abs(mix.ref) + 0.5 * quad


@dataclass
class _Segment:
    """What a backend returns for one chunk of pairs; sums are relative to ``frame`` (float64)."""

    frame: np.ndarray       # (m,) shift the sums refer to
    sums: np.ndarray        # (m, 2) sum over the rest of e^P^ [1, v_j]
    row_max: np.ndarray     # (m,) largest P^ of the chunk before re-shifting (-inf where unknown)
    rows: np.ndarray        # hits: sample rows
    cols: np.ndarray        # hits: component indices


@dataclass
class _Accumulator:
    """Running state of one group for a block of samples (shift r relative to s_0, step 1)."""

    shift: np.ndarray       # (m,) r, float32-representable
    top: np.ndarray         # (m,) running largest term (reduced frame), -inf where unknown
    forced: np.ndarray      # (m,) no shift known yet
    rest: np.ndarray        # (m, 2) X and V in units e^r
    hits: np.ndarray        # (m,) exact sum of the hits in units e^r
    err64: np.ndarray       # (m,) largest |kappa| + Q/2 among the hits
    shift_abs: np.ndarray   # (m,) max |r| over the shifts of the products
    sigma_max: np.ndarray   # (m,) max over chunks of |r| - 2 f, f the frame of the chunk's terms
    dtype: np.dtype         # of the products: shifts are representable in it

    @classmethod
    def start(cls, hint: np.ndarray, dtype: np.dtype) -> "_Accumulator":
        forced = np.isnan(hint)
        shift = np.where(forced, 0.0, hint).astype(dtype).astype(np.float64)
        top = np.where(forced, -np.inf, shift)
        m = len(hint)
        return cls(shift, top, forced, np.zeros((m, 2)), np.zeros(m), np.zeros(m), np.full(m, -np.inf),
                   np.full(m, -np.inf), dtype)

    def absorb(self, seg: _Segment, hits: tuple[np.ndarray, np.ndarray]) -> None:
        """Merge a chunk: rescale to its new shift, add its rest sums and its exact hits."""
        np.maximum(self.top, self.shift + seg.row_max, out=self.top)
        np.maximum(self.shift_abs, np.abs(self.shift), out=self.shift_abs)
        np.maximum(self.sigma_max, np.abs(self.shift) - 2 * seg.frame, out=self.sigma_max)
        new = seg.frame.astype(self.dtype).astype(np.float64)
        # Shifts only grow after a row's first chunk, where the sums are still 0 (forced rows may drop).
        old_scale = np.exp(np.minimum(self.shift - new, 0.0))
        exact, magnitude = hits
        # Overflow (float32 values off by hundreds of nats, far groups) makes the bound infinite: float64.
        with np.errstate(over="ignore", invalid="ignore"):
            self.rest = self.rest * old_scale[:, None] + seg.sums * np.exp(seg.frame - new)[:, None]
            self.hits *= old_scale
            self.hits += np.bincount(seg.rows, weights=np.exp(exact - new[seg.rows]), minlength=len(new))
        np.maximum.at(self.err64, seg.rows, magnitude)
        self.shift = new
        self.forced = np.zeros_like(self.forced)

    def finish(self, mix: Mixture, g: int, kernel) -> tuple[np.ndarray, np.ndarray]:
        """log p(z | g) and its rounding-error bound (module docstring, steps 1-4)."""
        n = int(mix.bounds[g + 1] - mix.bounds[g])
        u = _UNIT_ROUNDOFF[kernel.dtype]
        g1 = _gamma(kernel.k + 2, u)
        g1 = g1 / (1 - 2 * g1)
        eta = 2 * _EXP_ULP * u + _gamma(kernel.n_cols, u)
        x, v = self.rest[:, 0], self.rest[:, 1]
        x_hi, x_lo = x * (1 + eta), x * (1 - eta)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = np.where(x > 0, x_hi * np.maximum(math.log(n) - np.log(x_lo), 0.0), 0.0)
        sigma = self.shift_abs - 2 * self.shift
        v_max = float(mix.magnitudes()[mix.bounds[g]:mix.bounds[g + 1]].max())
        # (capped where the bound is hopeless anyway, so that nothing overflows)
        big_e = np.clip(g1 * (max(v_max, _STAT_FLOOR) - 2 * _TINY + self.sigma_max) - 2 * _TINY * u, 0.0, 100.0)
        first = g1 * (v * (1 + eta) + sigma * np.where(sigma > 0, x_hi, x_lo) + 2 * entropy) - 2 * _TINY * u * x_hi
        # Terms below _TINY: true value <= e^(E + _TINY); exp and sums of subnormals err by < 2^-140 each.
        rest_err = np.exp(big_e) * first + eta * x + n * (2 * np.exp(big_e + _TINY) + 2.0 ** -140)
        total = self.hits + x
        hits_err = self.hits * _gamma(mix.means.shape[1] + n + 8, 2.0 ** -53) * (1 + self.err64)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            slack = total - rest_err - hits_err
            bound = np.where(slack > 0, np.log(total / slack), np.inf)
            log_p = mix.ref + self.shift + np.log(total) - math.log(n)
        return log_p, bound


def _gamma(k: int, u: float) -> float:
    """gamma_k = k u / (1 - k u) (Higham 2002, lemma 3.1)."""
    return k * u / (1 - k * u)


def check_options(backend: str, dtype: str, max_memory_mb: float, atol: float = 1e-3) -> None:
    """Raise ``ValueError`` for an unknown backend or dtype, or a non-positive memory bound or atol."""
    if backend == "tensorflow":
        raise ValueError("backend 'tensorflow' is now 'keras': it runs on whatever backend Keras uses "
                         "(TensorFlow, JAX, PyTorch); pass backend='keras'")
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if str(dtype) not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    check_float(max_memory_mb, "max_memory_mb")
    check_float(atol, "atol")


def _plan(m: int, n_max: int, k: int, itemsize: int, d: int, n_groups: int, max_memory_mb: float,
          cap: int = _MAX_COLS, buffers: int = 1) -> tuple[int, int]:
    """Chunk sizes (rows, columns) whose working buffers fit ``max_memory_mb``.

    ``buffers`` (rows, columns) arrays of ``itemsize`` bytes are held at once. Columns shrink (not
    below 256, where products get slow) only when fewer than 64 rows would fit; they are balanced so
    that the last chunk of the largest group is not much smaller than the others.
    """
    budget = max_memory_mb * 2 ** 20
    fixed = k * itemsize + 8 * (3 * d + 8 * n_groups + 8)
    n_cols = min(n_max, cap)
    per_col = buffers * itemsize
    if budget // (fixed + n_cols * per_col) < 64:
        n_cols = min(n_cols, max(256, int((budget / 64 - fixed) / per_col)))
    n_cols = -(-n_max // -(-n_max // n_cols))
    n_rows = int(budget // (fixed + n_cols * per_col))
    return max(1, min(n_rows, m, cap if cap > _MAX_ROWS else _MAX_ROWS)), n_cols


def _kernel(mix: Mixture, backend: str, dt: np.dtype, m: int, max_memory_mb: float):
    b, v = mix.terms(dt)
    cls = _NumpySegments if backend == "numpy" else _KerasSegments
    n_rows, n_cols = _plan(m, int(mix.group_sizes().max()), b.shape[1], dt.itemsize, mix.means.shape[1],
                           mix.n_groups, max_memory_mb, cap=cls.cap, buffers=cls.buffers)
    return cls(b, v, n_rows, n_cols, mix.bounds)


class _NumpySegments:
    """One chunk of components against one chunk of samples: product, hits, exp, the rest's sums."""

    cap, buffers = _MAX_COLS, 1

    def __init__(self, b: np.ndarray, v: np.ndarray, n_rows: int, n_cols: int, bounds: np.ndarray):
        self.b, self.v = b, v
        self.dtype, self.k, self.n_rows, self.n_cols = b.dtype, b.shape[1], n_rows, n_cols
        self.buf = np.empty(n_rows * n_cols, dtype=b.dtype)
        self.a = None

    @contextlib.contextmanager
    def session(self):
        yield

    def load(self, a: np.ndarray) -> None:
        self.a = a

    def segment(self, shift: np.ndarray, c0: int, c1: int, top: np.ndarray, forced: np.ndarray | None) -> _Segment:
        """Chunk c0:c1 (``top``, each row's largest term so far relative to ``shift``, is >= 0 where
        the shift is known, so NumPy needs only the fixed threshold). After the product, the passes
        run over blocks of rows small enough to stay in cache.
        """
        a = self.a
        a[:, -1] = -shift
        m, n = len(a), c1 - c0
        prod = self.buf[: m * n].reshape(m, n)
        np.matmul(a, self.b[c0:c1].T, out=prod)
        seg = _Segment(shift.copy(), np.empty((m, 2)), np.full(m, -np.inf), [], [])
        block = max(16, _BLOCK_SIZE // n)
        for r0 in range(0, m, block):
            rows = slice(r0, min(r0 + block, m))
            self._block(prod[rows], self.v[c0:c1], None if forced is None else forced[rows], seg, r0)
        seg.rows = np.concatenate(seg.rows) if seg.rows else np.zeros(0, dtype=np.int64)
        seg.cols = c0 + (np.concatenate(seg.cols) if seg.cols else np.zeros(0, dtype=np.int64))
        return seg

    def _block(self, blk: np.ndarray, v: np.ndarray, forced: np.ndarray | None, seg: _Segment, r0: int) -> None:
        """Shift forced rows to their maximum, find the hits, re-shift rows that grew, exp, sums."""
        m, n = blk.shape
        flat = blk.reshape(-1)
        adj = np.zeros(m)
        if forced is not None and forced.any():
            adj = np.where(forced, blk.max(axis=1), 0.0)
            blk -= adj.astype(blk.dtype)[:, None]
        # Every row's largest term so far is at or above its shift, so one scalar threshold finds all
        # the pairs within _TOP_GAP of it (and a few more where it is above the shift).
        hits = np.flatnonzero(blk >= -_TOP_GAP)
        rows, cols = np.divmod(hits, n)
        keep, row_max = _cap_hits(rows, flat[hits], m)
        rows, cols = rows[keep], cols[keep]
        seg.row_max[r0:r0 + m] = adj + row_max
        grew = np.flatnonzero(row_max > _SAFE_EXP)
        if grew.size:
            blk[grew] -= row_max[grew].astype(blk.dtype)[:, None]
            adj[grew] += row_max[grew]
        flat[hits[keep]] = -np.inf
        np.exp(blk, out=blk)
        seg.sums[r0:r0 + m] = blk @ v
        seg.frame[r0:r0 + m] += adj
        seg.rows.append(r0 + rows)
        seg.cols.append(cols)


def _cap_hits(rows: np.ndarray, vals: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Which hits to keep and the row maxima. A row with more than _MAX_HITS hits in a chunk keeps none:
    its mass is spread over many broad, overlapping components, where the float32 terms are accurate
    and the bound shows it (evaluating them exactly would cost more than the whole product)."""
    counts = np.bincount(rows, minlength=m)
    starts = np.concatenate([[0], np.cumsum(counts)])
    row_max = np.full(m, -np.inf)
    filled = counts > 0
    if filled.any():
        row_max[filled] = np.maximum.reduceat(vals, starts[:-1][filled])
    return counts[rows] <= _MAX_HITS, row_max


class _KerasSegments:
    """The same segment with ``keras.ops``, compiled, on Keras' backend and accelerator.

    Components are padded per group to whole chunks and kept on the device; the samples of a row
    chunk are sent once and the shift is subtracted after the product (step 2 of the module
    docstring covers that rounding). Hits are the largest ``_DEVICE_TOP_K`` terms of a row that pass
    the threshold. Reduced-precision matrix products are switched off during ``session``.
    """

    cap, buffers = _DEVICE_MAX, 3

    def __init__(self, b: np.ndarray, v: np.ndarray, n_rows: int, n_cols: int, bounds: np.ndarray):
        import keras

        self.ops, self.backend = keras.ops, keras.backend.backend()
        self.dtype, self.k, self.n_rows, self.n_cols = b.dtype, b.shape[1], n_rows, n_cols
        self.top_k = min(_DEVICE_TOP_K, n_cols - 1) if n_cols > 1 else 0
        self.offsets = {}
        padded_b, padded_v = [], []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            for c0 in range(lo, hi, n_cols):
                c1 = min(c0 + n_cols, hi)
                self.offsets[c0] = sum(len(x) for x in padded_b)
                padded_b.append(np.pad(b[c0:c1], ((0, n_cols - (c1 - c0)), (0, 0))))
                padded_v.append(np.pad(v[c0:c1], ((0, n_cols - (c1 - c0)), (0, 0))))
        self.b = self.ops.convert_to_tensor(np.concatenate(padded_b))
        self.v = self.ops.convert_to_tensor(np.concatenate(padded_v))
        self.fn = _keras_segment_fn(self.backend, self.top_k)
        self.a, self.m = None, 0

    @contextlib.contextmanager
    def session(self):
        with _full_precision_matmul(self.backend):
            yield

    def load(self, a: np.ndarray) -> None:
        self.m = len(a)
        a = np.pad(a, ((0, self.n_rows - len(a)), (0, 0)))
        a[:, -1] = 0.0
        self.a = self.ops.convert_to_tensor(a)

    def segment(self, shift: np.ndarray, c0: int, c1: int, top: np.ndarray, forced: np.ndarray | None) -> _Segment:
        m, pad = self.m, self.n_rows - self.m
        forced = np.zeros(m, dtype=bool) if forced is None else forced
        args = [np.pad(x, (0, pad)) for x in (shift.astype(self.dtype), top.astype(self.dtype), forced)]
        # Chunk offsets as tensors on TensorFlow (a Python int would retrace), plain ints elsewhere.
        where = [self.offsets[c0], c1 - c0]
        if self.backend == "tensorflow":
            where = [self.ops.convert_to_tensor(np.int32(x)) for x in where]
        outs = self.fn(self.a, self.b, self.v, *[self.ops.convert_to_tensor(x) for x in args], *where, self.n_cols)
        frame, sums, row_max, idx, hit = (self.ops.convert_to_numpy(x)[:m] for x in outs)
        rows, j = np.nonzero(hit)
        return _Segment(frame.astype(np.float64), sums.astype(np.float64), row_max.astype(np.float64) - shift,
                        rows, c0 + idx[rows, j].astype(np.int64))


@contextlib.contextmanager
def _full_precision_matmul(backend: str):
    """Switch off TF32 (TensorFlow, PyTorch) or set the highest matmul precision (JAX) for the duration."""
    if backend == "tensorflow":
        import tensorflow as tf

        previous = tf.config.experimental.tensor_float_32_execution_enabled()
        tf.config.experimental.enable_tensor_float_32_execution(False)
        try:
            yield
        finally:
            tf.config.experimental.enable_tensor_float_32_execution(previous)
    elif backend == "jax":
        import jax

        with jax.default_matmul_precision("highest"):
            yield
    elif backend == "torch":
        import torch

        previous = torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous[0]
            torch.set_float32_matmul_precision(previous[1])
    else:
        yield


_KERAS_FUNCTIONS: dict = {}


def _keras_segment_fn(backend: str, top_k: int) -> Callable:
    """The segment as two compiled functions: (a, b, offset, n_valid) -> (products, top-k values and
    indices), then (products, top k, v, offset, shift, top, forced) -> (frame, sums, row max, hits).

    Two functions, not one: XLA on the CPU fused the whole segment into a loop 30 times slower.
    """
    key = (backend, top_k)
    if key not in _KERAS_FUNCTIONS:
        products, rest = _segment_ops(top_k)
        products, rest = _compile(backend, products), _compile(backend, rest)
        _KERAS_FUNCTIONS[key] = lambda a, b, v, shift, top, forced, offset, n_valid, n_cols: rest(
            *products(a, b, offset, n_valid, n_cols), v, offset, shift, top, forced, n_cols)
    return _KERAS_FUNCTIONS[key]


def _segment_ops(top_k: int) -> tuple[Callable, Callable]:
    import keras

    ops = keras.ops

    def products(a, b_all, offset, n_valid, n_cols):
        b = ops.slice(b_all, [offset, 0], [n_cols, ops.shape(b_all)[1]])
        prod = ops.where(ops.arange(n_cols)[None, :] < n_valid, ops.matmul(a, ops.transpose(b)), -np.inf)
        vals, idx = ops.top_k(prod, top_k + 1)
        return prod, vals, idx

    def rest(prod, vals, idx, v_all, offset, shift, top, forced, n_cols):
        v = ops.slice(v_all, [offset, 0], [n_cols, 2])
        row_max = vals[:, 0]
        top = ops.where(forced, row_max - shift, top)
        frame = ops.where(ops.logical_or(forced, row_max - shift > _SAFE_EXP), row_max, shift)
        # Hits: at least the threshold (as in NumPy) and above the (k+1)-th largest, so at most k per row.
        thr, kth = (top + shift - _TOP_GAP)[:, None], vals[:, top_k:top_k + 1]
        hit = ops.logical_and(vals[:, :top_k] >= thr, vals[:, :top_k] > kth)
        e = ops.where(ops.logical_and(prod >= thr, prod > kth), 0.0, ops.exp(prod - frame[:, None]))
        return frame, ops.matmul(e, v), row_max, idx[:, :top_k], hit

    return products, rest


def _compile(backend: str, fn: Callable) -> Callable:
    if backend == "jax":
        import jax

        return jax.jit(fn, static_argnames=("n_cols",))
    if backend == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(fn, reduce_retracing=True)
        return lambda *args: compiled(*args[:-1], n_cols=args[-1])
    return fn
