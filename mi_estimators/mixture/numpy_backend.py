"""The mixture kernel's chunk of pairs on NumPy: product, hits, exp and the rest's sums (the default).

After each product the passes run over blocks of rows small enough to stay in cache; see
:mod:`mi_estimators.mixture.bound` for what the hits are and why.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np

from mi_estimators.mixture.bound import MAX_HITS, SAFE_EXP, TINY, TOP_GAP, Segment, raise_tiny
from mi_estimators.mixture.flush import flush_to_zero

MAX_COLS = 2048
BLOCK_SIZE = 2**19
"""Pairs per block of rows of each product call, per 64 product columns (measured)."""
PART_SIZE = 2**19
"""Pairs per part of a block that the passes after the product go through together (2 MiB in float32)."""


class NumpySegments:
    """One chunk of components against one chunk of points: product, hits, exp, the rest's sums."""

    cap, buffers = MAX_COLS, 1

    def __init__(self, b: np.ndarray, v: np.ndarray, n_rows: int, n_cols: int, group_edges: np.ndarray):
        # (the columns [1, v_j] as rows: two matrix-vector products are faster than one two-column product)
        self.b, self.vt = b, np.ascontiguousarray(v.T)
        self.raise_tiny = raise_tiny(b.shape[1], b.dtype, float(v[:, 1].max()))
        self.flushing = False
        self.dtype, self.k, self.n_rows, self.n_cols = b.dtype, b.shape[1], n_rows, n_cols
        # Products run a block of rows at a time (``segment``): one block's buffer is all they need.
        # The product runs faster with more rows per call, the passes after it while their part of the
        # block stays in cache: blocks grow with k, parts do not (d = 128: 1,024 rows per block of 2,048
        # columns took 9% less time than 256, and passes over parts of 256 rows 5-12% less than over the
        # whole block; at d = 32, 256 rows per block, 512 showed no clear difference).
        self.block_rows = max(16, BLOCK_SIZE * max(1, round(self.k / 64)) // n_cols)
        self.part_rows = max(16, PART_SIZE // n_cols)
        self.buf = np.empty(min(n_rows, self.block_rows) * n_cols, dtype=b.dtype)
        self.a = np.zeros((0, self.k), dtype=b.dtype)  # (the points' rows: ``load``)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        # Where the CPU flushes subnormal results to 0 the exps of tiny terms are 0, fast and within
        # the bound (step 3), and need not be raised first.
        with flush_to_zero() as self.flushing:
            try:
                yield
            finally:
                self.flushing = False

    def load(self, a: np.ndarray) -> None:
        self.a = a

    def segment(
        self,
        shift: np.ndarray,
        c0: int,
        c1: int,
        top: np.ndarray,
        forced: np.ndarray | None,
        left_out: np.ndarray | None,
    ) -> Segment:
        """Chunk c0:c1 (``top``, each row's largest term so far relative to ``shift``, is >= 0 where
        the shift is known, so NumPy needs only the fixed threshold). ``left_out`` (m,): the component
        each row leaves out of its sum (-1: none).
        """
        a = self.a
        a[:, -1] = -shift
        m, n = len(a), c1 - c0
        b = self.b[c0:c1].T
        outside = None if left_out is None else np.where((left_out >= c0) & (left_out < c1), left_out - c0, -1)
        seg = Segment(shift.copy(), np.empty((m, 2)), np.full(m, -np.inf), np.zeros(0, np.int64), np.zeros(0, np.int64))
        hits: list[tuple[np.ndarray, np.ndarray]] = []
        # The product runs block by block, and the passes after it a cache-sized part of the block at a
        # time, so that each part stays in cache from the first pass to the last.
        for r0 in range(0, m, self.block_rows):
            r1 = min(r0 + self.block_rows, m)
            blk = self.buf[: (r1 - r0) * n].reshape(r1 - r0, n)
            with np.errstate(invalid="ignore", over="ignore"):  # (overflowing rows are redone in float64)
                np.matmul(a[r0:r1], b, out=blk)
            for p0 in range(r0, r1, self.part_rows):
                p1 = min(p0 + self.part_rows, r1)
                part = blk[p0 - r0 : p1 - r0]
                left = None
                if outside is not None:
                    rows = np.flatnonzero(outside[p0:p1] >= 0)
                    left = (rows, outside[p0 + rows])
                    part[left] = -np.inf
                self._block(part, self.vt[:, c0:c1], None if forced is None else forced[p0:p1], seg, p0, left, hits)
        if hits:
            seg.rows = np.concatenate([rows for rows, _ in hits])
            seg.cols = c0 + np.concatenate([cols for _, cols in hits])
        else:
            seg.cols = c0 + seg.cols
        return seg

    def _block(
        self,
        blk: np.ndarray,
        vt: np.ndarray,
        forced: np.ndarray | None,
        seg: Segment,
        r0: int,
        left: tuple[np.ndarray, np.ndarray] | None,
        found: list[tuple[np.ndarray, np.ndarray]],
    ) -> None:
        """Shift forced rows to their maximum, find the hits (added to ``found``), re-shift rows that grew,
        exp, sums (``left``: the left-out pairs, already -inf)."""
        m, n = blk.shape
        flat = blk.reshape(-1)
        frame = seg.frame[r0 : r0 + m]
        first = None
        if forced is not None and forced.any():
            top = blk.max(axis=1)
            # (a row whose only term here is left out stays forced for the next chunk)
            first = np.where(forced & (top > -np.inf), top, 0.0)
            blk -= first.astype(blk.dtype)[:, None]
            frame += first
        # Every row's largest term so far is at or above its shift, so one scalar threshold finds all
        # the pairs within TOP_GAP of it (and a few more where it is above the shift).
        hits = np.flatnonzero(blk >= -TOP_GAP)
        rows, cols = np.divmod(hits, n)
        row_max = seg.row_max[r0 : r0 + m]  # (-inf: rows without hits)
        # (in the row maxima's float64: ufunc.at with a cast takes a path 20 times slower)
        np.maximum.at(row_max, rows, flat[hits].astype(np.float64, copy=False))
        # A row with more than MAX_HITS hits in a chunk keeps none: its mass is spread over many broad,
        # overlapping components, where the float32 terms are accurate and the bound shows it
        # (evaluating them exactly would cost more than the whole product).
        if hits.size > MAX_HITS:
            crowded = np.bincount(rows, minlength=m) > MAX_HITS
            if crowded.any():
                keep = ~crowded[rows]
                hits, rows, cols = hits[keep], rows[keep], cols[keep]
        # (the frame gains exactly what a re-shifted row loses: row maxima are values of blk)
        grew = np.flatnonzero(row_max > SAFE_EXP)
        if grew.size:
            blk[grew] -= row_max[grew].astype(blk.dtype)[:, None]
            frame[grew] += row_max[grew]
        if first is not None:
            row_max += first  # (the chunk's largest terms in the frame it came in)
        # Subnormal exps are slow (see raise_tiny); then the hits leave the sum.
        if self.raise_tiny and not self.flushing:
            np.maximum(blk, TINY, out=blk)
            if left is not None:
                blk[left] = -np.inf  # (raised with the rest)
        flat[hits] = -np.inf
        np.exp(blk, out=blk)
        seg.sums[r0 : r0 + m, 0] = blk @ vt[0]
        seg.sums[r0 : r0 + m, 1] = blk @ vt[1]
        found.append((r0 + rows, cols))
