"""The machine a benchmark ran on, named in its output."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name and its widest vector instruction set (Linux; the platform's name elsewhere)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    widest = next((name for name in ("avx512f", "avx2", "avx", "sse4_2") if name in flags), "none")
    return f"{model} ({widest.upper().replace('AVX512F', 'AVX-512')})"
