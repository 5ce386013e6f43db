"""Flush-to-zero in the calling thread: floating-point results below the smallest normal become 0.

Why: a subnormal result costs a microcode assist on Intel CPUs (see ``bound.raise_tiny``). The float32
exps of terms below -87 nats are such results; under flush-to-zero they are 0, which step 3 of the
bound already allows (a term below TINY is only known to lie in [0, e^(E + TINY)]), so the kernel
needs neither the assists nor the pass that raises those terms to -87 first.

Python has no call for it. On x86-64 Linux with glibc the SSE control register MXCSR is the last 4
bytes of the 32 of ``fenv_t`` (after the 28-byte x87 environment), read and written with libm's
``fegetenv`` / ``fesetenv`` through ctypes; the register is per thread, so nothing else is touched.
Elsewhere nothing changes and the caller keeps raising. Whether it took effect is checked, not
assumed: float32 1.2e-38 / 2 must give 0.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import sys
from typing import Iterator

import numpy as np

_FTZ_BIT = 0x8000
_MXCSR = slice(28, 32)
_ENV_BYTES = 32


def _load_libm() -> ctypes.CDLL | None:
    if sys.platform != "linux" or platform.machine() != "x86_64" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libm.so.6")
    except OSError:
        return None


_LIBM = _load_libm()


def flushes_to_zero() -> bool:
    """Whether float32 results below the smallest normal are 0 in this thread now."""
    return float((np.array([1.2e-38], dtype=np.float32) / np.float32(2.0))[0]) == 0.0


@contextlib.contextmanager
def flush_to_zero() -> Iterator[bool]:
    """Within the block, results below the smallest normal are 0 in this thread; yields whether that
    is so (False where the platform gives no way to set it: then nothing changes). The thread's
    floating-point environment is restored on leaving, also after an exception."""
    if _LIBM is None:
        yield flushes_to_zero()
        return
    saved = ctypes.create_string_buffer(2 * _ENV_BYTES)  # (twice the size: room to spare)
    if _LIBM.fegetenv(saved) != 0:
        yield flushes_to_zero()
        return
    env = bytearray(saved.raw)
    mxcsr = int.from_bytes(env[_MXCSR], "little")
    env[_MXCSR] = (mxcsr | _FTZ_BIT).to_bytes(4, "little")
    try:
        _LIBM.fesetenv(ctypes.create_string_buffer(bytes(env), len(env)))
        yield flushes_to_zero()
    finally:
        _LIBM.fesetenv(saved)
