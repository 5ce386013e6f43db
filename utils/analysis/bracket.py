"""What the two-sided bracket of I(X;Z) shows between epochs: a fall, a rise, or nothing identified.

Every mixture entry carries a lower (``mi_xz``) and an upper (``mi_xz_upper``) estimate of the
population I(X;Z), each a bound in expectation (Poole et al., ICML 2019; ``mi_estimators.dropout_MI``).
A fall of the population value from epoch a to a later epoch b is *shown* when the upper estimate at b
lies below the lower estimate at a by more than ``BRACKET_ERRORS`` total errors (the two points' total
errors in quadrature); a rise is shown the other way round (lower at b above upper at a). Otherwise the
pair is *not identified*: the brackets overlap, and no N-input estimate can tell which way I(X;Z) went.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from utils.analysis.entries import total_error

BRACKET_ERRORS = 3.0
"""A fall or rise is shown beyond this many total errors. Where the population value does not change,
E[upper(b)] >= I = I(a) >= E[lower(a)], so a shown fall needs a 3-error excursion of the difference
(0.13% for one pair of Gaussian errors); the count of pairs is reported beside it."""
BRACKET_COLUMNS = (
    "bracket_verdict",
    "bracket_falls",
    "bracket_rises",
    "bracket_pairs",
    "bracket_fall_from",
    "bracket_fall_to",
    "bracket_fall_margin",
    "bracket_width_first",
    "bracket_width_last",
    "bracket_width_min",
)


def _margin(low: dict, high: dict) -> tuple[float, float] | None:
    """lower(low) - upper(high) and its total error; None where either side is missing."""
    if low.get("mi_xz") is None or high.get("mi_xz_upper") is None:
        return None
    errors = [e for e in (total_error(low, "xz"), total_error(high, "xz_upper")) if e is not None]
    return low["mi_xz"] - high["mi_xz_upper"], math.hypot(*errors) if errors else 0.0


def bracket_verdict(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The bracket columns for one run's curve (rows with ``epoch``, ``mi_xz``, ``mi_xz_upper`` and errors,
    in epoch order): how many epoch pairs show a fall or a rise, the most decisive fall (its margin in
    total errors), the bracket width (upper - lower) at the first and last epochs and its smallest value.
    Empty (``bracket_verdict`` None) for an estimator without an upper estimate."""
    widths = [
        p["mi_xz_upper"] - p["mi_xz"] for p in points if p.get("mi_xz_upper") is not None and p.get("mi_xz") is not None
    ]
    if not widths:
        return dict.fromkeys(BRACKET_COLUMNS)
    falls, rises, pairs, best = 0, 0, 0, None
    for i, early in enumerate(points):
        for late in points[i + 1 :]:
            fall, rise = _margin(early, late), _margin(late, early)
            if fall is None or rise is None:
                continue
            pairs += 1
            falls += fall[0] > BRACKET_ERRORS * fall[1]
            rises += rise[0] > BRACKET_ERRORS * rise[1]
            score = fall[0] / fall[1] if fall[1] > 0 else math.copysign(math.inf, fall[0])
            if best is None or score > best[0]:
                best = (score, early["epoch"], late["epoch"])
    verdict = (
        "fall and rise shown"
        if falls and rises
        else "fall shown"
        if falls
        else "rise shown"
        if rises
        else "not identified"
    )
    return {
        "bracket_verdict": verdict,
        "bracket_falls": falls,
        "bracket_rises": rises,
        "bracket_pairs": pairs,
        "bracket_fall_from": None if best is None else best[1],
        "bracket_fall_to": None if best is None else best[2],
        "bracket_fall_margin": None if best is None else best[0],
        "bracket_width_first": widths[0],
        "bracket_width_last": widths[-1],
        "bracket_width_min": min(widths),
    }


def summarise_verdicts(verdicts: Sequence[dict[str, Any]]) -> str:
    """One cell for a group of runs: how many show a fall, a rise, or neither, and the bracket widths."""
    shown = [v for v in verdicts if v.get("bracket_verdict") is not None]
    if not shown:
        return "-"
    counts = {
        name: sum(v["bracket_verdict"] == name for v in shown)
        for name in ("fall shown", "rise shown", "fall and rise shown", "not identified")
    }
    text = ", ".join(f"{name} {count}" for name, count in counts.items() if count)
    low, high = min(v["bracket_width_last"] for v in shown), max(v["bracket_width_last"] for v in shown)
    width = f"{low:.3g}" if f"{low:.3g}" == f"{high:.3g}" else f"{low:.3g}-{high:.3g}"
    return f"{text} of {len(shown)} (last width {width} nats)"
