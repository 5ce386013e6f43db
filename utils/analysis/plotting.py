"""Information-plane and training-curve figures (matplotlib, headless-safe).

An information plane (Tishby & Zaslavsky 2015; Shwartz-Ziv & Tishby 2017) plots, per saved epoch,
x = I(X;Z) against y = I(Y;Z). As in Adilova, Geiger & Fischer (ICLR 2023) points are coloured by
epoch with a colour bar, and the ceilings log N (for I(X;Z) with X uniform over N inputs) and H(Y)
(for I(Y;Z)) are drawn as dashed lines.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from mi_estimators.checks import InputError
from utils.analysis.entries import SATURATION_LIMIT
from utils.run_folder import atomic_write

SATURATED_LABEL = f"hollow: limited by N (dI/dlog N > {SATURATION_LIMIT})"
BRACKET_LABEL = "whisker: lower (point) to upper (|) estimate of I(X;Z)"
BRACKET_CAPTION = (
    "bracket: in expectation the population I(X;Z) lies between the lower (mixture) and the upper "
    "(leave-one-out) estimate"
)
BRACKET_COLOR = "tab:red"
LOG_AXIS_RATIO = 4.0
"""The I(X;Z) axis turns logarithmic where an upper estimate exceeds the largest lower one this many times."""


@dataclass
class PlaneSeries:
    """One curve in an information plane: values per epoch, optional error bars and saturation flags.

    ``color`` draws the series in one colour (overlays of several runs) instead of by epoch."""

    epochs: Sequence[int]
    mi_xz: Sequence[float]
    mi_zy: Sequence[float]
    mi_xz_err: Sequence[float | None] | None = None
    mi_zy_err: Sequence[float | None] | None = None
    saturated: Sequence[bool] | None = None
    label: str | None = None
    color: str | None = None
    mi_xz_upper: Sequence[float | None] | None = None
    """The upper estimate of I(X;Z) per epoch: drawn as a whisker from the point to it (the bracket)."""


@dataclass
class Panel:
    """One information plane: a title, its series and the ceilings to draw.

    ``own_scale``: the x axis fits the data (e.g. a loose upper bound far beyond log N), log N is stated
    in the legend instead of drawn."""

    title: str
    series: list[PlaneSeries] = field(default_factory=list)
    log_n: float | None = None
    h_y: float | None = None
    own_scale: bool = False


def plot_information_plane(
    ax: plt.Axes, panel: Panel, *, cmap: str = "viridis", norm: Normalize | None = None
) -> matplotlib.cm.ScalarMappable | None:
    """Draw ``panel`` on ``ax``: epoch-coloured points (hollow where saturated), error bars, a thin line
    through the epochs, the log N and H(Y) ceilings; the legend goes below the axes, never on the data."""
    all_epochs = [e for s in panel.series for e in s.epochs]
    if norm is None and all_epochs:
        norm = Normalize(vmin=min(all_epochs), vmax=max(max(all_epochs), min(all_epochs) + 1))
    mappable = None
    any_saturated = False
    for s in panel.series:
        if len(s.epochs):
            mappable = _draw_series(ax, s, cmap, norm) or mappable
            any_saturated |= bool(s.saturated is not None and any(s.saturated))
    uppers = [u for s in panel.series for u in (s.mi_xz_upper or ()) if u is not None]
    lowers = [x for s in panel.series for x in s.mi_xz if x is not None and x > 0]
    log_axis = bool(uppers and lowers and max(uppers) > LOG_AXIS_RATIO * max(lowers + [panel.log_n or 0.0]))
    handles, labels = ax.get_legend_handles_labels()
    if uppers:
        handles.append(Line2D([], [], color=BRACKET_COLOR, lw=1, marker="|"))
        labels.append(BRACKET_LABEL)
    if panel.log_n is not None:
        if panel.own_scale:
            handles.append(Line2D([], [], ls="none"))
            labels.append(f"log N = {panel.log_n:.2f} (off this scale)")
        else:
            handles.append(ax.axvline(panel.log_n, ls="--", color="tab:red", lw=1))
            labels.append(f"log N = {panel.log_n:.2f}")
    if panel.h_y is not None:
        handles.append(ax.axhline(panel.h_y, ls="--", color="tab:blue", lw=1))
        labels.append(f"H(Y) = {panel.h_y:.2f}")
    if any_saturated:
        handles.append(Line2D([], [], ls="none", marker="o", mfc="none", mec="k"))
        labels.append(SATURATED_LABEL)
    if log_axis:
        ax.set_xscale("log")
        ax.set_xlim(left=0.5 * min(lowers))
    elif not panel.own_scale:
        ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("I(X;Z) [nats]")
    ax.set_ylabel("I(Y;Z) [nats]")
    ax.set_title(panel.title, fontsize=9)
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    return mappable


def _draw_series(ax: plt.Axes, s: PlaneSeries, cmap: str, norm: Normalize | None):
    x, y = np.asarray(s.mi_xz, float), np.asarray(s.mi_zy, float)
    line_color = s.color or "0.6"
    if len(x) > 1:
        ax.plot(x, y, "-", color=line_color, lw=0.8, zorder=1, label=s.label if s.color else None)
    if s.mi_xz_upper is not None:
        upper = np.asarray([np.nan if u is None else u for u in s.mi_xz_upper], float)
        ax.hlines(y, x, upper, color=s.color or BRACKET_COLOR, lw=0.8, alpha=0.6, zorder=1)
        ax.scatter(upper, y, marker="|", color=s.color or BRACKET_COLOR, s=30, zorder=2)
    if s.mi_xz_err is not None or s.mi_zy_err is not None:
        ax.errorbar(
            x,
            y,
            xerr=_err(s.mi_xz_err),
            yerr=_err(s.mi_zy_err),
            fmt="none",
            ecolor=s.color or "0.4",
            elinewidth=0.8,
            capsize=1.5,
            zorder=2,
        )
    hollow = np.zeros(len(x), bool) if s.saturated is None else np.asarray(s.saturated, bool)
    epochs = np.asarray(s.epochs)
    style = dict(s=28, linewidths=0.6, zorder=3)
    mappable = None
    if (~hollow).any():
        fill = dict(color=s.color) if s.color else dict(c=epochs[~hollow], cmap=cmap, norm=norm)
        mappable = ax.scatter(x[~hollow], y[~hollow], edgecolors="k", **fill, **style)
    if hollow.any():
        edge = s.color if s.color else plt.get_cmap(cmap)(norm(epochs[hollow]))
        ax.scatter(x[hollow], y[hollow], facecolors="none", edgecolors=edge, **style)
    return None if s.color else mappable


def _err(values: Sequence[float | None] | None) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.asarray([np.nan if v is None else v for v in values], float)
    return None if np.all(np.isnan(arr)) else np.nan_to_num(arr)


def plot_plane_grid(
    panels: list[Panel],
    *,
    ncols: int = 2,
    cmap: str = "viridis",
    suptitle: str | None = None,
    caption: str | None = None,
) -> plt.Figure:
    """Panels side by side (e.g. estimators x splits) sharing one epoch colour bar with integer ticks."""
    if not panels:
        raise InputError("no information-plane panels to draw")
    ncols = max(1, min(ncols, len(panels)))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.4 * ncols + 0.8, 4.3 * nrows), squeeze=False, constrained_layout=True
    )
    epochs = [e for p in panels for s in p.series for e in s.epochs]
    norm = Normalize(vmin=min(epochs), vmax=max(max(epochs), min(epochs) + 1)) if epochs else None
    mappable = None
    for ax, panel in zip(axes.flat, panels):
        mappable = plot_information_plane(ax, panel, cmap=cmap, norm=norm) or mappable
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=axes, label="epoch", shrink=min(0.9, 1.8 / nrows), aspect=30)
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    if suptitle:
        fig.suptitle(suptitle + (f"\n{caption}" if caption else ""), fontsize=10)
    return fig


def read_history(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a Keras ``CSVLogger`` file as float arrays (missing file -> ``FileNotFoundError``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training history not found: {path}")
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise InputError(f"training history is empty: {path}")
    return {k: np.array([float(r[k]) if r.get(k) not in (None, "") else np.nan for r in rows]) for k in rows[0]}


def plot_training_curves(history: dict[str, np.ndarray], title: str | None = None) -> plt.Figure:
    """Loss and accuracy per epoch, train and test, from ``history.csv`` columns (``epoch`` = completed
    epochs, ``loss``, ``accuracy``, ``test_loss``, ``test_accuracy``)."""
    epoch = history["epoch"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        for prefix, label in (("", "train"), ("test_", "test")):
            if prefix + key in history:
                ax.plot(epoch, history[prefix + key], label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def save_figure(
    fig: plt.Figure, path_stem: str | Path, formats: Sequence[str] = ("png",), **savefig_kwargs: Any
) -> list[Path]:
    """Save ``fig`` as ``<path_stem>.<fmt>`` for each format (atomically) and close it.

    ``savefig_kwargs`` go to ``Figure.savefig`` (default ``dpi=150``)."""
    stem = Path(path_stem)
    options = {"dpi": 150, **savefig_kwargs}
    written = []
    for fmt in formats:
        if fmt not in ("png", "pdf", "svg"):
            raise InputError(f"unknown figure format {fmt!r}; use png, pdf or svg")
        target = stem.with_name(f"{stem.name}.{fmt}")
        atomic_write(target, lambda fh: fig.savefig(fh, format=fmt, **options), "wb")
        written.append(target)
    plt.close(fig)
    return written
