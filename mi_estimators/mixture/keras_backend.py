"""The mixture kernel's chunk of pairs in ``keras.ops``, compiled, on Keras' backend and accelerator.

Components are padded per group to whole chunks and kept on the device; the points of a row chunk
are sent once and the shift is subtracted after the product (step 2 of
:mod:`mi_estimators.mixture.bound` covers that rounding). Hits are the largest ``DEVICE_TOP_K`` terms
of a row that pass the threshold. Reduced-precision matrix products (TF32) are switched off during
``session``: they would void step 1 of the bound.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np

from mi_estimators.mixture.bound import SAFE_EXP, TOP_GAP, Segment

DEVICE_TOP_K = 15  # k + 1 = 16: within the fast top-k of XLA on GPUs
DEVICE_MAX = 32768


class KerasSegments:
    """The NumPy backend's segment with ``keras.ops`` (module docstring)."""

    cap, buffers = DEVICE_MAX, 3

    def __init__(self, b: np.ndarray, v: np.ndarray, n_rows: int, n_cols: int, group_edges: np.ndarray):
        import keras

        self.ops, self.backend = keras.ops, keras.backend.backend()
        self.dtype, self.k, self.n_rows, self.n_cols = b.dtype, b.shape[1], n_rows, n_cols
        self.top_k = min(DEVICE_TOP_K, n_cols - 1) if n_cols > 1 else 0
        self.offsets: dict[int, int] = {}
        padded_b: list[np.ndarray] = []
        padded_v: list[np.ndarray] = []
        for lo, hi in zip(group_edges[:-1], group_edges[1:]):
            for c0 in range(lo, hi, n_cols):
                c1 = min(c0 + n_cols, hi)
                self.offsets[c0] = sum(len(x) for x in padded_b)
                padded_b.append(np.pad(b[c0:c1], ((0, n_cols - (c1 - c0)), (0, 0))))
                padded_v.append(np.pad(v[c0:c1], ((0, n_cols - (c1 - c0)), (0, 0))))
        self.b = self.ops.convert_to_tensor(np.concatenate(padded_b))
        self.v = self.ops.convert_to_tensor(np.concatenate(padded_v))
        self.fn = _segment_fn(self.backend, self.top_k)
        self.a, self.m = None, 0

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        with full_precision_matmul(self.backend):
            yield

    def load(self, a: np.ndarray) -> None:
        self.m = len(a)
        a = np.pad(a, ((0, self.n_rows - len(a)), (0, 0)))
        a[:, -1] = 0.0
        self.a = self.ops.convert_to_tensor(a)

    def segment(
        self,
        shift: np.ndarray,
        c0: int,
        c1: int,
        top: np.ndarray,
        forced: np.ndarray | None,
        left_out: np.ndarray | None,
    ) -> Segment:
        m, pad = self.m, self.n_rows - self.m
        forced = np.zeros(m, dtype=bool) if forced is None else forced
        # The left-out column relative to the chunk (-1: none here; padding rows leave out nothing).
        local = (
            np.full(m, -1, dtype=np.int32)
            if left_out is None
            else np.where((left_out >= c0) & (left_out < c1), left_out - c0, -1).astype(np.int32)
        )
        args = [np.pad(x, (0, pad)) for x in (shift.astype(self.dtype), top.astype(self.dtype), forced)]
        args.append(np.pad(local, (0, pad), constant_values=-1))
        # Chunk offsets as tensors on TensorFlow (a Python int would retrace), plain ints elsewhere.
        where = [self.offsets[c0], c1 - c0]
        if self.backend == "tensorflow":
            where = [self.ops.convert_to_tensor(np.int32(x)) for x in where]
        outs = self.fn(self.a, self.b, self.v, *[self.ops.convert_to_tensor(x) for x in args], *where, self.n_cols)
        frame, sums, row_max, idx, hit = (self.ops.convert_to_numpy(x)[:m] for x in outs)
        rows, j = np.nonzero(hit)
        return Segment(
            frame.astype(np.float64),
            sums.astype(np.float64),
            row_max.astype(np.float64) - shift,
            rows,
            c0 + idx[rows, j].astype(np.int64),
        )


@contextlib.contextmanager
def full_precision_matmul(backend: str) -> Iterator[None]:
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


_COMPILED: dict[tuple[str, int], Callable[..., Any]] = {}


def _segment_fn(backend: str, top_k: int) -> Callable[..., Any]:
    """The segment as two compiled functions: (a, b, offset, n_valid, left out) -> (products, top-k values
    and indices), then (products, top k, v, offset, shift, top, forced) -> (frame, sums, row max, hits).

    Two functions, not one: XLA on the CPU fused the whole segment into a loop 30 times slower.
    """
    key = (backend, top_k)
    if key not in _COMPILED:
        products, rest = _segment_ops(top_k)
        products, rest = _compile(backend, products), _compile(backend, rest)
        _COMPILED[key] = lambda a, b, v, shift, top, forced, left_out, offset, n_valid, n_cols: rest(
            *products(a, b, offset, n_valid, left_out, n_cols), v, offset, shift, top, forced, n_cols
        )
    return _COMPILED[key]


def _segment_ops(top_k: int) -> tuple[Callable[..., Any], Callable[..., Any]]:
    import keras

    ops = keras.ops

    def products(a, b_all, offset, n_valid, left_out, n_cols):
        b = ops.slice(b_all, [offset, 0], [n_cols, ops.shape(b_all)[1]])
        cols = ops.arange(n_cols)[None, :]
        keep = ops.logical_and(cols < n_valid, cols != left_out[:, None])
        prod = ops.where(keep, ops.matmul(a, ops.transpose(b)), -np.inf)
        vals, idx = ops.top_k(prod, top_k + 1)
        return prod, vals, idx

    def rest(prod, vals, idx, v_all, offset, shift, top, forced, n_cols):
        v = ops.slice(v_all, [offset, 0], [n_cols, 2])
        row_max = vals[:, 0]
        top = ops.where(forced, row_max - shift, top)
        # (a row whose only term here is left out keeps its shift and stays forced)
        grows = ops.logical_or(forced, row_max - shift > SAFE_EXP)
        frame = ops.where(ops.logical_and(grows, row_max > -np.inf), row_max, shift)
        # Hits: at least the threshold (as in NumPy) and above the (k+1)-th largest, so at most k per row.
        thr, kth = (top + shift - TOP_GAP)[:, None], vals[:, top_k : top_k + 1]
        hit = ops.logical_and(vals[:, :top_k] >= thr, vals[:, :top_k] > kth)
        e = ops.where(ops.logical_and(prod >= thr, prod > kth), 0.0, ops.exp(prod - frame[:, None]))
        return frame, ops.matmul(e, v), row_max, idx[:, :top_k], hit

    return products, rest


def _compile(backend: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    if backend == "jax":
        import jax

        return jax.jit(fn, static_argnames=("n_cols",))
    if backend == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(fn, reduce_retracing=True)
        return lambda *args: compiled(*args[:-1], n_cols=args[-1])
    return fn
