"""Whether a fall of I(X;Z) is identified, for a few runs side by side: each run's information plane with
the bracket (top row; the planes share their axes) and its I(X;Z) bracket against the epoch (bottom row).

The bracket: the lower (mixture) and upper (leave-one-out) estimates of the population I(X;Z), each a
bound in expectation (Poole et al., ICML 2019). A fall from epoch a to b is shown where the upper estimate
at b lies below the lower one at a by more than its errors (:mod:`utils.analysis.verdicts`); the bottom
row draws the first trained epoch's lower estimate as a dotted line to make that visible. Drawn from the
rows of a comparison's ``estimates.csv`` (one run, one split, the mixture estimator), so that the
figures of a study can be redrawn without its run folders. The README's figure:

    python -m utils.analysis.bracket_figure \\
        --case docs/reproduction_mnist/estimates.csv mnist-fc-gaussian-p0.2-seed0 train \\
            "σ = 0.5 (the paper's p = 0.2): not identified" \\
        --case docs/reproduction_mnist/all_inputs/estimates.csv fc-p0.5-seed1 train \\
            "σ = 1 (p = 0.5): a fall is shown" \\
        --title "MNIST fc, all 60,000 training inputs: does I(X;Z) fall?" \\
        --out docs/figures/information_plane_mnist --formats png,pdf
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mi_estimators.checks import InputError
from utils.analysis.entries import SATURATION_LIMIT, total_error
from utils.analysis.estimate_table import read_csv
from utils.analysis.figure_layout import (
    PAGE_WIDTH,
    figure_legend,
    new_figure,
    save_figure,
    styled,
    title_and_caption,
    unique_entries,
)
from utils.analysis.plane_drawing import (
    LOG_N_COLOR,
    Panel,
    PlaneSeries,
    epoch_norm,
    plane_legend_entries,
    plot_information_plane,
    shared_ranges,
)
from utils.cli import OneLineParser, run_command

FIRST_LABEL = "lower estimate at the first trained epoch"
CAPTION = (
    "one seed each; error bars: Monte Carlo and input-sampling errors; whisker, shade: lower to upper I(X;Z); "
    "log x axis"
)


def run_rows(rows: Sequence[dict], run: str, split: str) -> list[dict]:
    """The mixture rows of one run and split, in epoch order (InputError naming what is missing)."""
    found = sorted(
        (r for r in rows if r["run"] == run and r["split"] == split and r["estimator"] == "mixture"),
        key=lambda r: r["epoch"],
    )
    if not found:
        runs = sorted({r["run"] for r in rows})
        raise InputError(f"no mixture rows for run {run!r}, {split} split; the table has runs {runs}")
    return found


def _panel(label: str, rows: Sequence[dict]) -> Panel:
    uppers = [r.get("mi_xz_upper") for r in rows]
    series = PlaneSeries(
        [r["epoch"] for r in rows],
        [r["mi_xz"] for r in rows],
        [r["mi_zy"] for r in rows],
        [total_error(r, "xz") for r in rows],
        [total_error(r, "zy") for r in rows],
        saturated=[(r.get("saturation") or 0.0) > SATURATION_LIMIT for r in rows],
        mi_xz_upper=uppers if any(u is not None for u in uppers) else None,
    )
    n = rows[0].get("n_inputs")
    title = f"{label}\n{rows[0]['split']}, N = {n:,}" if n else label
    return Panel(title, [series], log_n=rows[0].get("log_n"), h_y=rows[0].get("h_y"), x_key="mixture")


@styled
def plot_bracket_comparison(cases: Sequence[tuple[str, Sequence[dict]]], title: str | None = None) -> Figure:
    """Top row: the information plane of each case (label, mixture rows of one run and split); bottom row:
    its lower and upper I(X;Z) against the trained epochs, each on its own axis."""
    if not cases:
        raise InputError("no runs to draw")
    panels = [_panel(label, rows) for label, rows in cases]
    fig = new_figure(PAGE_WIDTH, 5.4)
    axes = fig.subplots(2, len(cases), squeeze=False, height_ratios=(1.15, 1.0))
    norm = epoch_norm(panels)
    x_axes, y_axes = shared_ranges(panels)
    mappable = None
    for col, (panel, (_, rows)) in enumerate(zip(panels, cases)):
        mappable = (
            plot_information_plane(axes[0][col], panel, norm=norm, x_axis=x_axes[col], y_axis=y_axes[col], legend=False)
            or mappable
        )
        _bracket_epochs(axes[1][col], [r for r in rows if r["epoch"] > 0])
    axes[0][0].set_ylabel("I(Y;Z) [nats]")
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=list(axes[0]), label="epoch", aspect=20, pad=0.01)
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    title_and_caption(fig, title, CAPTION)
    handles, labels = plane_legend_entries(panels, x_axes, y_axes, list(axes[0]))
    more, more_labels = unique_entries(list(axes[1]))
    figure_legend(fig, handles + more, labels + more_labels, ncol=2)
    return fig


def _bracket_epochs(ax: Axes, rows: Sequence[dict]) -> None:
    """Lower and upper I(X;Z) against the epoch with their errors, the bracket shaded, and the first trained
    epoch's lower estimate as a dotted line: a later upper estimate below it (beyond the errors) is a fall."""
    e = np.array([r["epoch"] for r in rows], float)
    low = np.array([r["mi_xz"] for r in rows], float)
    up = np.array([np.nan if r.get("mi_xz_upper") is None else r["mi_xz_upper"] for r in rows], float)
    low_err = np.array([total_error(r, "xz") or 0.0 for r in rows])
    up_err = np.array([total_error(r, "xz_upper") or 0.0 for r in rows])
    ax.fill_between(e, low, up, color="tab:blue", alpha=0.12, lw=0)
    ax.errorbar(e, low, yerr=low_err, fmt="-o", ms=2.5, lw=0.9, color="tab:blue", label="lower estimate (mixture)")
    ax.errorbar(
        e, up, yerr=up_err, fmt="--s", ms=2.2, lw=0.9, color="tab:orange", label="upper estimate (leave-one-out)"
    )
    ax.axhline(low[0], color="0.2", ls=":", lw=0.9, label=FIRST_LABEL)
    if rows[0].get("log_n") is not None and rows[0]["log_n"] <= 1.05 * np.nanmax(up):
        ax.axhline(rows[0]["log_n"], color=LOG_N_COLOR, ls="--", lw=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("I(X;Z) [nats]")
    ax.yaxis.set_major_locator(MaxNLocator(5))
    ax.grid(alpha=0.3)


def _parser() -> OneLineParser:
    parser = OneLineParser(
        prog="python -m utils.analysis.bracket_figure",
        description="Draw the information plane and the I(X;Z) bracket of a few runs side by side, from the "
        "estimates.csv of comparisons.",
    )
    parser.add_argument(
        "--case",
        nargs=4,
        action="append",
        required=True,
        metavar=("CSV", "RUN", "SPLIT", "LABEL"),
        help="an estimates.csv, a run in it, the split and the panel's label (repeat for each panel)",
    )
    parser.add_argument("--title", default=None, help="the figure's title")
    parser.add_argument("--out", type=Path, required=True, help="the figure's path without extension")
    parser.add_argument("--formats", default="png", help="figure formats, comma-separated from png,pdf,svg")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0; 2 with one ``error:`` line for bad input)."""

    def body() -> None:
        args = _parser().parse_args(argv)
        tables: dict[str, list[dict]] = {}
        cases = []
        for csv_path, run, split, label in args.case:
            if csv_path not in tables:
                if not Path(csv_path).is_file():
                    raise InputError(f"--case: no such file {csv_path}")
                tables[csv_path] = read_csv(csv_path)
            cases.append((label, run_rows(tables[csv_path], run, split)))
        formats = [f for f in args.formats.split(",") if f]
        for path in save_figure(plot_bracket_comparison(cases, args.title), args.out, formats):
            print(f"figure: {path}", flush=True)

    return run_command("bracket_figure", body)


if __name__ == "__main__":
    sys.exit(main())
