"""The pruned path of the mixture kernel: skip blocks of components whose bound says they cannot matter.

In trained epochs a point's density is carried by the few components near it (codes far apart in units
of their noise); the rest add less than the 1e-3-nat bound can see. Components are split (median splits
along principal directions of their means and log-widths) into groups of ``GROUP`` blocks of ``LEAF``.
For every point an upper bound U_b(z) >= L_j(z) of all members' terms comes from a float64 matrix
product per level (step 5 of :mod:`mi_estimators.mixture.bound`): first against every group, then, where
a group is kept, against its blocks. The point's reference R is the largest exact term of the blocks
that a quick estimate ranks first; a group or block whose U + log n is below R + log(beta / units) is
skipped (beta: the share of ``atol`` the skipped mass may take). Every kept (point, block) entry is
screened by a float32 product: an entry whose largest term lies more than NEAR nats below R is bounded, not
summed; the others are evaluated exactly (float64 products, float32 exps summed in float64). Entries are
evaluated in batches of blocks, one stacked product each, and the points in an order that keeps
neighbours together. The skipped and the set-aside mass join the point's error bound. Before that, three
checks estimate whether it pays, each cheaper than the next: a look at a few points against all
components, the groups' bounds for those points (before any block is built), and a pilot of the whole
procedure on a few more points; where one says it would not (overlapping codes, e.g. before training, or
codes whose groups keep almost every pair) the dense path runs.
``benchmarks/README.md`` has the measurements behind the choices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mi_estimators.mixture.bound import EXP_ULP, UNIT_ROUNDOFF, gamma, prune_bound, skip_margin
from mi_estimators.mixture.components import Components
from mi_estimators.mixture.flush import flush_to_zero

LEAF = 32
"""Components per block (the last block of a group may hold fewer)."""
GROUP = 8
"""Blocks per group: the first level of bounds costs 1/(LEAF GROUP) of the dense product (at 60,000
late codes, groups of 8 took 0.8-0.9 of the time of groups of 16, groups of 4 1.3)."""
MIN_COMPONENTS = 4096
"""``prune="auto"`` considers pruning only from this many components of a group (below it the dense
path is fast and its numbers unchanged)."""
OVERLAP_POINTS, OVERLAP_GAP, OVERLAP_MAX = 16, 87.0, 0.3
"""Before any block is built: where more than OVERLAP_MAX of the pairs lie within OVERLAP_GAP nats of
their point's largest term (all of them before training; 4-6% in trained MNIST epochs), the dense path
runs (``overlap``)."""
GROUP_SHARE = 0.25
"""The group check (``group_check``) takes the blocks within a kept group to keep at least this share of
its pairs (measured on the codes of ``benchmarks/data/``: 0.28-0.38 on real codes at 4,096-60,000
components, 0.99 on the benchmark's synthetic softplus codes of a random layer)."""
POWER_STEPS = 3
SAMPLE = 256
PILOT_POINTS = 256
PAYS = 0.7
"""Pruning runs where the pilot's estimated cost is below this fraction of the dense cost."""
BOUND_COST, PAIR_COST = 6.0, 2.5
"""Estimated costs in units of one dense pair: per (point, block or group) bound or estimate, per pair
computed exactly (measured on the benchmark's real codes, d = 32, where the estimate is 1.1-1.2 times
the measured ratio)."""
ROWS = 2**16
BATCH_ROWS = 4096
"""Entries (point, block) per batched product (``batches``): 2 MiB of design rows at d = 32."""
CANDIDATES = 2
"""Blocks per point whose exact terms give its reference R: the two best-estimated (on the late
Fashion-MNIST codes, R lands a median 8 nats below the largest term, against 15 with one and 150 with
the best-bounded block; 1% of the points then have a term more than 88 nats above R)."""
GUESS_GROUPS = 8
"""Groups per point whose blocks are estimated for its candidates (``select``): at 60,000 late codes in
``_locality``'s order a chunk's points then estimate 12% of the blocks, and keep 2% more pairs than with
every block estimated."""
FRAME_LIFT = 60.0
"""A point's frame starts this far above its reference R: its largest term lies a median 8 nats above R,
but 1% of the late codes' points have one more than 80 above (a raise each, ``_sums``); terms below R
- 27 then fall below float32's exp range, and step 5 counts them (n 2 e^-87 in units e^F, 4e-12 n
relative to the sum)."""
NEAR = 20.0
"""A screened (point, block) entry whose float32 largest term lies more than NEAR nats below the point's R
is bounded instead of summed (``_sums``): at 60,000 late codes 17% of the entries are summed, and what
is set aside adds at most (kept terms) e^-20 of e^R, 2e-9 each."""
RAISE_AT = 80.0
RAISE_SUM = math.exp(RAISE_AT)
"""A block whose terms sum past e^RAISE_AT in a point's frame raises the frame (``_sums``; step 5)."""
F64 = np.dtype(np.float64)


@dataclass
class Ball:
    """The pieces of the block bound (step 5) for a set of blocks, one row per block."""

    w_min: np.ndarray  # (nb, d) smallest precision of each unit over the block
    lin: np.ndarray  # (nb, d) -2 w_min (c_b - c), c the mixture's centre
    c_sq: np.ndarray  # (nb,) sum w_min (c_b - c)^2
    radius: np.ndarray  # (nb,) largest ||mu_j - c_b||_{w_min} over the block, rounded up
    kappa_max: np.ndarray  # (nb,) largest log-normaliser of the block
    log_size: np.ndarray  # (nb,) log n_b
    guess: np.ndarray  # (nb, q + d + 1) float32: a typical member's term - s_0, a quadratic in z (``_ball``)
    v_max: np.ndarray  # (nb,) largest |v_j| of step 1 over the block (expansion about the origin)

    def upper_bounds(self, zc: np.ndarray, ref: float, cols: slice = slice(None)) -> np.ndarray:
        """(m, nb) upper bounds U_b(z) - s_0 + log n_b for points ``zc`` = z - c (step 5)."""
        u = UNIT_ROUNDOFF[F64]
        t = np.square(zc) @ self.w_min[cols].T
        t += self.c_sq[cols]
        dist = zc @ self.lin[cols].T
        dist += t
        # |rounding of D^2| <= gamma_{d+3} (2 z^2 . w + 2 c^2 . w): all terms of the first sum are >= 0 and
        # |2 w z c| <= w (z^2 + c^2).
        t *= 2.0 * gamma(zc.shape[1] + 4, u)
        dist -= t
        np.maximum(dist, 0.0, out=dist)
        np.sqrt(dist, out=dist)
        dist *= 1.0 - 4 * u
        dist -= self.radius[cols]
        np.maximum(dist, 0.0, out=dist)
        np.square(dist, out=dist)
        dist *= -0.5 * (1.0 - 4 * u)
        dist += self.kappa_max[cols] - ref + self.log_size[cols]
        return dist


def _ball(
    mix: Components, mu: np.ndarray, prec: np.ndarray, kappa: np.ndarray, v: np.ndarray, starts: np.ndarray
) -> Ball:
    """The bound pieces of blocks starts[b]:starts[b+1] of components in blocked order (``v``: their v_j)."""
    d = mu.shape[1]
    sizes = np.diff(starts)
    ids = np.repeat(np.arange(len(sizes)), sizes)
    # The precision-weighted centre keeps C_j about it small for the narrowest members (tiny codes).
    centre = np.add.reduceat(mu * prec, starts[:-1], axis=0) / np.add.reduceat(prec, starts[:-1], axis=0)
    w_min = np.minimum.reduceat(prec, starts[:-1], axis=0)
    up = 1.0 + gamma(d + 8, UNIT_ROUNDOFF[F64])  # (the rounding of a sum of d squares, and of its root, upwards)
    radius = np.sqrt(np.maximum.reduceat(((mu - centre[ids]) ** 2 * w_min[ids]).sum(axis=1), starts[:-1])) * up
    shifted = centre - mix.centre
    # A typical member's term, with the mean precision about c_b, as a product with the design row [z^2, z,
    # 1] (q columns of squares). Not a bound: it only picks the blocks whose exact terms give a point's
    # reference. On the late Fashion-MNIST codes it lands 16 nats below log S (median) where the
    # best-bounded block lands 150 below: 0.10 of the pairs kept instead of 0.15.
    w_mean = np.add.reduceat(prec, starts[:-1], axis=0) / sizes[:, None]
    const = np.add.reduceat(kappa, starts[:-1]) / sizes - mix.ref - 0.5 * (w_mean * centre**2).sum(axis=1)
    q = mix.prec.shape[1]
    return Ball(
        w_min,
        -2.0 * w_min * shifted,
        (w_min * shifted**2).sum(axis=1),
        radius,
        np.maximum.reduceat(kappa, starts[:-1]),
        np.log(sizes),
        np.hstack([-0.5 * w_mean[:, :q], w_mean * centre, const[:, None]]).astype(np.float32),
        np.maximum.reduceat(np.abs(v), starts[:-1]),
    )


@dataclass
class Blocks:
    """Components in blocked order, their blocks and groups of blocks (step 5)."""

    order: np.ndarray  # (N,) blocked position -> the mixture's (sorted) component index
    where: np.ndarray  # (N,) the mixture's component index -> blocked position
    starts: np.ndarray  # (nb + 1,) block b is blocked positions starts[b]:starts[b+1]
    group_starts: np.ndarray  # (ng + 1,) group g is blocks group_starts[g]:group_starts[g+1]
    blocks: Ball
    groups: Ball
    terms: np.ndarray  # (nb, K, LEAF) B_j about 0: [-w/2, mu_j w, kappa_j - C_j/2 - s_0, 1], 0-padded
    screen: np.ndarray  # (nb, LEAF, K) the same transposed, float32 (the screening pass, ``_sums``)

    @property
    def n_blocks(self) -> int:
        return len(self.starts) - 1

    @property
    def n_groups(self) -> int:
        return len(self.group_starts) - 1

    @property
    def group_of(self) -> np.ndarray:
        """(nb,) each block's group."""
        return np.repeat(np.arange(self.n_groups), np.diff(self.group_starts))


@dataclass
class Groups:
    """The first level of the median splits: the features that shape them and each group's components."""

    feats: np.ndarray  # (N, d + q) float32
    parts: list[np.ndarray]  # the mixture's component indices of each group
    size: int  # components per full group (``leaf`` x ``group``)
    _ball: Ball | None = None

    @property
    def sizes(self) -> np.ndarray:
        return np.array([len(x) for x in self.parts])

    def ball(self, mix: Components) -> Ball:
        """The groups' bound pieces (for ``group_check``; cached), from the groups' own order of components
        (the blocks' level-1 pieces come from the blocked order and differ in the last bits)."""
        if self._ball is None:
            n, d = mix.means.shape
            order = np.concatenate(self.parts)
            starts = np.concatenate([[0], np.cumsum(self.sizes)])
            prec = np.broadcast_to(mix.prec, (n, d))[order]
            self._ball = _ball(mix, mix.means[order], prec, mix.log_norm[order], np.zeros(n), starts)
        return self._ball


def split_groups(mix: Components, size: int = LEAF * GROUP) -> Groups:
    """Median splits of the components into groups of ``size`` (module docstring).

    Features per unit: asinh((mu - median) / s_median), which measures differences of nearby means in
    units of a typical width and of far ones in log scale, and log s (a Gaussian dropout code's width
    grows with its size, an information dropout one's is learnt). Which groups and blocks are formed
    never affects correctness, only how many pairs are kept.
    """
    n, d = mix.means.shape
    log_s = -0.5 * np.log(mix.prec)
    rows = slice(None, None, max(1, n // SAMPLE))  # (medians of a sample: they only shape the splits)
    typical = np.exp(np.median(np.broadcast_to(log_s, (n, d))[rows], axis=0))
    scaled = (mix.means - np.median(mix.means[rows], axis=0)) / typical
    # (float32 arcsinh, several times faster: the features only shape the splits; clipped into its range)
    feats = np.hstack([np.arcsinh(np.clip(scaled, -1e30, 1e30).astype(np.float32)), log_s.astype(np.float32)])
    return Groups(feats, _split(feats, size), size)


def build_blocks(
    mix: Components, leaf: int | None = None, group: int | None = None, groups: Groups | None = None
) -> Blocks:
    """The groups of ``split_groups`` (``groups``, or made here), each split into blocks of ``leaf``."""
    leaf = LEAF if leaf is None else leaf
    group = GROUP if group is None else group
    if groups is None or groups.size != leaf * group:
        groups = split_groups(mix, leaf * group)
    n, d = mix.means.shape
    feats, parts = groups.feats, groups.parts
    leaves, group_starts = [], [0]
    # (all full groups at once where their nodes halve into whole leaves: equal sizes level by level)
    full = [members for members in parts if len(members) == leaf * group and group & (group - 1) == 0]
    if full:
        split = _split_equal(feats, np.stack(full), leaf)
        for members in split:
            leaves += list(members)
            group_starts.append(len(leaves))
    for members in parts:
        if not (full and len(members) == leaf * group):
            leaves += [members[x] for x in _split(feats[members], leaf)]
            group_starts.append(len(leaves))
    order = np.concatenate(leaves)
    starts = np.concatenate([[0], np.cumsum([len(x) for x in leaves])])
    where = np.empty(n, dtype=np.int64)
    where[order] = np.arange(n)
    prec = np.ascontiguousarray(np.broadcast_to(mix.prec, (n, d))[order])
    mu, kappa = mix.means[order], mix.log_norm[order]
    # Kept terms come from the expansion about the origin (c = 0 in step 1): then A(z) is one row per point
    # for every block. Its magnitudes C_j = sum w mu^2 stay small where widths grow with |mu| (Gaussian
    # dropout: d / sigma^2), and where they do not, step 5's bound says so (the point goes dense).
    c_j = (mu**2 * prec).sum(axis=1)
    rel = kappa - mix.ref
    v = 2.0 * rel + 3.5 * c_j + np.abs(rel - 0.5 * c_j)
    blocks = _ball(mix, mu, prec, kappa, v, starts)
    group_balls = _ball(mix, mu, prec, kappa, v, starts[np.array(group_starts)])
    sizes = np.diff(starts)
    ids = np.repeat(np.arange(len(sizes)), sizes)
    slot = np.arange(n) - starts[ids]
    q = mix.prec.shape[1]
    terms = np.zeros((len(sizes), q + d + 2, leaf))
    terms[ids, :q, slot] = -0.5 * mix.prec[order]
    terms[ids, q : q + d, slot] = mu * prec
    terms[ids, q + d, slot] = rel - 0.5 * c_j
    terms[ids, q + d + 1, slot] = 1.0
    return Blocks(
        order,
        where,
        starts,
        np.array(group_starts),
        blocks,
        group_balls,
        terms,
        np.ascontiguousarray(terms.transpose(0, 2, 1), dtype=np.float32),
    )


def _split(feats: np.ndarray, leaf: int) -> list[np.ndarray]:
    """Leaves of ``leaf`` rows (the last of a node fewer) by median splits along each node's principal
    direction, from a few power iterations on at most ``SAMPLE`` of its rows (on the late Fashion-MNIST
    codes they keep a fifth fewer pairs than splits along the widest feature)."""
    rng = np.random.default_rng(0)
    leaves, todo = [], [np.arange(len(feats))]
    while todo:
        idx = todo.pop()
        if len(idx) <= leaf:
            leaves.append(idx)
            continue
        sub = feats[idx if len(idx) <= SAMPLE else idx[:: len(idx) // SAMPLE]]
        sub = sub - sub.mean(axis=0)
        direction = rng.standard_normal(sub.shape[1]).astype(feats.dtype)
        for _ in range(POWER_STEPS):
            direction = sub.T @ (sub @ direction)
            direction /= np.linalg.norm(direction) or 1.0
        # (halves in whole leaves: every leaf of a node but its last holds exactly ``leaf`` rows)
        half = max(1, round(len(idx) / (2 * leaf))) * leaf
        split = np.argpartition(feats[idx] @ direction, half)
        todo += [idx[split[:half]], idx[split[half:]]]
    return leaves


def _split_equal(feats: np.ndarray, nodes: np.ndarray, leaf: int) -> np.ndarray:
    """``_split`` of many nodes of one size (a power of two times ``leaf``) at once: (nodes, leaves per node,
    leaf), the leaves of each node in order."""
    rng = np.random.default_rng(0)
    count, (k, size) = len(nodes), nodes.shape
    while size > leaf:
        x = feats[nodes]
        x -= x.mean(axis=1, keepdims=True)
        direction = rng.standard_normal((k, feats.shape[1])).astype(feats.dtype)
        for _ in range(POWER_STEPS):
            direction = np.einsum("kif,ki->kf", x, np.einsum("kif,kf->ki", x, direction))
            direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-30)
        order = np.argpartition(np.einsum("kif,kf->ki", x, direction), size // 2, axis=1)
        nodes = np.take_along_axis(nodes, order, axis=1).reshape(2 * k, size // 2)
        k, size = nodes.shape
    return nodes.reshape(count, -1, leaf)


def _design(z: np.ndarray, q: int) -> np.ndarray:
    """A(z) = [z^2, z, 1, -F] (m, K) with F = 0 (the frame column is set by the caller)."""
    d = z.shape[1]
    a = np.empty((len(z), q + d + 2))
    a[:, q : q + d] = z
    if q > 1:
        np.square(z, out=a[:, :q])
    else:
        a[:, 0] = np.einsum("ij,ij->i", z, z)
    a[:, -2] = 1.0
    a[:, -1] = 0.0
    return a


@dataclass
class Pruned:
    """Which (point, block) pairs one evaluation keeps, and each point's reference R and skipped mass."""

    ref: np.ndarray  # (m,) R - s_0: the largest exact term of the point's candidate blocks
    skipped: np.ndarray  # (m,) upper bound of the skipped mass in units e^R
    v_max: np.ndarray  # (m,) largest |v_j| over the point's kept groups
    n_terms: np.ndarray  # (m,) terms the point keeps
    rows: np.ndarray  # kept pairs, sorted by block: point
    block_starts: np.ndarray  # (nb + 1,) block b's kept points are rows[block_starts[b]:block_starts[b+1]]
    n_bounds: int  # (point, block or group) bounds and estimates computed
    candidates: int  # pairs computed for the references


def _by_block(rows: list[np.ndarray], ids: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (row, id) sorted by id (stable: rows keep their order), and where each id starts."""
    flat = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32)
    order = np.argsort(flat.astype(np.int16) if n < 2**15 else flat, kind="stable")  # (radix for 16 bits)
    starts = np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=n))])
    return (np.concatenate(rows) if rows else np.zeros(0, dtype=np.int32))[order], starts


@dataclass
class LeftOut:
    """Each point's left-out component (blocked position, -1: none) and its block (-1: none)."""

    left: np.ndarray
    block: np.ndarray

    @classmethod
    def of(cls, blocks: Blocks, left: np.ndarray) -> "LeftOut":
        block = np.searchsorted(blocks.starts, left, side="right") - 1
        return cls(left, np.where(left >= 0, block, -1))


@dataclass
class Batch:
    """Blocks whose kept points are evaluated by one stacked product (``batches``)."""

    blocks: np.ndarray  # (B,) block ids
    rows: np.ndarray  # (B, r) each block's points, the last repeated where it has fewer than r
    valid: np.ndarray  # (B, r) the entries that are pairs (not repeats)
    positions: np.ndarray  # (B, r) the entries' places in the list of pairs
    left: tuple[np.ndarray, ...]  # (block slot, entry, column) of the left-out pairs
    partial: list[tuple[int, int]]  # (slot, size) of blocks with fewer than LEAF members

    def terms(self, blocks: Blocks, a: np.ndarray) -> np.ndarray:
        """(B, r, LEAF) x = L_j - s_0 - F of the pairs (float64 design rows ``a``, F in its last column); -inf
        for left-out pairs and the empty places of partial blocks."""
        vals = np.matmul(a[self.rows], blocks.terms[self.blocks])
        vals[self.left] = -np.inf
        for slot, size in self.partial:
            vals[slot, :, size:] = -np.inf
        return vals

    def screen(self, blocks: Blocks, a32: np.ndarray) -> np.ndarray:
        """(B, r) each entry's largest term from float32 products (design rows ``a32``), -inf where it has
        none (members in rows: the largest is an elementwise pass, where the last axis would be a slow
        reduction)."""
        vals = np.matmul(blocks.screen[self.blocks], a32[self.rows].transpose(0, 2, 1))
        slots, entries, columns = self.left
        vals[slots, columns, entries] = -np.inf
        for slot, size in self.partial:
            vals[slot, size:] = -np.inf
        return vals.max(axis=1)


def batches(blocks: Blocks, rows: np.ndarray, at: np.ndarray, left: LeftOut, max_rows: int = BATCH_ROWS) -> list[Batch]:
    """The pairs (block b's points ``rows[at[b]:at[b+1]]``) as batches of blocks with similar numbers of
    points (sorted by it), each with at most ``max_rows`` entries: one product per batch instead of one
    Python step per block (on the late codes at 60,000 points, about 7,500 blocks hold kept pairs)."""
    counts = np.diff(at)
    ids = np.flatnonzero(counts)
    ids = ids[np.argsort(counts[ids], kind="stable")]
    groups, k = [], 0
    while k < len(ids):  # (sorted counts: a batch's last block has its most points)
        take = 1
        while k + take < len(ids) and (take + 1) * counts[ids[k + take]] <= max_rows:
            take += 1
        groups.append(ids[k : k + take])
        k += take
    batch_of, slot_of = np.full(len(counts), -1), np.zeros(len(counts), dtype=np.int64)
    for i, bs in enumerate(groups):
        batch_of[bs], slot_of[bs] = i, np.arange(len(bs))
    # Left-out pairs: where a pair's point leaves out a member of the pair's block; sorted by batch.
    pair_block = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    marked = np.flatnonzero(left.block[rows] == pair_block)
    marked = marked[np.argsort(batch_of[pair_block[marked]], kind="stable")]
    edges = np.searchsorted(batch_of[pair_block[marked]], np.arange(len(groups) + 1))
    sizes = np.diff(blocks.starts)
    out = []
    for i, bs in enumerate(groups):
        c = counts[bs]
        offset = np.minimum(np.arange(int(c.max())), c[:, None] - 1)
        mine = marked[edges[i] : edges[i + 1]]
        mb = pair_block[mine]
        positions = at[bs][:, None] + offset
        out.append(
            Batch(
                bs,
                rows[positions],
                np.arange(offset.shape[1]) < c[:, None],
                positions,
                (slot_of[mb], mine - at[mb], left.left[rows[mine]] - blocks.starts[mb]),
                [(j, int(sizes[b])) for j, b in enumerate(bs) if sizes[b] < LEAF],
            )
        )
    return out


def _best(scores: np.ndarray, k: int) -> np.ndarray:
    """(m, min(k, columns)) the columns of each row's k largest scores, by argmax passes (far faster than
    a partition); ``scores`` is overwritten."""
    best = np.empty((len(scores), min(k, scores.shape[1])), dtype=np.int64)
    for i in range(best.shape[1]):
        best[:, i] = np.argmax(scores, axis=1)
        scores[np.arange(len(scores)), best[:, i]] = -np.inf
    return best


def select(
    blocks: Blocks, mix: Components, z: np.ndarray, a: np.ndarray, left: LeftOut, beta: float, chunk: int
) -> Pruned:
    """Estimates, references, bounds and kept pairs for points ``z`` (design rows ``a``, frame column 0;
    ``left``: their left-out components; ``beta``: the skipped mass allowed, step 5), ``chunk`` points at a
    time in level 1."""
    m, nb, ng = len(z), blocks.n_blocks, blocks.n_groups
    cut = math.log(beta / (nb + ng))
    cand_rows, cand_blocks = [], []
    # The candidate blocks: the best estimates, CANDIDATES per point, among the blocks of the groups that
    # rank among the best GUESS_GROUPS of some point of the chunk (few, for points in ``_locality``'s order).
    group_of = blocks.group_of
    for r0 in range(0, m, chunk):
        r1 = min(r0 + chunk, m)
        design = a[r0:r1, :-1].astype(np.float32)  # (float32: an estimate, not a bound)
        likely = np.unique(_best(design @ blocks.groups.guess.T, GUESS_GROUPS))
        among = np.flatnonzero(np.isin(group_of, likely))
        best = among[_best(design @ blocks.blocks.guess[among].T, CANDIDATES)].astype(np.int32)
        cand_rows.append(np.repeat(np.arange(r0, r1, dtype=np.int32), best.shape[1]))
        cand_blocks.append(best.ravel())
    # R: the largest exact term over each point's candidates.
    ref = np.full(m, -np.inf)
    rows_by, at = _by_block(cand_rows, cand_blocks, nb)
    sizes = np.diff(blocks.starts)
    for batch in batches(blocks, rows_by, at, left):
        top = batch.terms(blocks, a).max(axis=2)
        np.maximum.at(ref, batch.rows[batch.valid], top[batch.valid])
    candidate_pairs = int((np.diff(at) * sizes).sum())
    # Level 1: every point against every group. A group, then a block, is skipped where its U + log n <
    # R + cut. (The block of the term R is never skipped: its bound is at least R.)
    kept_rows, kept_groups = [], []
    for r0 in range(0, m, chunk):
        r1 = min(r0 + chunk, m)
        u = blocks.groups.upper_bounds(z[r0:r1] - mix.centre, mix.ref)
        u -= ref[r0:r1, None]
        point, group = np.nonzero(u >= cut)
        kept_rows.append((point + r0).astype(np.int32))
        kept_groups.append(group.astype(np.int32))
    group_rows, group_at = _by_block(kept_rows, kept_groups, ng)
    group_ids = np.repeat(np.arange(ng), np.diff(group_at))
    # Level 2: the points that keep a group against its blocks. Each group's pairs come out by block (the
    # transposed test) and the groups in order, so that the pairs are sorted by block without a sort.
    kept_rows, kept_blocks = [], []
    n_bounds = m * (ng + nb)
    for g in map(int, np.flatnonzero(np.diff(group_at))):
        lo, hi = int(blocks.group_starts[g]), int(blocks.group_starts[g + 1])
        found_rows, found_blocks = [], []
        for p0 in range(group_at[g], group_at[g + 1], ROWS):
            rows = group_rows[p0 : min(p0 + ROWS, group_at[g + 1])]
            u = blocks.blocks.upper_bounds(z[rows] - mix.centre, mix.ref, slice(lo, hi))
            u -= ref[rows][:, None]
            block, row = np.nonzero((u >= cut).T)
            found_rows.append(rows[row])
            found_blocks.append((block + lo).astype(np.int32))
            n_bounds += u.size
        rows_g, blocks_g = np.concatenate(found_rows), np.concatenate(found_blocks)
        if len(found_rows) > 1:  # (a group kept by more than ROWS points: its pairs sorted by block)
            order = np.argsort(blocks_g, kind="stable")
            rows_g, blocks_g = rows_g[order], blocks_g[order]
        kept_rows.append(rows_g)
        kept_blocks.append(blocks_g)
    block_rows = np.concatenate(kept_rows) if kept_rows else np.zeros(0, dtype=np.int32)
    block_ids = np.concatenate(kept_blocks) if kept_blocks else np.zeros(0, dtype=np.int32)
    block_at = np.concatenate([[0], np.cumsum(np.bincount(block_ids, minlength=nb))])
    n_terms = np.bincount(block_rows, weights=sizes[block_ids], minlength=m)
    v_max = np.zeros(m)
    np.maximum.at(v_max, group_rows, blocks.groups.v_max[group_ids])
    # Units skipped: every group, and the blocks of the kept groups, less those kept.
    blocks_per_group = np.diff(blocks.group_starts).astype(np.float64)
    units = ng + np.bincount(group_rows, weights=blocks_per_group[group_ids] - 1.0, minlength=m)
    units -= np.bincount(block_rows, minlength=m)
    # Each skipped group or block holds less than beta / (nb + ng) in units e^R (step 5).
    return Pruned(ref, units * (beta / (nb + ng)), v_max, n_terms, block_rows, block_at, n_bounds, candidate_pairs)


def evaluate(
    blocks: Blocks, mix: Components, z: np.ndarray, left_out: np.ndarray, atol: float, max_memory_mb: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """log p(z) (M,), its bound (M,) and the number of pairs computed exactly; ``left_out`` (M,) in the
    mixture's sorted order (-1: none). Rows whose bound exceeds ``atol`` are the caller's to redo."""
    m, (n, d) = len(z), mix.means.shape
    q = mix.prec.shape[1]
    left = np.where(left_out >= 0, blocks.where[np.maximum(left_out, 0)], -1)
    # Chunks of points whose estimates of every block fit in 2 MiB; parts of points whose points, design
    # rows (float64 and float32) and kept pairs (13-17 bytes each; about an eighth of the groups and
    # blocks at most) fit in max_memory_mb.
    chunk = max(8, 2**21 // (8 * (blocks.n_blocks + 3 * blocks.n_groups)))
    per_point = 8 * d + 12 * (q + d + 2) + 17 * (blocks.n_blocks + blocks.n_groups) // 8
    part = max(chunk, int(max_memory_mb * 2**20 / 2 // per_point))
    value, bound, pairs = np.empty(m), np.empty(m), 0
    order = _locality(blocks, z, left, q)
    with flush_to_zero():
        for p0 in range(0, m, part):
            rows = order[p0 : p0 + part]
            zp = z[rows]
            out = LeftOut.of(blocks, left[rows])
            a = _design(zp, q)
            sel = select(blocks, mix, zp, a, out, skip_margin(atol), chunk)
            # A frame F per point in the product's last column: R + FRAME_LIFT, so that the sum is at least
            # e^-FRAME_LIFT (R is a term); a block that would take the point's exps near float32's range
            # raises it (``_sums``).
            a[:, -1] = -(sel.ref + FRAME_LIFT)
            total, far, frame_abs, drift, done = _sums(blocks, sel, a, out)
            frame = -a[:, -1]
            pairs += done + sel.candidates
            k = q + d + 2
            skipped = sel.skipped * np.exp(sel.ref - frame) + far
            bound[rows] = prune_bound(
                total, skipped, sel.v_max, frame_abs, drift, sel.n_terms, k, blocks.terms.shape[2]
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                value[rows] = mix.ref + frame + np.log(total)
    count = n - (left_out >= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        value -= np.log(count)
    return np.where(count > 0, value, -np.inf), np.where(count > 0, bound, 0.0), pairs


def _locality(blocks: Blocks, z: np.ndarray, left: np.ndarray, q: int) -> np.ndarray:
    """An order of the points that keeps nearby ones together, so that the rows gathered for a block's
    products lie close in memory (at 60,000 late codes the screen's gathers took half the time of those
    in the callers' order): sorted by the group of the component a point leaves out (the one it was
    drawn from, in the estimators), else by its best-estimated group."""
    block = LeftOut.of(blocks, left).block
    key = np.where(block >= 0, blocks.group_of[block], 0)
    free = np.flatnonzero(left < 0)
    for r0 in range(0, len(free), ROWS):
        rows = free[r0 : r0 + ROWS]
        key[rows] = np.argmax(_design(z[rows], q)[:, :-1].astype(np.float32) @ blocks.groups.guess.T, axis=1)
    return np.argsort(key, kind="stable")


def _sums(
    blocks: Blocks, sel: Pruned, a: np.ndarray, left: LeftOut
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Over each point's kept terms x = L_j - s_0 - F (design rows ``a``, F in its last column): the sum
    of e^x in units e^F, with F raised where it must be (``_raise``); a bound of the mass of the entries
    the float32 screen set aside (units e^F); the largest |F| each point used, the relative rounding of
    its rescalings, and the number of pairs computed.

    Every kept (point, block) entry is first screened by a float32 product: where the block's largest
    term lies more than NEAR nats below the point's R (most entries: the ball bounds are loose by tens of
    nats), its terms are not summed but bounded with step 1's float32 error (step 5); the others are
    computed again with float64 products and summed."""
    m = len(a)
    far, frame_abs, drift = np.zeros(m), np.abs(a[:, -1]), np.zeros(m)
    sizes = np.diff(blocks.starts)
    g32 = gamma(a.shape[1] + 2, UNIT_ROUNDOFF[np.dtype(np.float32)])
    g32 /= 1 - 2 * g32
    # (one c of step 5 for all the part's points, the largest: an upper bound for each; 0.02 on the late codes)
    c = g32 * (float(sel.v_max.max(initial=0.0)) + 3 * float(frame_abs.max(initial=0.0)))
    a32 = a.astype(np.float32)
    near = np.zeros(len(sel.rows), dtype=bool)
    pairs = 0
    with np.errstate(over="ignore", invalid="ignore"):
        for batch in batches(blocks, sel.rows, sel.block_starts, left):
            top = batch.screen(blocks, a32).astype(np.float64)
            close = top >= -(FRAME_LIFT + NEAR)
            near[batch.positions[batch.valid]] = close[batch.valid]
            # Set aside: every term x <= x^ + c + 2 gamma' |x^| <= top + 2 gamma' |top| + c (step 5, float32).
            mass = np.exp(top + 2 * g32 * np.abs(top) + c) * sizes[batch.blocks][:, None]
            mass[close | ~batch.valid] = 0.0
            far += np.bincount(batch.rows.ravel(), mass.ravel(), minlength=m)
            pairs += int((batch.valid * sizes[batch.blocks][:, None]).sum())
        keep = np.flatnonzero(near)
        rows = sel.rows[keep]
        at = np.searchsorted(keep, sel.block_starts)
        out = np.zeros(m)
        ones = np.ones(LEAF, dtype=np.float32)
        for batch in batches(blocks, rows, at, left):
            # float32 exps (SIMD where float64 ones are not) and block sums (a float32 product, ten times
            # faster than a float64 sum), added up in float64 (step 5)
            vals = batch.terms(blocks, a)
            small = vals.astype(np.float32)
            sums = np.exp(small, out=small) @ ones
            pairs += int((batch.valid * sizes[batch.blocks][:, None]).sum())
            if not sums.max() < RAISE_SUM:  # (the repeated entries repeat a pair's sum)
                pairs += _raise(blocks, batch, a, vals, sums, (out, far), frame_abs, drift)
            out += np.bincount(batch.rows[batch.valid], sums[batch.valid], minlength=m)
    return out, far, frame_abs, drift, pairs


def _raise(
    blocks: Blocks,
    batch: Batch,
    a: np.ndarray,
    vals: np.ndarray,
    sums: np.ndarray,
    totals: tuple[np.ndarray, ...],
    frame_abs: np.ndarray,
    drift: np.ndarray,
) -> int:
    """Where a block's terms sum past e^RAISE_AT (or overflow) in a point's frame, the frame rises by the
    largest of them over the batch and the point's sum so far is rescaled (step 5), so that every exp
    stays below e^88; the batch's ``sums`` of those points are computed again in the new frame, and the
    ``totals`` so far rescaled. Returns the pairs computed again."""
    slot, entry = np.nonzero(~(sums < RAISE_SUM) & batch.valid)
    raised, which = np.unique(batch.rows[slot, entry], return_inverse=True)
    rise = np.full(len(raised), -np.inf)
    np.maximum.at(rise, which, vals[slot, entry].max(axis=1))
    old = a[raised, -1].copy()
    a[raised, -1] -= rise
    step = a[raised, -1] - old
    for total in totals:
        total[raised] *= np.exp(step)
    drift[raised] += (np.abs(step) + EXP_ULP + 2) * UNIT_ROUNDOFF[F64]
    frame_abs[raised] = np.maximum(frame_abs[raised], np.abs(a[raised, -1]))
    flag = np.zeros(len(a), dtype=bool)
    flag[raised] = True
    slot, entry = np.nonzero(flag[batch.rows] & batch.valid)
    again = np.einsum("ek,ekl->el", a[batch.rows[slot, entry]], blocks.terms[batch.blocks[slot]])
    again[np.isneginf(vals[slot, entry])] = -np.inf  # (left-out pairs and empty places)
    sums[slot, entry] = np.exp(again.astype(np.float32)) @ np.ones(LEAF, dtype=np.float32)
    return int(np.diff(blocks.starts)[batch.blocks[slot]].sum())


@dataclass
class Look:
    """A few points against all components (``look``)."""

    near: float  # the fraction of their pairs within OVERLAP_GAP nats of their point's largest term
    points: np.ndarray  # (k,) the points' indices
    top: np.ndarray  # (k,) each point's largest term - s_0


def look(mix: Components, z: np.ndarray) -> Look:
    """``OVERLAP_POINTS`` evenly spaced points against every component (float64 products of the expansion
    about the mixture's centre: a few rows of the dense work): where many pairs lie near their point's largest
    term, no bound can skip much, and neither groups nor blocks are built."""
    idx = np.unique(np.linspace(0, len(z) - 1, min(len(z), OVERLAP_POINTS)).astype(np.int64))
    y, offsets = z[idx] - mix.centre, mix.means - mix.centre
    lin = offsets * mix.prec
    # sum_k w (y - m)^2 = y^2 . w - 2 y . (w m) + m . (w m), y = z - c and m = mu - c (centred: few digits lost)
    square = _design(y, mix.prec.shape[1])[:, : mix.prec.shape[1]] @ mix.prec.T
    square -= 2.0 * (y @ lin.T)
    square += np.einsum("ij,ij->i", offsets, lin)
    terms = mix.log_norm - mix.ref - 0.5 * square  # L_j - s_0
    top = terms.max(axis=1)
    near = np.count_nonzero(terms >= (top - OVERLAP_GAP)[:, None])
    return Look(near / terms.size, idx, top)


def group_check(groups: Groups, mix: Components, z: np.ndarray, seen: Look, atol: float) -> dict[str, Any]:
    """Estimate the pruned path's cost from the groups' bounds alone, before any block is built: for the
    looked-at points, with their largest term as the reference R, the share of pairs in groups that are
    kept (step 5's skip rule), the level-2 bounds they need and ``GROUP_SHARE`` of their pairs. The
    estimate is low where the path's R lies below the largest term (it keeps more), so that this check
    only sends to the dense path codes whose groups keep nearly every pair."""
    n = len(mix.means)
    ball = groups.ball(mix)
    sizes = groups.sizes
    n_blocks = -(-sizes // LEAF)
    cut = math.log(skip_margin(atol) / (n_blocks.sum() + len(sizes)))
    kept = ball.upper_bounds(z[seen.points] - mix.centre, mix.ref) - seen.top[:, None] >= cut
    share = float((kept @ sizes).mean()) / n
    bounds = len(sizes) + float((kept @ n_blocks).mean())
    return {"kept_fraction": share, "relative_cost": BOUND_COST * bounds / n + PAIR_COST * GROUP_SHARE * share}


def pilot(blocks: Blocks, mix: Components, z: np.ndarray, left_out: np.ndarray, atol: float) -> dict[str, Any]:
    """Estimate the pruned path's cost on ``PILOT_POINTS`` evenly spaced points (relative to the dense
    path's M N pairs): the kept fraction of pairs and the estimated relative cost."""
    n = len(mix.means)
    idx = np.unique(np.linspace(0, len(z) - 1, min(len(z), PILOT_POINTS)).astype(np.int64))
    left = np.where(left_out[idx] >= 0, blocks.where[np.maximum(left_out[idx], 0)], -1)
    q = mix.prec.shape[1]
    sel = select(blocks, mix, z[idx], _design(z[idx], q), LeftOut.of(blocks, left), skip_margin(atol), len(idx))
    kept = float(sel.n_terms.sum()) / (len(idx) * n)
    cost = BOUND_COST * sel.n_bounds / (len(idx) * n) + PAIR_COST * kept
    return {"kept_fraction": kept, "relative_cost": cost}
