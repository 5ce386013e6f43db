"""Page geometry shared by every figure: journal sizes, one font style, one legend per figure inside the
canvas, a one-line caption, atomic saving in raster and vector formats, and a check of the rendered layout.

Figures are drawn at their printed size (a journal column is 3.5 in wide, a page 7 in) with 7-9 pt text,
so that they go into a paper without rescaling their fonts; matplotlib's constrained layout keeps titles,
colour bars and the figure legend (``loc="outside ..."``) inside the canvas.
"""

from __future__ import annotations

import argparse
import functools
import textwrap
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import matplotlib.pyplot as plt
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from mi_estimators.checks import InputError
from utils.run_folder import atomic_write

COLUMN_WIDTH = 3.5
"""Inches: one column of a two-column journal page."""
PAGE_WIDTH = 7.0
"""Inches: the text width of a page."""
FORMATS = ("png", "pdf", "svg")
STYLE: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 8,
    "axes.linewidth": 0.6,
    "lines.linewidth": 1.0,
    "grid.linewidth": 0.4,
    "axes.formatter.useoffset": False,  # ticks read 10.98, not 0.01 with +1.097e1 at the axis end
}
VECTOR_TEXT: dict[str, Any] = {"pdf.fonttype": 42, "svg.fonttype": "none"}
"""Saved text stays text: TrueType fonts embedded in a PDF (journals ask for them), SVG text as text."""
CHARS_PER_INCH = 16.5
"""About how many 8 pt characters fit in an inch: captions longer than the figure is wide are wrapped."""
LEGEND_CHARS_PER_INCH = 18.5
"""The same for the 7 pt legend text."""
MIN_AXES_FRACTION = 0.12
"""No data axes may be narrower than this fraction of its figure (a squeezed panel)."""

F = TypeVar("F", bound=Callable[..., Figure])


def styled(draw: F) -> F:
    """Run a figure function under :data:`STYLE` (fonts are fixed when an artist is made)."""

    @functools.wraps(draw)
    def wrapper(*args: Any, **kwargs: Any) -> Figure:
        with plt.rc_context(STYLE):  # type: ignore[arg-type]
            return draw(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def new_figure(width: float, height: float) -> Figure:
    """A figure of the printed size with constrained layout (small pads: the page supplies the margins)."""
    fig = plt.figure(figsize=(width, height), layout="constrained")
    fig.get_layout_engine().set(w_pad=0.03, h_pad=0.03, wspace=0.04, hspace=0.06)  # type: ignore[call-arg, union-attr]
    return fig


def title_and_caption(fig: Figure, title: str | None, caption: str | None) -> None:
    """The title and, on the line(s) under it, the caption (wrapped to the figure's width)."""
    width = max(20, int(fig.get_figwidth() * CHARS_PER_INCH))
    lines = [] if not title else textwrap.wrap(title, width)
    lines += [] if not caption else textwrap.wrap(caption, width)
    if lines:
        fig.suptitle("\n".join(lines))


def figure_legend(
    fig: Figure, handles: Sequence[Artist], labels: Sequence[str], ncol: int | None = None
) -> Legend | None:
    """One legend for the whole figure, under its panels and inside the canvas (none without entries)."""
    if not handles:
        return None
    width = fig.get_figwidth()
    longest = max(len(label) for label in labels)
    fits = max(1, int(width * LEGEND_CHARS_PER_INCH // (longest + 6)))
    return fig.legend(handles, labels, loc="outside lower center", ncol=ncol or min(len(labels), fits), frameon=False)


def unique_entries(axes: Sequence[Axes]) -> tuple[list[Artist], list[str]]:
    """The legend entries of several axes, each label once (first handle wins)."""
    found: dict[str, Artist] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            found.setdefault(label, handle)
    return list(found.values()), list(found)


def formats_arg(text: str) -> tuple[str, ...]:
    """argparse ``type=`` of ``--formats``: comma-separated figure formats from :data:`FORMATS`."""
    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise argparse.ArgumentTypeError(f"unknown figure format(s) {bad or text!r}; use {', '.join(FORMATS)}")
    return formats


def save_figure(
    fig: Figure, path_stem: str | Path, formats: Sequence[str] = ("png",), **savefig_kwargs: Any
) -> list[Path]:
    """Save ``fig`` as ``<path_stem>.<fmt>`` for each format (atomically) and close it.

    ``savefig_kwargs`` go to ``Figure.savefig`` (default ``dpi=200``; the figure keeps its printed size)."""
    stem = Path(path_stem)
    options = {"dpi": 200, **savefig_kwargs}
    written = []
    for fmt in formats:
        if fmt not in FORMATS:
            raise InputError(f"unknown figure format {fmt!r}; use png, pdf or svg")
        target = stem.with_name(f"{stem.name}.{fmt}")
        with plt.rc_context(VECTOR_TEXT):  # type: ignore[arg-type]
            atomic_write(target, lambda fh: fig.savefig(fh, format=fmt, **options), "wb")
        written.append(target)
    plt.close(fig)
    return written


def is_colorbar(ax: Axes) -> bool:
    return hasattr(ax, "_colorbar")


def layout_problems(fig: Figure, min_axes_fraction: float = MIN_AXES_FRACTION) -> list[str]:
    """What a reader would see wrong in the rendered ``fig``: text, a legend or a colour bar beyond the
    canvas; two legends, or a legend and a colour bar, over each other; a legend over a panel's data area;
    tick labels over each other, or two panel titles or axis labels; a visible panel without data or
    narrower than ``min_axes_fraction`` of the figure. Empty when clean."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    canvas = fig.bbox.padded(1.0)
    problems = []
    axes = [ax for ax in fig.axes if ax.get_visible()]
    bars = [ax for ax in axes if is_colorbar(ax)]
    panels = [ax for ax in axes if not is_colorbar(ax)]
    legends = list(fig.legends) + [legend for ax in panels if (legend := ax.get_legend()) is not None]
    ticks = {id(t) for ax in axes for axis in (ax.xaxis, ax.yaxis) for t in axis.get_ticklabels(which="both")}
    texts = [
        t
        for t in fig.findobj(match=Text)
        if isinstance(t, Text) and t.get_visible() and t.get_text() and id(t) not in ticks
    ]
    for ax in axes:  # tick labels as drawn (matplotlib keeps some outside the view, undrawn)
        box = ax.get_tightbbox(renderer)
        if box is not None and not _inside(box, canvas):
            problems.append(f"the panel {ax.get_title()!r} or its tick labels extend beyond the canvas")
    for text in texts:
        if not _inside(text.get_window_extent(renderer), canvas):
            problems.append(f"text {text.get_text()!r} extends beyond the canvas")
    for what, box in [("legend", leg.get_window_extent(renderer)) for leg in legends] + [
        ("colour bar", bar.get_tightbbox(renderer)) for bar in bars
    ]:
        if box is not None and not _inside(box, canvas):
            problems.append(f"a {what} extends beyond the canvas")
    boxes = [("legend", leg.get_window_extent(renderer)) for leg in legends] + [
        ("colour bar", bar.get_window_extent(renderer)) for bar in bars
    ]
    for i, (what_a, a) in enumerate(boxes):
        for what_b, b in boxes[i + 1 :]:
            if a.overlaps(b):
                problems.append(f"a {what_a} and a {what_b} overlap")
    for leg in legends:
        for ax in panels:
            if leg.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)):
                problems.append(f"a legend covers the panel {ax.get_title()!r}")
    for ax in panels:
        for axis in (ax.xaxis, ax.yaxis):
            if _overlapping([label.get_window_extent(renderer) for label in _drawn_tick_labels(axis)]):
                problems.append(f"tick labels overlap in the panel {ax.get_title()!r}")
    heads = [t for ax in panels for t in (ax.title, ax.xaxis.label, ax.yaxis.label) if t.get_visible() and t.get_text()]
    if _overlapping([t.get_window_extent(renderer) for t in heads]):
        problems.append("two panel titles or axis labels overlap")
    for ax in panels:
        if not (ax.lines or ax.collections or ax.patches or ax.images):
            problems.append(f"the panel {ax.get_title()!r} is empty")
        if ax.get_position().width < min_axes_fraction:
            problems.append(f"the panel {ax.get_title()!r} is squeezed ({ax.get_position().width:.2f} of the width)")
    return problems


def _drawn_tick_labels(axis: Any) -> list[Text]:
    """The major tick labels matplotlib draws: those of ticks within the view (it keeps a few outside)."""
    low, high = sorted(axis.get_view_interval())
    span = 1e-9 * max(abs(low), abs(high), 1.0)
    return [
        label
        for loc, label in zip(axis.get_majorticklocs(), axis.get_ticklabels())
        if low - span <= loc <= high + span and label.get_visible() and label.get_text()
    ]


def _overlapping(boxes: Sequence[Bbox]) -> bool:
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def _inside(box: Bbox, canvas: Bbox) -> bool:
    return box.x0 >= canvas.x0 and box.y0 >= canvas.y0 and box.x1 <= canvas.x1 and box.y1 <= canvas.y1
