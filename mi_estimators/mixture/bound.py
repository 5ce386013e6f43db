"""The rounding-error bound of the streaming mixture log-density, and the running state it is kept in.

Working precision float32 (unit roundoff u = 2^-24); ``atol`` = 1e-3 nats by default. Per chunk, the
pairs whose float32 value P^ of P = A.B (L_j - s_0 - r, see :mod:`mi_estimators.mixture`) is at least
-``TOP_GAP`` (a row's shift never exceeds its largest term, so these include every pair within 4 nats
of it) are *hits*: taken out of the float32 sum and evaluated exactly (float64 differences z - mu_j),
except in rows with more than ``MAX_HITS`` of them in a chunk (mass spread over many broad components,
e.g. before training, where float32 is accurate and exact pairs would cost more than the product).
Every other term ("the rest", R, n terms at most) keeps its float32 value; which pairs are hits does
not matter to the proof. A left-out pair (``leave_out``) is set to -inf before anything else and is
simply not one of the n terms. The proof that the returned log p is within the reported bound of the
exact value:

1. Dot products (Higham, "Accuracy and Stability of Numerical Algorithms", 2002, sec. 3.1): whatever
   order a BLAS accumulates in, |P^ - P| <= gamma M, gamma = gamma_{K+2} = (K+2) u / (1 - (K+2) u), M
   the sum of |a_k b_k| over the K terms (the +2 covers rounding A and B to float32). With
   a = sum (z-c)^2 w, Cauchy-Schwarz and the triangle inequality in the w-norm (sqrt a <= sqrt Q +
   sqrt C) give M <= Q + 3.5 C + |kappa - C/2 - s_0| + |r_c|, Q = 2 (kappa - L) >= 0, r_c the shift
   of the product. Writing L = s_0 + r + P in the final frame r and solving for the error:
   e_j = |P^_j - P_j| <= gamma' (v_j + sigma - 2 P^_j), gamma' = gamma / (1 - 2 gamma), with the
   per-component column v_j = 2 (kappa_j - s_0) + 3.5 C_j + |kappa_j - C_j/2 - s_0| and
   sigma = max_c |r_c| - 2 r.
2. Re-shifting a row, and (keras backend) subtracting the shift after the product, round once
   each: <= 2u |P^| <= 174 u for a term with -87 <= P^ <= 8 (rows are re-shifted past e^8).
3. The rest's error is sum_R e^P^ (e^e_j - 1) <= e^E sum_R e^P^ e_j, E the largest e_j over terms
   with P^ >= -87 (E = gamma' (max v + 174 + max_c (|r_c| - 2 f_c)) + 174 u, f_c the frame of chunk
   c), and by Jensen sum_R e^P^ (-P^) <= X log(n / X), X = sum_R e^P^. So
   |X - S_R| <= e^E [gamma' (V + sigma X + 2 X log(n/X)) + 174 u X] + n (2 e^(E-87) + 2^-140),
   V = sum_R e^P^ v_j; the last term covers terms below -87, whose exp may be subnormal or 0 in
   float32 (true value <= e^(E-87)). X and V come from the products of the exps with [1, v_j].
   Subnormal exps are slow (:func:`raise_tiny`). Where NumPy's thread flushes subnormal results to 0
   (:mod:`mi_estimators.mixture.flush`), the exp of a term below -87 is 0 or at most
   e^-87 (1 + 4 ulp), within the last term, and a product e^P^ v_j below float32's smallest normal
   (only for v_j < 0.72) is 0, an error below gamma' 2^-126 < 2^-140 each. Elsewhere NumPy raises the
   terms below -87 to -87 before the exp: each then adds e^-87 (1 + 4 ulp) <= 2 e^(E-87) to X, within
   the last term, and e^-87 v_j to V, which the bound weights by e^E gamma'; this is done only where
   gamma' max v_j <= 1, so that it adds at most n e^(E-87) (about 1e-33 relative: E is then a few nats
   at most).
4. The exponentials (assumed accurate to 4 ulp; numpy's SIMD exp is within 2.6) and the sums of
   <= n_cols positive float32 terms add eta = 8u + gamma_{n_cols} relative to X and V; the float64
   hits add gamma^{64}_{d+n+8} (1 + |kappa| + |s_0| + Q/2). With S = S_hits + X and D the total of
   these, |log S^ - log S| <= log(S^ / (S^ - D)), the reported bound. Points whose bound exceeds
   ``atol`` are recomputed with float64 products (the same code with u = 2^-53, always on NumPy).

5. The pruned path (:mod:`mi_estimators.mixture.prune`) skips whole blocks (and groups of blocks) of
   components, screens the rest with float32 products and computes the terms that can matter with
   float64 products. (a) Block bound: for a block
   with per-unit smallest precision w_b = min_j w_j, any centre c_b, radius rho_b >= max_j ||mu_j -
   c_b||_{w_b} and kappa_b = max_j kappa_j, every member has Q_j(z) >= ||z - mu_j||^2_{w_b} >= (||z -
   c_b||_{w_b} - rho_b)_+^2 (w_j >= w_b, then the triangle inequality in the w_b-norm), so L_j(z) <=
   U_b(z) = kappa_b - (D_b - rho_b)_+^2 / 2, D_b = ||z - c_b||_{w_b}. D_b^2 = (z-c)^2 . w_b - 2 (z-c) .
   (w_b (c_b-c)) + (c_b-c)^2 . w_b comes from float64 products for all (point, block) pairs; every term of
   the first sum is >= 0 and |2 w y x| <= w (y^2 + x^2), so its rounding is at most gamma_{d+3} (2 (z-c)^2 .
   w_b + 2 (c_b-c)^2 . w_b), which is subtracted before the square root; the few operations after it are
   rounded outwards by factors (1 +- 4u), and rho_b upwards by gamma_{d+8}. (b) Skipping: R is an exact
   term of the point (the largest over the blocks an estimate ranks first), so R <= log S, S the sum of
   all terms but the left-out one. A unit (group or block) with U + log n < R + log(beta / (n_groups +
   n_blocks)), beta = min(atol, 1e-3) / 4, is skipped; its terms add less than e^R beta / (n_groups +
   n_blocks), so the skipped mass is K_skip < (skipped units) e^R beta / (n_groups + n_blocks) <= beta e^R.
   (c) Screening: every kept (point, block) entry is first evaluated with float32 products of the same A and
   B (step 1 with u = 2^-24: e_j <= c' + 2 gamma'' |x^_j|, c' = gamma'' (max |v_j| + 3 max |F|), gamma''
   that of float32). Where the entry's largest x^ (its top t, float32) lies below -(60 + 20), i.e. 20 nats
   below R while F is unraised, its terms are not summed but bounded: for x^_j <= t < 0, x_j <= x^_j (1 - 2
   gamma'') + c' <= t + 2 gamma'' |t| + c', so the entry adds at most n_b e^(t + 2 gamma'' |t| + c'), n_b
   its members. These bounds add up to K_far (units e^F, rescaled with the sum when F rises); the other
   entries' terms are the kept terms of (d). (d) Kept terms: x_j = L_j - s_0 - F = A(z) . B_j with A = [z^2,
   z, 1, -F], B_j = [-w_j / 2, mu_j w_j, kappa_j - C_j/2 - s_0, 1] (the expansion of step 1 about c = 0, C_j
   = ||mu_j||^2_{w_j}, and a frame F per point), so by step 1 (r = F) e_j <= gamma' (v_j - 2 x_j + |F| - 2F)
   <= gamma' (|v_j| + 3 |F| + 2 |x^_j|) =: c + 2 gamma' |x^_j|, c = gamma' (max |v_j| + 3 max |F|) over the
   point's kept groups and the frames it used. Each x^_j is rounded to float32 and exponentiated there (4
   ulp): for x^_j in [TINY, EXP_TOP] the computed e^x is within a factor (1 +- EXP32) of e^(x^_j), below
   TINY it is in [0, 2 e^TINY] (flushed or subnormal). No x^_j that is summed exceeds EXP_TOP: F starts at R
   + 60 (so S^ >= e^-60 about), and where a block's computed terms sum past e^80 (or overflow), F rises to
   F' = F + the largest x^ of such blocks among the blocks evaluated together, and the point's terms in
   those blocks are computed again in the new frame (all <= 0 up to rounding), so that every summed block
   has terms below e^80 and a float32 sum below 32 e^80 < 3.4e38; the point's float64 sum so far is
   multiplied by exp(F - F') (a float64 difference of the stored frames, its exp, a product: relative
   rounding <= (|F' - F| + 6) u, added up over the rescalings as ``drift``); F' > F, so what the terms below
   TINY in the old frame may add stays below 2 e^TINY each in units e^F'. Each block's float32 sum of its
   (at most LEAF) terms adds gamma_LEAF (float32 u), their float64 sum over the n kept terms gamma_{n+8}.
   Splitting at |x| = FAR: the exact terms with |x| <= FAR are within a factor e^(+-(c + 2 gamma' FAR)) of
   e^(x^), the others are below e^(c - FAR/2) each. With S^ the computed kept sum (units e^F, the final
   frame) of the entries not set aside, rel = expm1(c + 2 gamma' FAR) + EXP32 + gamma_LEAF + gamma_{n+8} +
   drift and delta = S^ rel (1 + rel) + n (2 e^TINY + e^(c - FAR/2)), the exact sum lies in [S^ - delta, S^
   + delta + K_skip e^(R-F) + K_far], so |log S^ - log S| <= max(log(1 + (delta + K_skip e^(R-F) + K_far) /
   S^), -log(1 - delta / S^)): the reported bound (about beta where the codes are Gaussian dropout codes: c
   ~ 1e-11, EXP32 ~ 6e-6). Points above ``atol`` go to the dense path.

Why this design (measured on the Fashion-MNIST ``fc`` codes of benchmarks/data, d = 32, noise std
0.5). The float32 expansion is far better than its worst-case bound: on 1,000 points of epoch 2 the
largest actual error of the raw expansion was 3.5e-5 nats, but the previous bound (only the largest
component exact, the rest bounded by gamma_K times magnitudes of about 470 nats per term) exceeded
1e-3 for 51% of them (5,946 of 10,000 points in a full estimate, 5x the bare cost). That error
scales with the share rho of the mixture left in float32: at epoch 2 one exact component leaves
rho = 0.21 (median), 0.84 (99%); all components within 4 nats of the largest (5 per point on
average, 0.05% of the pairs) leave rho < 0.02 (median), < 0.15 (max), and every bound < 1e-3, for
one comparison pass per chunk and 5 exact differences per point. Re-centring per block of points
cannot help (different points' relevant components are far apart at relative precision 0.5 in
every unit); a compensated or split (2 x float32) product would double the product cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SAFE_EXP = 8.0
"""A row is re-shifted when a term exceeds its shift by e^8: this keeps the hit threshold tight, and
e^8 times a chunk of terms (and times the magnitude column, capped at STAT_CAP) stays finite in float32."""
STAT_CAP = 1e20
TERM_CAP = 1e36
"""Product terms above this stay in float64 (float32 overflows at 3.4e38): real softplus codes reach
2e-17 (1/s^2 ~ 1e34), codes clipped at float32's smallest normal 1e-38 (1/s^2 ~ 1e76) do not fit."""
TINY = -87.0
"""exp of a term below this may be subnormal or 0 in float32: such terms are only known to lie in
[0, e^(E + TINY)] (step 3)."""
STAT_FLOOR = 1e-3
TOP_GAP = 4.0
"""Pairs within TOP_GAP nats of a row's largest term are evaluated exactly, unless a row has more than
MAX_HITS of them in a chunk (broad overlap), so that the exact work stays bounded."""
MAX_HITS = 64
EXP_ULP = 4
UNIT_ROUNDOFF = {np.dtype(np.float32): 2.0**-24, np.dtype(np.float64): 2.0**-53}


def gamma(k: int, u: float) -> float:
    """gamma_k = k u / (1 - k u) (Higham 2002, lemma 3.1)."""
    return k * u / (1 - k * u)


PRUNE_SHARE = 0.25
"""Share of ``atol`` (at most 1e-3 nats) that the skipped blocks of the pruned path may take (step 5)."""
BIG_LOG = 1e8


def skip_margin(atol: float) -> float:
    """beta of step 5: the relative mass the skipped blocks of one point may add up to, at most."""
    return PRUNE_SHARE * min(atol, 1e-3)


FAR = 1e4
"""Kept terms more than FAR nats below the frame are 0 to within e^-(FAR/2) each (step 5)."""
EXP_TOP = 88.0
"""The pruned path's exponents x lie below this (float32 exp overflows at 88.72), step 5."""
EXP32 = float(np.expm1(EXP_TOP * 2.0**-24) + EXP_ULP * 2.0**-24)
"""Relative error of a float32 exp of a float64 exponent in [TINY, EXP_TOP] rounded to float32 (step 5)."""


def prune_bound(
    total: np.ndarray,
    skipped: np.ndarray,
    v_max: np.ndarray,
    frame_abs: np.ndarray,
    drift: np.ndarray,
    n_terms: np.ndarray,
    k: int,
    leaf: int,
) -> np.ndarray:
    """Step 5: the bound on |log S^ - log S| of the pruned path per point, from the kept sum S^ and the
    skipped mass bound (both in units e^F, F the final frame - s_0), the largest |v_j| of the kept
    blocks, the largest |F| of the frames used, the relative rounding of the rescalings, the number of
    kept terms, the product's K columns and the most terms of a block."""
    u = UNIT_ROUNDOFF[np.dtype(np.float64)]
    dot_gamma = gamma(k + 2, u)
    dot_gamma = dot_gamma / (1 - 2 * dot_gamma)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        const = dot_gamma * (v_max + 3 * frame_abs)
        steps = n_terms + 8
        rel = (
            np.expm1(const + 2 * dot_gamma * FAR) + EXP32 + gamma(leaf, 2.0**-24) + steps * u / (1 - steps * u) + drift
        )
        delta = total * rel * (1 + rel) + n_terms * (2 * math.exp(TINY) + np.exp(const - FAR / 2))
        skip = skipped * (1 + 1e-6)
        up = np.log1p((delta + skip) / total)
        down = np.where(delta < total, -np.log1p(-delta / total), np.inf)
        bound = np.maximum(up, down)
    sane = np.isfinite(bound) & (frame_abs < BIG_LOG) & (total > 0) & (const < FAR / 4)
    return np.where(sane, bound, np.inf)


def raise_tiny(k: int, dtype: np.dtype, v_max: float) -> bool:
    """Whether float32 terms below TINY may be raised to TINY before the exp without loosening the bound
    by more than n e^(E + TINY) (step 3): gamma' max v_j <= 1, true unless components are very narrow.
    (Not needed where the CPU flushes subnormal results to 0: :mod:`mi_estimators.mixture.flush`.)

    Why raise them: then no exp is subnormal in float32 (e^-87 = 1.6e-38 > 1.2e-38), nor, for v_j
    above 0.72 (they are hundreds of nats), its product with v_j. On Intel CPUs each subnormal operand
    or result costs a microcode assist: on a Xeon, 8% subnormals made the exp 10x and the sums 20x
    slower, and the 0.4% among the early Fashion-MNIST codes of benchmarks/data cost 15% of the estimate.
    """
    if np.dtype(dtype) != np.float32:  # (float64 exps are subnormal only below -708)
        return False
    dot_gamma = gamma(k + 2, UNIT_ROUNDOFF[np.dtype(dtype)])
    return dot_gamma / (1 - 2 * dot_gamma) * v_max <= 1.0


@dataclass
class Segment:
    """What a backend returns for one chunk of pairs; sums are relative to ``frame`` (float64)."""

    frame: np.ndarray  # (m,) shift the sums refer to
    sums: np.ndarray  # (m, 2) sum over the rest of e^P^ [1, v_j]
    row_max: np.ndarray  # (m,) largest P^ of the chunk before re-shifting (-inf where unknown)
    rows: np.ndarray  # hits: point rows
    cols: np.ndarray  # hits: component indices


@dataclass
class Accumulator:
    """Running state of one group for a block of points (shift r relative to s_0, step 1)."""

    shift: np.ndarray  # (m,) r, float32-representable
    top: np.ndarray  # (m,) running largest term (reduced frame), -inf where unknown
    forced: np.ndarray  # (m,) no shift known yet
    rest: np.ndarray  # (m, 2) X and V in units e^r
    hits: np.ndarray  # (m,) exact sum of the hits in units e^r
    err64: np.ndarray  # (m,) largest |kappa| + Q/2 among the hits
    shift_abs: np.ndarray  # (m,) max |r| over the shifts of the products
    sigma_max: np.ndarray  # (m,) max over chunks of |r| - 2 f, f the frame of the chunk's terms
    dtype: np.dtype  # of the products: shifts are representable in it

    @classmethod
    def start(cls, hint: np.ndarray, dtype: np.dtype) -> "Accumulator":
        forced = np.isnan(hint)
        shift = np.where(forced, 0.0, hint).astype(dtype).astype(np.float64)
        top = np.where(forced, -np.inf, shift)
        m = len(hint)
        return cls(
            shift,
            top,
            forced,
            np.zeros((m, 2)),
            np.zeros(m),
            np.zeros(m),
            np.full(m, -np.inf),
            np.full(m, -np.inf),
            dtype,
        )

    def absorb(self, seg: Segment, hits: tuple[np.ndarray, np.ndarray]) -> None:
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
        # A row stays unshifted only while every term it has seen was left out (a chunk of one column).
        self.forced = self.forced & (seg.row_max == -np.inf)

    def finish(
        self, n: int, left_out: np.ndarray, k: int, n_cols: int, d: int, v_max: float, ref: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """log of the mean over the n components (n - 1 in rows with ``left_out``) and its bound (steps 1-4).

        ``k`` columns of the product, ``n_cols`` columns per chunk, ``d`` features, ``v_max`` the largest
        v_j of the group, ``ref`` s_0. A row with no term left (n = 1, left out) gets -inf, bound 0.
        """
        u = UNIT_ROUNDOFF[np.dtype(self.dtype)]
        dot_gamma = gamma(k + 2, u)
        dot_gamma = dot_gamma / (1 - 2 * dot_gamma)
        eta = 2 * EXP_ULP * u + gamma(n_cols, u)
        x, v = self.rest[:, 0], self.rest[:, 1]
        x_hi, x_lo = x * (1 + eta), x * (1 - eta)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = np.where(x > 0, x_hi * np.maximum(math.log(n) - np.log(x_lo), 0.0), 0.0)
        sigma = self.shift_abs - 2 * self.shift
        # (capped where the bound is hopeless anyway, so that nothing overflows)
        big_e = np.clip(dot_gamma * (max(v_max, STAT_FLOOR) - 2 * TINY + self.sigma_max) - 2 * TINY * u, 0.0, 100.0)
        first = (
            dot_gamma * (v * (1 + eta) + sigma * np.where(sigma > 0, x_hi, x_lo) + 2 * entropy) - 2 * TINY * u * x_hi
        )
        # Terms below TINY: true value <= e^(E + TINY); exp and sums of subnormals err by < 2^-140 each.
        rest_err = np.exp(big_e) * first + eta * x + n * (2 * np.exp(big_e + TINY) + 2.0**-140)
        total = self.hits + x
        hits_err = self.hits * gamma(d + n + 8, 2.0**-53) * (1 + self.err64)
        log_terms = np.where(left_out, math.log(n - 1) if n > 1 else 0.0, math.log(n))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            slack = total - rest_err - hits_err
            bound = np.where(slack > 0, np.log(total / slack), np.inf)
            log_p = ref + self.shift + np.log(total) - log_terms
        empty = left_out & (n == 1)
        return np.where(empty, -np.inf, log_p), np.where(empty, 0.0, bound)
