"""How an information plane is drawn on matplotlib axes (headless-safe), in the paper's style: its series
and panels, their shared axes, a grid of planes with one colour bar and one legend. Which planes a run
folder or a comparison gets: :mod:`utils.analysis.run_figures`, :mod:`utils.analysis.comparison_figures`.


An information plane (Tishby & Zaslavsky 2015; Shwartz-Ziv & Tishby 2017) plots, per saved epoch,
x = I(X;Z) against y = I(Y;Z). As in Adilova, Geiger & Fischer (ICLR 2023) points are coloured by epoch
with one colour bar and joined in epoch order; the ceilings log N (for I(X;Z) with X uniform over N
inputs) and H(Y) (for I(Y;Z)) are dashed lines. Where an upper estimate of I(X;Z) is known, a whisker
runs from the point (the lower estimate) to it: the bracket. The axes span the trained epochs (epoch 0,
before training, sits near the origin and would squeeze them), on a log I(X;Z) axis where the upper
estimate exceeds the lower one by more than ``LOG_AXIS_RATIO``; a point outside is drawn at the edge as
a labelled diamond. Panels of the same estimator share that axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from mi_estimators.checks import InputError
from utils.analysis.entries import SATURATION_LIMIT
from utils.analysis.figure_layout import (
    COLUMN_WIDTH,
    PAGE_WIDTH,
    figure_legend,
    new_figure,
    styled,
    title_and_caption,
    unique_entries,
)

SATURATED_LABEL = f"hollow: limited by N (dI/dlog N > {SATURATION_LIMIT:g})"
BRACKET_LABEL = "whisker: lower (point) to upper (|) estimate of I(X;Z)"
OFF_AXES_LABEL = "diamond: epoch outside the axes, at its edge"
LOG_N_LABEL = "log N (N: analysed inputs)"
H_Y_LABEL = "H(Y)"
LOG_AXIS_RATIO = 2.0
"""The I(X;Z) axis turns logarithmic where the trained epochs' upper estimates exceed their smallest lower
estimate (or log N) this many times."""
LOG_N_COLOR, H_Y_COLOR = "tab:red", "0.2"


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
    color: Any = None
    mi_xz_upper: Sequence[float | None] | None = None
    """The upper estimate of I(X;Z) per epoch: drawn as a whisker from the point to it (the bracket)."""


@dataclass
class Panel:
    """One information plane: a title, its series and the ceilings to draw.

    ``own_scale``: the I(X;Z) axis fits this panel's data alone (e.g. a loose upper bound far beyond log N).
    Panels with the same ``x_key`` (the I(X;Z) estimator) share their I(X;Z) axis, those with the same
    ``y_key`` their I(Y;Z) axis."""

    title: str
    series: list[PlaneSeries] = field(default_factory=list)
    log_n: float | None = None
    h_y: float | None = None
    own_scale: bool = False
    x_key: str = "I(X;Z)"
    y_key: str = "I(Y;Z)"


@dataclass(frozen=True)
class AxisRange:
    """The limits and scale of one axis."""

    low: float
    high: float
    log: bool = False

    def clip(self, values: np.ndarray) -> np.ndarray:
        return np.clip(values, self.low, self.high)

    def inside(self, values: np.ndarray) -> np.ndarray:
        return (values >= self.low) & (values <= self.high)


def _trained(s: PlaneSeries) -> np.ndarray:
    """Which points set the axes: the trained epochs (all, where no epoch is after 0)."""
    epochs = np.asarray(s.epochs)
    return epochs > 0 if (epochs > 0).any() else np.ones(len(epochs), bool)


def _floats(values: Sequence[float | None] | None, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    return np.asarray([np.nan if v is None else v for v in values], float)


def x_range(panels: Sequence[Panel]) -> AxisRange:
    """The I(X;Z) axis of panels that share it: their trained epochs' lower and upper estimates and log N."""
    lows, highs = [], []
    for panel in panels:
        for s in panel.series:
            keep = _trained(s)
            lows += list(_floats(s.mi_xz, len(keep))[keep])
            highs += list(_floats(s.mi_xz_upper, len(keep))[keep])
        if panel.log_n is not None and not panel.own_scale:
            lows.append(panel.log_n)
    lo_values = [v for v in lows if math.isfinite(v)]
    hi_values = lo_values + [v for v in highs if math.isfinite(v)]
    if not lo_values:
        return AxisRange(0.0, 1.0)
    low, high = min(lo_values), max(hi_values)
    if low > 0 and len(hi_values) > len(lo_values) and high > LOG_AXIS_RATIO * low:
        return AxisRange(low / 1.12, high * 1.12, log=True)
    span = max(high - low, 0.02 * max(abs(high), 1.0))
    return AxisRange(low - 0.06 * span, high + 0.06 * span)


def y_range(panels: Sequence[Panel]) -> AxisRange:
    """The I(Y;Z) axis of panels that share it: their trained epochs and H(Y)."""
    values = [v for p in panels for s in p.series for v in _floats(s.mi_zy, len(s.epochs))[_trained(s)]]
    values += [p.h_y for p in panels if p.h_y is not None]
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return AxisRange(0.0, 1.0)
    low, high = min(values), max(values)
    span = max(high - low, 0.02 * max(abs(high), 1.0))
    return AxisRange(low - 0.08 * span, high + 0.08 * span)


def shared_ranges(panels: Sequence[Panel]) -> tuple[list[AxisRange], list[AxisRange]]:
    """Each panel's I(X;Z) and I(Y;Z) axes: shared by the panels of one ``x_key`` (``y_key``), the I(X;Z)
    axis of an ``own_scale`` panel its own."""
    xs: dict[str, list[Panel]] = {}
    ys: dict[str, list[Panel]] = {}
    for panel in panels:
        if not panel.own_scale:
            xs.setdefault(panel.x_key, []).append(panel)
        ys.setdefault(panel.y_key, []).append(panel)
    x_found = {key: x_range(members) for key, members in xs.items()}
    y_found = {key: y_range(members) for key, members in ys.items()}
    return [x_range([p]) if p.own_scale else x_found[p.x_key] for p in panels], [y_found[p.y_key] for p in panels]


def epoch_norm(panels: Sequence[Panel]) -> Normalize | None:
    epochs = [e for p in panels for s in p.series for e in s.epochs]
    return Normalize(vmin=min(epochs), vmax=max(max(epochs), min(epochs) + 1)) if epochs else None


def plot_information_plane(
    ax: Axes,
    panel: Panel,
    *,
    cmap: str = "viridis",
    norm: Normalize | None = None,
    x_axis: AxisRange | None = None,
    y_axis: AxisRange | None = None,
    legend: bool = True,
) -> ScalarMappable | None:
    """Draw ``panel`` on ``ax`` and return the epoch colour mapping (None for one-colour series).

    Points coloured by epoch (hollow where limited by N), joined in epoch order, error bars, the bracket's
    whiskers, the log N and H(Y) lines. Axes default to this panel's trained epochs (:func:`x_range`,
    :func:`y_range`); ``legend`` puts the panel's legend under it (figures draw one legend instead)."""
    norm = norm or epoch_norm([panel]) or Normalize(0, 1)
    x_axis = x_axis or x_range([panel])
    y_axis = y_axis or y_range([panel])
    mappable = None
    for s in panel.series:
        if len(s.epochs):
            mappable = _draw_series(ax, s, plt.get_cmap(cmap), norm, x_axis, y_axis) or mappable
    if panel.log_n is not None and (not panel.own_scale or x_axis.inside(np.array([panel.log_n]))[0]):
        ax.axvline(panel.log_n, ls="--", color=LOG_N_COLOR, lw=0.8, label=LOG_N_LABEL, zorder=0)
    if panel.h_y is not None:
        ax.axhline(panel.h_y, ls="--", color=H_Y_COLOR, lw=0.8, label=H_Y_LABEL, zorder=0)
    _set_axes(ax, x_axis, y_axis)
    ax.set_title(panel.title)
    ax.set_xlabel("I(X;Z) [nats]")
    if legend:
        handles, labels = plane_legend_entries([panel], [x_axis], [y_axis], [ax])
        if handles:
            ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False, ncol=1)
        ax.set_ylabel("I(Y;Z) [nats]")
    return mappable


def _set_axes(ax: Axes, x_axis: AxisRange, y_axis: AxisRange) -> None:
    if x_axis.log:
        ax.set_xscale("log")
        figure = ax.get_figure(root=True)
        inches = ax.get_position().width * (figure.get_figwidth() if figure else PAGE_WIDTH)  # room for ticks
        log_ticks(ax.xaxis, x_axis.low, x_axis.high, nbins=max(3, min(6, int(2.2 * inches))))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(3))
        ax.ticklabel_format(axis="x", useOffset=False)  # 10.98, not 0.01 + 1.097e1
    ax.yaxis.set_major_locator(MaxNLocator(4))
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlim(x_axis.low, x_axis.high)
    ax.set_ylim(y_axis.low, y_axis.high)
    ax.grid(alpha=0.3)


def log_ticks(axis: Any, low: float, high: float, nbins: int = 4) -> None:
    """Plain-number ticks on a log axis from ``low`` to ``high``: evenly spaced round numbers within a decade
    (where a log axis has few powers of ten to label), 1-2-5 or 1-3 per decade on wider spans."""
    decades = math.log10(max(high / low, 1.0))
    if decades < 1.0:
        axis.set_major_locator(FixedLocator(MaxNLocator(nbins, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high)))
    else:
        axis.set_major_locator(
            LogLocator(subs=(1.0, 2.0, 5.0) if decades < 1.5 else (1.0, 3.0) if decades < 2.5 else (1.0,))
        )
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _draw_series(
    ax: Axes, s: PlaneSeries, cmap: Any, norm: Normalize, x_axis: AxisRange, y_axis: AxisRange
) -> ScalarMappable | None:
    x, y = _floats(s.mi_xz, len(s.epochs)), _floats(s.mi_zy, len(s.epochs))
    epochs = np.asarray(s.epochs)
    rgba = [s.color] * len(x) if s.color is not None else list(cmap(norm(epochs)))
    inside = x_axis.inside(x) & y_axis.inside(y)
    xc, yc = x_axis.clip(x), y_axis.clip(y)
    if len(x) > 1:  # epochs joined in order; dotted towards a point drawn at the edge
        segments = np.stack([np.column_stack([xc[:-1], yc[:-1]]), np.column_stack([xc[1:], yc[1:]])], axis=1)
        styles = ["-" if a and b else ":" for a, b in zip(inside[:-1], inside[1:])]
        ax.add_collection(LineCollection(list(segments), colors=s.color or "0.55", linestyles=styles, lw=0.7, zorder=1))
    if s.label:
        ax.plot([], [], "-o", color=s.color or "0.55", ms=3, lw=0.8, label=s.label)
    upper = _floats(s.mi_xz_upper, len(x))
    whisker = inside & np.isfinite(upper)
    if whisker.any():
        u = x_axis.clip(upper[whisker])
        ax.add_collection(
            LineCollection(
                [[(a, b), (c, b)] for a, b, c in zip(x[whisker], y[whisker], u)],
                colors=[rgba[i] for i in np.flatnonzero(whisker)],
                lw=0.8,
                alpha=0.8,
                zorder=2,
            )
        )
        ax.scatter(u, y[whisker], marker="|", c=[rgba[i] for i in np.flatnonzero(whisker)], s=22, lw=0.8, zorder=2)
    xerr, yerr = _floats(s.mi_xz_err, len(x)), _floats(s.mi_zy_err, len(x))
    if inside.any() and (np.isfinite(xerr).any() or np.isfinite(yerr).any()):
        ax.errorbar(
            x[inside],
            y[inside],
            xerr=np.nan_to_num(xerr[inside]),
            yerr=np.nan_to_num(yerr[inside]),
            fmt="none",
            ecolor=s.color or "0.35",
            elinewidth=0.6,
            capsize=1.2,
            zorder=2,
        )
    hollow = np.zeros(len(x), bool) if s.saturated is None else np.asarray(s.saturated, bool)
    mappable = None
    filled = inside & ~hollow
    if filled.any():
        if s.color is None:
            mappable = ax.scatter(
                x[filled], y[filled], c=epochs[filled], cmap=cmap, norm=norm, s=20, edgecolors="k", lw=0.4, zorder=3
            )
        else:
            ax.scatter(x[filled], y[filled], color=s.color, s=20, edgecolors="k", lw=0.4, zorder=3)
    empty = inside & hollow
    if empty.any():
        edges = [rgba[i] for i in np.flatnonzero(empty)]
        ax.scatter(x[empty], y[empty], facecolors="none", edgecolors=edges, s=20, lw=0.9, zorder=3)
    off = ~inside & np.isfinite(x) & np.isfinite(y)
    _draw_off_axes(ax, x, y, xc, yc, epochs, off, rgba, x_axis, y_axis, labelled=s.color is None)
    return mappable


def _draw_off_axes(
    ax: Axes,
    x: np.ndarray,
    y: np.ndarray,
    xc: np.ndarray,
    yc: np.ndarray,
    epochs: np.ndarray,
    off: np.ndarray,
    rgba: list,
    x_axis: AxisRange,
    y_axis: AxisRange,
    labelled: bool,
) -> None:
    """Points outside the axes (epoch 0, before training) as diamonds at the edge, labelled with their epoch
    (not in overlays, whose groups would print the same label over each other)."""
    for i in np.flatnonzero(off):
        ax.scatter(
            [xc[i]],
            [yc[i]],
            marker="D",
            s=18,
            facecolors="white",
            edgecolors=[rgba[i]],
            lw=1.0,
            zorder=4,
            clip_on=False,
        )
        if not labelled:
            continue
        dx = 4 if x[i] < x_axis.low else -4 if x[i] > x_axis.high else 4
        dy = 4 if y[i] < y_axis.low else -4 if y[i] > y_axis.high else 4
        ax.annotate(
            f"epoch {epochs[i]}",
            (xc[i], yc[i]),
            xytext=(dx, dy),
            textcoords="offset points",
            ha="left" if dx > 0 else "right",
            va="bottom" if dy > 0 else "top",
            fontsize=6,
            zorder=4,
        )


def plane_legend_entries(
    panels: Sequence[Panel], x_axes: Sequence[AxisRange], y_axes: Sequence[AxisRange], axes: Sequence[Axes]
) -> tuple[list[Artist], list[str]]:
    """The legend entries of information planes: series labels, the ceilings, and what the marks mean."""
    handles, labels = unique_entries(axes)
    series = [s for p in panels for s in p.series]
    if any(np.isfinite(_floats(s.mi_xz_upper, len(s.epochs))).any() for s in series):
        handles.append(Line2D([], [], color="0.3", marker="|", markersize=6, lw=0.8))
        labels.append(BRACKET_LABEL)
    if any(s.saturated is not None and any(s.saturated) for s in series):
        handles.append(Line2D([], [], ls="none", marker="o", mfc="none", mec="k", markersize=4))
        labels.append(SATURATED_LABEL)
    off = False
    for panel, x_axis, y_axis in zip(panels, x_axes, y_axes):
        for s in panel.series:
            x, y = _floats(s.mi_xz, len(s.epochs)), _floats(s.mi_zy, len(s.epochs))
            finite = np.isfinite(x) & np.isfinite(y)
            off |= bool((finite & ~(x_axis.inside(x) & y_axis.inside(y))).any())
    if off:
        handles.append(Line2D([], [], ls="none", marker="D", mfc="white", mec="k", markersize=4))
        labels.append(OFF_AXES_LABEL)
    return handles, labels


def grid_shape(n: int) -> tuple[int, int]:
    """(rows, columns) for ``n`` panels on a page: 1-3 in a row, 4 as 2 x 2, 5-6 in 3 columns, more in 4."""
    ncols = n if n <= 3 else 2 if n == 4 else 3 if n <= 6 else 4
    return -(-n // ncols), ncols


@styled
def plot_plane_grid(
    panels: list[Panel],
    *,
    ncols: int | None = None,
    cmap: str = "viridis",
    suptitle: str | None = None,
    caption: str | None = None,
) -> Figure:
    """Panels on a grid (a journal column for one panel, the page width for more) sharing one epoch colour
    bar with integer ticks, their axes (:func:`shared_ranges`) and one legend."""
    panels = [p for p in panels if any(len(s.epochs) for s in p.series)]
    if not panels:
        raise InputError("no information-plane panels with data to draw")
    nrows, ncols = grid_shape(len(panels)) if ncols is None else (-(-len(panels) // ncols), min(ncols, len(panels)))
    width = COLUMN_WIDTH if ncols == 1 else PAGE_WIDTH
    row = min(2.4, max(1.55, 0.8 * (width - 0.9) / ncols))
    fig = new_figure(width, nrows * row + 1.0 + 0.12 * len(panels[0].title.split("\n")))
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    norm = epoch_norm(panels)
    x_axes, y_axes = shared_ranges(panels)
    mappable = None
    for ax, panel, x_axis, y_axis in zip(axes, panels, x_axes, y_axes):
        mappable = (
            plot_information_plane(ax, panel, cmap=cmap, norm=norm, x_axis=x_axis, y_axis=y_axis, legend=False)
            or mappable
        )
    drawn = axes[: len(panels)]
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.supylabel("I(Y;Z) [nats]", fontsize=8)
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=drawn, label="epoch", aspect=30, pad=0.01, fraction=0.04)
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    title_and_caption(fig, suptitle, caption)
    figure_legend(fig, *plane_legend_entries(panels, x_axes, y_axes, drawn))
    return fig
