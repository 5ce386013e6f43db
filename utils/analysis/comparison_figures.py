"""Which figures a comparison of runs gets, in ``<comparison>/figures/``: per group the seed-aggregated
information planes and I(X;Z), I(Y;Z) against the epoch (a compression phase, a fall of I(X;Z) after
its peak as Adilova, Geiger & Fischer, ICLR 2023 look for it, is plain there and hidden by the plane's
axes); per family of groups that differ in one flag, their planes and curves overlaid.

Drawn from the rows of the comparison's ``aggregate.csv`` (:mod:`utils.analysis.seed_aggregate`), with
the planes of each dropout kind of a run's figures (:data:`utils.analysis.run_figures.PLANES`). File
names say what they hold: ``plane_<group>_<layer>``, ``epochs_<group>_<layer>`` and
``overlay_<flag>_<what the groups share>_<what tells them apart>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mi_estimators.checks import InputError
from utils import run_folder
from utils.analysis.entries import SATURATION_LIMIT
from utils.analysis.figure_layout import (
    COLUMN_WIDTH,
    PAGE_WIDTH,
    figure_legend,
    new_figure,
    save_figure,
    styled,
    title_and_caption,
    unique_entries,
)
from utils.analysis.plane_drawing import (
    H_Y_COLOR,
    LOG_AXIS_RATIO,
    LOG_N_COLOR,
    Panel,
    PlaneSeries,
    log_ticks,
    plot_plane_grid,
    shared_ranges,
)
from utils.analysis.run_figures import OWN_SCALE, PLANES, panel_title

MAX_STEM = 120
"""Longest figure file name (without its extension): the file system's limit is 255 bytes."""


def _spread(row: dict, q: str) -> float | None:
    """The error bar of an aggregate: the standard deviation between seeds, or the one seed's total error."""
    sd = row.get(f"mi_{q}_seed_sd")
    return sd if sd is not None else row.get(f"mi_{q}_seed_error")


def _aggregate_series(
    rows: list[dict], x_name: str, y_name: str, color: Any = None, label: str | None = None
) -> PlaneSeries | None:
    xs = {r["epoch"]: r for r in rows if r["estimator"] == x_name and r.get("mi_xz_mean") is not None}
    ys = {r["epoch"]: r for r in rows if r["estimator"] == y_name and r.get("mi_zy_mean") is not None}
    epochs = sorted(set(xs) & set(ys))
    if not epochs:
        return None
    uppers = [xs[e].get("mi_xz_upper_mean") for e in epochs]
    return PlaneSeries(
        epochs,
        [xs[e]["mi_xz_mean"] for e in epochs],
        [ys[e]["mi_zy_mean"] for e in epochs],
        [_spread(xs[e], "xz") for e in epochs],
        [_spread(ys[e], "zy") for e in epochs],
        saturated=[(xs[e].get("saturation_mean") or 0.0) > SATURATION_LIMIT for e in epochs],
        label=label,
        color=color,
        mi_xz_upper=uppers if any(u is not None for u in uppers) else None,
    )


def error_caption(rows: Sequence[dict], what: str = "error bars") -> str:
    """What the error bars of seed aggregates are, in a few words."""
    seeds = sorted({r.get("n_seeds") or 1 for r in rows})
    if seeds[-1] == 1:
        return f"one seed; {what}: Monte Carlo and input-sampling error"
    if seeds[0] > 1:
        return f"{what}: \u00b11 s.d. between {'-'.join(map(str, sorted({seeds[0], seeds[-1]})))} seeds"
    return f"{what}: \u00b11 s.d. between 1-{seeds[-1]} seeds (1 seed: its error)"


def _group_panels(rows: list[dict]) -> list[Panel]:
    first = rows[0]
    panels = []
    for x_name, y_name, title in PLANES[first["dropout"]]:
        for split in run_folder.SPLITS:
            cell = [r for r in rows if r["split"] == split]
            series = _aggregate_series(cell, x_name, y_name)
            if series is None:
                continue
            log_n = next((r["log_n"] for r in cell if r.get("log_n") is not None), None)
            panels.append(
                Panel(
                    panel_title(title, split, log_n, first.get("beta")),
                    [series],
                    log_n=log_n,
                    h_y=first.get("h_y"),
                    own_scale=x_name in OWN_SCALE,
                    x_key=x_name,
                    y_key=y_name,
                )
            )
    return panels


TRAJECTORY_ESTIMATORS = {
    "mixture": "mixture: lower estimate",
    "binning": "binning of noisy Z",
    "binning_f": "binning of f(x)",
    "callback": "KL term",
}
COLORS = dict(zip(TRAJECTORY_ESTIMATORS, ("tab:blue", "tab:orange", "tab:green", "tab:purple")))
CE_LABEL = "H(Y) - cross-entropy"
GROUP_COLORS = [f"C{i}" for i in range(10)]
"""One colour per group of an overlay (matplotlib's default cycle)."""


@styled
def plot_trajectories(rows: list[dict], title: str) -> Figure:
    """I(X;Z) and I(Y;Z) against the trained epochs (epoch 0, before training, would set the scale), one
    line per estimator with a band of +-1 standard deviation between seeds (the total error with one
    seed), the bracket of the mixture estimate shaded up to its upper estimate: a compression phase is a
    fall of I(X;Z) after its peak, which the plane's axes hide. The KL term of information dropout is on
    its own axis (many times log N). One column per split with data."""
    rows = [r for r in rows if r["epoch"] > 0]
    splits = [s for s in run_folder.SPLITS if any(r["split"] == s and r.get("mi_xz_mean") is not None for r in rows)]
    if not splits:
        raise InputError(f"no trained epochs to draw for {title!r}")
    kl = any(r["estimator"] == "callback" and r.get("mi_xz_mean") is not None for r in rows)
    quantities = [("xz", "I(X;Z) [nats]"), ("zy", "I(Y;Z) [nats]")] + ([("kl", "KL term [nats]")] if kl else [])
    fig = new_figure(PAGE_WIDTH if len(splits) > 1 else COLUMN_WIDTH + 0.5, 1.75 * len(quantities) + 1.1)
    axes = fig.subplots(len(quantities), len(splits), squeeze=False, sharex=True)
    for col, split in enumerate(splits):
        cell = [r for r in rows if r["split"] == split]
        log_n = next((r["log_n"] for r in cell if r.get("log_n") is not None), None)
        for row_i, (q, ylabel) in enumerate(quantities):
            ax = axes[row_i][col]
            names = ["callback"] if q == "kl" else [n for n in TRAJECTORY_ESTIMATORS if n != "callback" or q == "zy"]
            for name in names:
                key = "xz" if q == "kl" else q
                band = [
                    (r["epoch"], r[f"mi_{key}_mean"], _spread(r, key) or 0.0)
                    for r in cell
                    if r["estimator"] == name and r.get(f"mi_{key}_mean") is not None
                ]
                label = CE_LABEL if name == "callback" and q == "zy" else TRAJECTORY_ESTIMATORS[name]
                _band(ax, band, COLORS[name], label)
                if name == "mixture" and q == "xz":
                    _bracket(ax, [r for r in cell if r["estimator"] == name], band, COLORS[name])
            ref = log_n if q == "xz" else next((r["h_y"] for r in cell if r.get("h_y") is not None), None)
            if ref is not None and q != "kl":
                ax.axhline(ref, color=LOG_N_COLOR if q == "xz" else H_Y_COLOR, ls="--", lw=0.8, label=_ref_label(q))
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if ax.get_yscale() == "linear":
                ax.yaxis.set_major_locator(MaxNLocator(4))
        n = f", N = {round(np.exp(log_n)):,}" if log_n is not None else ""
        axes[0][col].set_title(f"{split}{n}")
        axes[-1][col].set_xlabel("epoch")
    caption = error_caption(rows, "bands")
    if any(r.get("mi_xz_upper_mean") is not None for r in rows):
        caption += "; pale: lower to upper I(X;Z)"
    title_and_caption(fig, title, caption)
    figure_legend(fig, *unique_entries(list(axes.flat)))
    return fig


def _ref_label(q: str) -> str:
    return "log N (N: analysed inputs)" if q == "xz" else "H(Y)"


def draw_comparison_figures(
    aggregates: list[dict],
    families: Sequence[tuple[str, list[str]]],
    folder: Path,
    *,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Per group the seed-aggregated planes (``plane_<group>_<layer>``) and I(X;Z), I(Y;Z) against the epoch
    (``epochs_<group>_<layer>``); per family of groups that differ in one flag, the mixture planes and
    I(X;Z) against the epoch overlaid (``overlay_<flag>_...``, :func:`overlay_stem`)."""
    written = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in aggregates:
        groups.setdefault((row["group"], row["layer"]), []).append(row)
    for (group, layer), rows in groups.items():
        panels = _group_panels(rows)
        if panels:
            caption = f"{error_caption(rows)}{_per_seed_error(rows)}; {_axis_note(panels)}"
            fig = plot_plane_grid(panels, suptitle=f"{group} (layer {layer})", caption=caption)
            written += save_figure(fig, folder / f"plane_{_slug(group)}_{layer}", formats)
        if any(r["epoch"] > 0 and r.get("mi_xz_mean") is not None for r in rows):
            fig = plot_trajectories(rows, f"{group} (layer {layer})")
            written += save_figure(fig, folder / f"epochs_{_slug(group)}_{layer}", formats)
    present = sorted({group for group, _ in groups})
    for flag, names in families:
        # a group estimated with several N is aggregated per N: "<name> N=<n>" (seed_aggregate.aggregate_rows)
        found = [g for name in names for g in present if g == name or g.startswith(f"{name} N=")]
        written += _overlay(groups, flag, found, folder, formats)
    return written


def _per_seed_error(rows: Sequence[dict]) -> str:
    """``; mean per-seed error of the mixture I(X;Z): ...`` where several seeds are averaged."""
    errors = [r["mi_xz_seed_error"] for r in rows if r["estimator"] == "mixture" and r.get("mi_xz_seed_error")]
    several = any((r.get("n_seeds") or 1) > 1 for r in rows)
    return f"; mean per-seed error of the mixture I(X;Z): {np.mean(errors):.2g}" if errors and several else ""


def _axis_note(panels: Sequence[Panel]) -> str:
    """What the caption says about the axes: the trained epochs set them, the bracket on a log axis."""
    brackets = any(s.mi_xz_upper is not None for p in panels for s in p.series)
    logs = any(axis.log for axis in shared_ranges(panels)[0])
    whiskers = "whiskers: lower to upper I(X;Z)" + (" on a log axis" if logs else "") + "; " if brackets else ""
    return f"{whiskers}axes span the trained epochs"


def overlay_stem(flag: str, names: Sequence[str]) -> str:
    """``overlay_<flag>_<tokens all groups share>_<each group's other tokens>``: the groups'
    names (``fc gaussian p=0.2 N=60000``) say what to look for; past ``MAX_STEM`` characters, the first
    and the last group and their number."""
    tokens = [name.split() for name in names]
    common = [t for t in tokens[0] if all(t in other for other in tokens)]
    rest = [_slug("-".join(t for t in other if t not in common)) or "all" for other in tokens]
    base = f"overlay_{flag}_{_slug('-'.join(common))}" if common else f"overlay_{flag}"
    stem = f"{base}_{'_'.join(rest)}"
    if len(stem) > MAX_STEM:
        stem = f"{base}_{rest[0][:40]}_to_{rest[-1][:40]}_{len(names)}-groups"
    return stem


def _overlay(groups: dict, flag: str, names: list[str], folder: Path, formats: Sequence[str]) -> list[Path]:
    panels = []
    caption_rows = []
    for split in run_folder.SPLITS:
        series = []
        log_n = None
        for i, name in enumerate(names):
            rows = [r for (g, _), rs in groups.items() if g == name for r in rs if r["split"] == split]
            found = _aggregate_series(rows, "mixture", "mixture", color=GROUP_COLORS[i % len(GROUP_COLORS)], label=name)
            if found is not None:
                series.append(found)
                caption_rows += rows
                log_n = log_n or next((r["log_n"] for r in rows if r.get("log_n") is not None), None)
        if series:
            panels.append(Panel(f"mixture estimate\n{split}", series, h_y=_h_y(caption_rows), x_key="mixture"))
    if not panels:
        return []
    stem = overlay_stem(flag, names)
    fig = plot_plane_grid(
        panels,
        suptitle=f"groups differing in {flag}",
        caption=error_caption(caption_rows) + "; " + _axis_note(panels),
    )
    written = save_figure(fig, folder / stem, formats)
    fig = _overlay_epochs(
        groups, names, f"mixture I(X;Z) of groups differing in {flag}", error_caption(caption_rows, "bands")
    )
    return written + save_figure(fig, folder / f"{stem}_epochs", formats)


def _h_y(rows: Sequence[dict]) -> float | None:
    return next((r["h_y"] for r in rows if r.get("h_y") is not None), None)


@styled
def _overlay_epochs(groups: dict, names: list[str], title: str, caption: str) -> Figure:
    """The mixture I(X;Z) of several groups against the trained epochs, one panel per split with data, and
    log N of each number of inputs N among them."""
    cells = {
        split: [
            (
                i,
                name,
                [
                    r
                    for (g, _), rs in groups.items()
                    if g == name
                    for r in rs
                    if r["split"] == split
                    and r["estimator"] == "mixture"
                    and r["epoch"] > 0
                    and r.get("mi_xz_mean") is not None
                ],
            )
            for i, name in enumerate(names)
        ]
        for split in run_folder.SPLITS
    }
    splits = [s for s in run_folder.SPLITS if any(found for _, _, found in cells[s])]
    fig = new_figure(PAGE_WIDTH if len(splits) > 1 else COLUMN_WIDTH + 0.5, 3.0)
    axes = fig.subplots(1, len(splits), squeeze=False)[0]
    for ax, split in zip(axes, splits):
        sizes = set()
        for i, name, found in cells[split]:
            _band(
                ax,
                [(r["epoch"], r["mi_xz_mean"], _spread(r, "xz") or 0.0) for r in found],
                GROUP_COLORS[i % len(GROUP_COLORS)],
                name,
            )
            sizes |= {r["log_n"] for r in found if r.get("log_n") is not None}
        for log_n in sorted(sizes):
            ax.axhline(log_n, color=LOG_N_COLOR, ls="--", lw=0.8, label=_ref_label("xz"))
            ax.annotate(
                f"N = {round(np.exp(log_n)):,}",
                (1.0, log_n),
                xycoords=("axes fraction", "data"),
                xytext=(-2, 2),
                textcoords="offset points",
                ha="right",
                va="bottom",
                fontsize=6,
                color=LOG_N_COLOR,
            )
        ax.set(title=split, xlabel="epoch", ylabel="I(X;Z) [nats]")
        ax.grid(alpha=0.3)
    title_and_caption(fig, title, caption)
    figure_legend(fig, *unique_entries(list(axes)))
    return fig


def _band(ax: Axes, band: list[tuple[float, float, float]], color: Any, label: str) -> None:
    """One mean line over the epochs with a band of +-1 spread, from (epoch, mean, spread) triples."""
    if not band:
        return
    e, m, sd = (np.array(v, dtype=float) for v in zip(*sorted(band)))
    ax.plot(e, m, "-o", ms=2, lw=0.9, color=color, label=label)
    ax.fill_between(e, m - sd, m + sd, color=color, alpha=0.25, lw=0)


def _bracket(ax: Axes, rows: list[dict], lower: list[tuple[float, float, float]], color: Any) -> None:
    """The upper estimate of I(X;Z) as a dashed line, the bracket lower..upper shaded; a log axis where the
    upper estimate is far above the lower one."""
    upper = sorted((r["epoch"], r["mi_xz_upper_mean"]) for r in rows if r.get("mi_xz_upper_mean") is not None)
    if not upper or not lower:
        return
    e, u = (np.array(v, dtype=float) for v in zip(*upper))
    low = dict((p[0], p[1]) for p in lower)
    ax.plot(e, u, "--", lw=0.9, color=color, label="mixture: upper estimate")
    ax.fill_between(e, [low.get(x, np.nan) for x in e], u, color=color, alpha=0.08, lw=0)
    if u.max() > LOG_AXIS_RATIO * min(p[1] for p in lower):
        ax.set_yscale("log")
        log_ticks(ax.yaxis, 0.95 * min(p[1] for p in lower), 1.05 * u.max())


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text).strip("-")
