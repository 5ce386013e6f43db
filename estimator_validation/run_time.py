"""How long a run will take, estimated from its sizes before it starts.

A command refuses a run whose rough time exceeds :data:`MAX_SECONDS` (a typo such as
``--repeats 100000000`` would otherwise run for thousands of hours) and says the expected time of any
run longer than :data:`LONG_SECONDS` before it starts. Times are for two idle CPU cores; the models
below are rough (a factor of 3 either way), enough to tell a minute from a day.
"""

from __future__ import annotations

import sys

from utils.cli import CommandError

MAX_SECONDS = 24 * 3600.0
"""Longest run a command starts: a day."""
LONG_SECONDS = 30.0
"""Runs expected to take longer say so before they start."""
PAIR_SECONDS = 1e-8
PAIR_DIM_SECONDS = 5e-11
"""Mixture estimate cost per (point, component) pair, the convergence subsets and pilot draws included:
fixed part and per dimension. Fitted to the toy problem's default runs (6.5e9 pairs at d = 1 in 40 to
116 s) and large problems timed with ``benchmarks/bench_estimators.py`` (4e-9 s per pair at d = 32, 8e-9 at
d = 128)."""
UNNESTED_FACTOR = 0.7
"""Without the convergence subsets (``nested=False``) an estimate costs about 70%."""


def mixture_seconds(n: int, d: int, draws: int, *, nested: bool = True) -> float:
    """Rough seconds of a dropout mixture estimate on n inputs of dimension d with ``draws`` draws each."""
    pairs = float(n) * draws * n
    return pairs * (PAIR_SECONDS + PAIR_DIM_SECONDS * d) * (1.0 if nested else UNNESTED_FACTOR)


def duration(seconds: float) -> str:
    """``seconds`` in words: '40 s', '12 min', '3.5 h', '2,000 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:,.1f} h" if seconds < 36000 else f"{seconds / 3600:,.0f} h"


def check_time(seconds: float, flags: str) -> None:
    """:class:`CommandError` naming ``flags`` when a run would take longer than :data:`MAX_SECONDS`."""
    if seconds > MAX_SECONDS:
        raise CommandError(
            f"this run would take about {duration(seconds)} (the limit is {duration(MAX_SECONDS)}); lower {flags}"
        )


def announce(prog: str, seconds: float) -> None:
    """Say the expected time on stderr before a run longer than :data:`LONG_SECONDS` starts."""
    if seconds > LONG_SECONDS:
        print(
            f"{prog}: expected time about {duration(seconds)} on two CPU cores (a rough estimate from the sizes)",
            file=sys.stderr,
            flush=True,
        )
