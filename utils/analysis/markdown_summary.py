"""The markdown summary of a comparison, ``summary.md``: per group, I(X;Z) and I(Y;Z) at the first
trained epoch, at the peak and at the last epoch over the seeds, and the verdicts on a fall of I(X;Z)
(:mod:`utils.analysis.verdicts`) in a few words each."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from utils import run_folder
from utils.analysis.verdicts import BRACKET_VERDICTS, LARGEST_FALL_ERRORS, largest_fall_shown


def _fmt(values: Sequence[float | None], digits: int = 3) -> str:
    """mean ± standard deviation between seeds (the mean alone for one seed)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=1):.{digits}f}"


def _errors(rows: Sequence[dict], q: str) -> str:
    """mean Monte Carlo / mean sampling error, "-" for a kind an estimator does not report."""
    parts = []
    for field in (f"mi_{q}_stderr", f"mi_{q}_sampling_stderr"):
        values = [r[field] for r in rows if r.get(field) is not None]
        parts.append(f"{np.mean(values):.2g}" if values else "-")
    return "-" if parts == ["-", "-"] else " / ".join(parts)


def summary_markdown(
    rows: Sequence[dict[str, Any]],
    compression: Sequence[dict[str, Any]],
    estimators: Sequence[str] = ("mixture", "callback", "binning_f", "binning"),
) -> str:
    """Markdown tables per group: I(X;Z) and I(Y;Z) at the first trained epoch, at each run's I(X;Z) peak and
    at the last epoch (mean ± standard deviation between seeds, mean Monte Carlo / sampling error; "-"
    where an estimator does not report one), the upper estimate of I(X;Z) where there is one, the
    saturation there, how many seeds compress, the largest fall of I(X;Z) and the bracket's verdict
    (``rows``: of ``estimates.csv``; ``compression``: :func:`utils.analysis.verdicts.compression_rows` of
    them)."""
    index = {(r["layer"], r["split"], r["estimator"], r["run"], r["epoch"]): r for r in rows}
    lines = []
    for group in sorted({c["group"] for c in compression}):
        pooled = sorted({c["run"] for c in compression if c["group"] == group})
        lines += [
            f"### {group}",
            "",
            f"{len(pooled)} run{'s' if len(pooled) > 1 else ''} pooled as seeds: {', '.join(pooled)}",
            "",
            "| estimator | split | point | epoch | I(X;Z) | errors X | upper I(X;Z) "
            "| errors upper | I(Y;Z) | errors Y | saturation | compressed seeds | largest fall | bracket |",
            "|" + " --- |" * 14,
        ]
        for name in estimators:
            for split in run_folder.SPLITS:
                runs = [
                    c for c in compression if c["group"] == group and c["estimator"] == name and c["split"] == split
                ]
                for point in ("first", "peak", "last") if runs else ():
                    picked = [index[(c["layer"], split, name, c["run"], c[f"{point}_epoch"])] for c in runs]
                    epochs = sorted({p["epoch"] for p in picked})
                    epoch = str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"
                    verdicts = (
                        f"{_compressed_cell(runs)} | {_largest_fall_cell(runs)} | {bracket_cell(runs)}"
                        if point == "last"
                        else " | |"
                    )
                    lines.append(
                        f"| {name} | {split} | {point} | {epoch} | {_fmt([p['mi_xz'] for p in picked])} | "
                        f"{_errors(picked, 'xz')} | {_fmt([p.get('mi_xz_upper') for p in picked])} | "
                        f"{_errors(picked, 'xz_upper')} | {_fmt([p.get('mi_zy') for p in picked])} | "
                        f"{_errors(picked, 'zy')} | {_fmt([p.get('saturation') for p in picked], 2)} | "
                        f"{verdicts} |"
                    )
        lines.append("")
    return "\n".join(lines)


def _compressed_cell(runs: Sequence[dict]) -> str:
    """How many seeds compress (a peak fall beyond its errors), and how many are limited by N."""
    limited = sum(c["limited_by_n"] for c in runs)
    return (
        f"{sum(c['compressed'] for c in runs)} of {len(runs)}"
        + (" (no error bars)" if all(c["drop_error"] is None for c in runs) else "")
        + (f" ({limited} limited by N)" if limited else "")
    )


def _largest_fall_cell(runs: Sequence[dict]) -> str:
    """The largest fall (mean ± sd over seeds) and in how many seeds it exceeds ``LARGEST_FALL_ERRORS``."""
    falls = _fmt([c["largest_fall"] for c in runs])
    if any(c["largest_fall"] > 0 and c["fall_error"] is None for c in runs):
        return f"{falls} (no error bars)"
    beyond = sum(largest_fall_shown(c) for c in runs)
    return f"{falls} ({beyond} of {len(runs)} beyond {LARGEST_FALL_ERRORS:g} errors)"


def bracket_cell(verdicts: Sequence[dict[str, Any]]) -> str:
    """One cell for a group of runs: how many show a fall, a rise, or neither, and the bracket widths."""
    shown = [v for v in verdicts if v.get("bracket_verdict") is not None]
    if not shown:
        return "-"
    counts = {name: sum(v["bracket_verdict"] == name for v in shown) for name in BRACKET_VERDICTS}
    text = ", ".join(f"{name} {count}" for name, count in counts.items() if count)
    low, high = min(v["bracket_width_last"] for v in shown), max(v["bracket_width_last"] for v in shown)
    width = f"{low:.3g}" if f"{low:.3g}" == f"{high:.3g}" else f"{low:.3g}-{high:.3g}"
    return f"{text} of {len(shown)} (last width {width} nats)"
