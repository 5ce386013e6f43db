"""Does I(X;Z) fall during training by more than its errors? The verdicts of a comparison and every
threshold they use, behind ``compression.csv`` and the verdict columns of ``summary.md``.

Adilova, Geiger & Fischer (ICLR 2023) read compression off the information plane as a fall of I(X;Z)
after its peak. A fall is judged on three kinds of evidence, each against its own threshold:

- the peak fall, from a run's largest estimate of I(X;Z) to its last epoch (columns ``drop``,
  ``drop_error``, ``compressed``): the run compresses beyond ``PEAK_FALL_ERRORS`` errors;
- the largest fall, from any epoch to a later one (``largest_fall``, ``fall_from_epoch``,
  ``fall_to_epoch``, ``fall_error``), which also catches a dip that training later undoes; it counts
  beyond ``LARGEST_FALL_ERRORS`` errors;
- the bracket fall (and rise) of the population I(X;Z) (the ``bracket_*`` columns). Every mixture entry
  carries a lower (``mi_xz``) and an upper (``mi_xz_upper``) estimate, each a bound in expectation
  (Poole et al., ICML 2019; ``mi_estimators.dropout_MI``). A fall from epoch a to a later epoch b is
  *shown* when the upper estimate at b lies below the lower estimate at a by more than
  ``BRACKET_ERRORS`` total errors (the two estimates' total errors in quadrature); a rise is shown the
  other way round (lower at b above upper at a). Otherwise the pair is *not identified*: the brackets
  overlap, and no N-input estimate can tell which way I(X;Z) went.

A point whose saturation exceeds :data:`utils.analysis.entries.SATURATION_LIMIT` is limited by the
number of inputs (``limited_by_n``); that limit lives with the reading of an entry, as the figures draw
such points hollow.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from utils.analysis.entries import SATURATION_LIMIT, total_error
from utils.analysis.run_groups import group_sizes, sized_group

PEAK_FALL_ERRORS = 3.0
"""A fall from the peak to the last epoch counts as compression beyond this many errors. The peak is the
largest of many noisy estimates: for 51 saved epochs of pure noise the fall exceeds 2 errors in 30% of
runs, 3 in 3.7% (16 epochs: 17% and 1.5%; simulated with equal independent errors)."""
LARGEST_FALL_ERRORS = 4.0
"""The largest fall over all pairs of epochs counts beyond this many errors: pure noise over 51 saved
epochs exceeds 2 errors in 99.6% of runs and 4 in 2.8% (16 epochs: 0.4%)."""
BRACKET_ERRORS = 3.0
"""The bracket shows a fall or a rise beyond this many total errors. Where the population value does not
change, E[upper(b)] >= I = I(a) >= E[lower(a)], so a shown fall needs a 3-error excursion of the
difference (0.13% for one pair of Gaussian errors); the count of pairs is reported beside it."""

BRACKET_VERDICTS = ("fall shown", "rise shown", "fall and rise shown", "not identified")
"""The bracket's verdicts on one run's curve (``bracket_verdict``)."""
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
COMPRESSION_COLUMNS = (
    "group",
    "layer",
    "split",
    "estimator",
    "run",
    "seed",
    "first_epoch",
    "first",
    "peak_epoch",
    "peak",
    "last_epoch",
    "last",
    "drop",
    "drop_error",
    "compressed",
    "saturation_peak",
    "saturation_last",
    "limited_by_n",
    "largest_fall",
    "fall_from_epoch",
    "fall_to_epoch",
    "fall_error",
    *BRACKET_COLUMNS,
)


def compression_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run, layer, split and estimator (rows of ``estimates.csv``): I(X;Z) at the first trained epoch, at
    its peak and at the last epoch; the peak fall peak - last (column ``drop``) with its error (total
    errors of both estimates in quadrature; empty for estimators without an error, whose fall then only
    has to be positive) and ``compressed`` = a fall after the peak larger than ``PEAK_FALL_ERRORS`` times
    that error. ``limited_by_n``: the saturation at the peak or at the last epoch exceeds
    ``SATURATION_LIMIT``, so the estimate there is limited by the number of inputs and a flat curve says
    nothing about compression either way (McAllester & Stratos 2020). The largest fall
    (:func:`largest_fall`) and the bracket's verdict (:func:`bracket_verdict`) complete the row."""
    rows = [row for row in rows if row.get("skipped") is None]
    sizes = group_sizes(rows)
    # A run's callback series goes with the N of the run's other estimates of that split.
    run_n = {(row["run"], row["split"]): row["n_inputs"] for row in rows if row.get("n_inputs") is not None}
    curves: dict[tuple, list[dict]] = {}
    for row in rows:
        if row.get("mi_xz") is not None and row["epoch"] > 0:
            n = row.get("n_inputs") if row.get("n_inputs") is not None else run_n.get((row["run"], row["split"]))
            key = (sized_group(row["group"], n, sizes), row["layer"], row["split"], row["estimator"], row["run"])
            curves.setdefault(key, []).append(row)
    out = []
    for (group, layer, split, name, run), curve in curves.items():
        curve.sort(key=lambda r: r["epoch"])
        peak = max(curve, key=lambda r: r["mi_xz"])
        first, last = curve[0], curve[-1]
        peak_fall = peak["mi_xz"] - last["mi_xz"]
        error = _difference_error(peak, last)
        out.append(
            {
                "group": group,
                "layer": layer,
                "split": split,
                "estimator": name,
                "run": run,
                "seed": first["seed"],
                "first_epoch": first["epoch"],
                "first": first["mi_xz"],
                "peak_epoch": peak["epoch"],
                "peak": peak["mi_xz"],
                "last_epoch": last["epoch"],
                "last": last["mi_xz"],
                "drop": peak_fall,
                "drop_error": error,
                "compressed": bool(peak["epoch"] < last["epoch"] and peak_fall > PEAK_FALL_ERRORS * (error or 0.0)),
                "saturation_peak": peak.get("saturation"),
                "saturation_last": last.get("saturation"),
                "limited_by_n": any((r.get("saturation") or 0.0) > SATURATION_LIMIT for r in (peak, last)),
                **largest_fall(curve),
                **bracket_verdict(curve),
            }
        )
    return sorted(out, key=lambda r: (r["group"], r["layer"], r["estimator"], r["split"], r["seed"] or 0))


def largest_fall(curve: Sequence[dict]) -> dict[str, Any]:
    """The largest I(X;Z)[i] - I(X;Z)[j] over i < j (one run's rows in epoch order), with its total error.

    A curve that never falls has a largest fall of 0 and no epochs or error."""
    best, top, pair = 0.0, curve[0], None
    for row in curve[1:]:
        if top["mi_xz"] - row["mi_xz"] > best:
            best, pair = top["mi_xz"] - row["mi_xz"], (top, row)
        if row["mi_xz"] > top["mi_xz"]:
            top = row
    if pair is None:
        return {"largest_fall": 0.0, "fall_from_epoch": None, "fall_to_epoch": None, "fall_error": None}
    return {
        "largest_fall": best,
        "fall_from_epoch": pair[0]["epoch"],
        "fall_to_epoch": pair[1]["epoch"],
        "fall_error": _difference_error(*pair),
    }


def largest_fall_shown(compression: dict[str, Any]) -> bool:
    """Whether a row of ``compression.csv`` has a largest fall beyond ``LARGEST_FALL_ERRORS`` errors."""
    return compression["fall_error"] is not None and (
        compression["largest_fall"] > LARGEST_FALL_ERRORS * compression["fall_error"]
    )


def _difference_error(a: dict, b: dict) -> float | None:
    """Total error of I(X;Z)[a] - I(X;Z)[b]: the two estimates' total errors in quadrature (None without any)."""
    totals = [t for t in (total_error(a, "xz"), total_error(b, "xz")) if t is not None]
    return math.hypot(*totals) if totals else None


def _margin(low: dict, high: dict) -> tuple[float, float] | None:
    """lower(low) - upper(high) and its total error; None where either side is missing."""
    if low.get("mi_xz") is None or high.get("mi_xz_upper") is None:
        return None
    errors = [e for e in (total_error(low, "xz"), total_error(high, "xz_upper")) if e is not None]
    return low["mi_xz"] - high["mi_xz_upper"], math.hypot(*errors) if errors else 0.0


def bracket_verdict(curve: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The bracket columns for one run's curve (rows with ``epoch``, ``mi_xz``, ``mi_xz_upper`` and errors,
    in epoch order): how many epoch pairs show a fall or a rise, the most decisive fall (its margin in
    total errors), the bracket width (upper - lower) at the first and last epochs and its smallest value.
    Empty (``bracket_verdict`` None) for an estimator without an upper estimate."""
    widths = [
        r["mi_xz_upper"] - r["mi_xz"] for r in curve if r.get("mi_xz_upper") is not None and r.get("mi_xz") is not None
    ]
    if not widths:
        return dict.fromkeys(BRACKET_COLUMNS)
    falls, rises, pairs, best = 0, 0, 0, None
    for i, early in enumerate(curve):
        for late in curve[i + 1 :]:
            fall, rise = _margin(early, late), _margin(late, early)
            if fall is None or rise is None:
                continue
            pairs += 1
            falls += fall[0] > BRACKET_ERRORS * fall[1]
            rises += rise[0] > BRACKET_ERRORS * rise[1]
            score = fall[0] / fall[1] if fall[1] > 0 else math.copysign(math.inf, fall[0])
            if best is None or score > best[0]:
                best = (score, early["epoch"], late["epoch"])
    fall_shown, rise_shown, both_shown, neither = BRACKET_VERDICTS
    verdict = both_shown if falls and rises else fall_shown if falls else rise_shown if rises else neither
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
