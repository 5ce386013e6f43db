"""Write the comparison of runs: four tables and the seed-aggregated figures in one folder.

``estimates.csv``, the long table of every estimate (:mod:`utils.analysis.estimate_table`);
``aggregate.csv``, the aggregates over the seeds of each group (:mod:`utils.analysis.seed_aggregate`;
groups: :mod:`utils.analysis.run_groups`); ``compression.csv``, per run whether I(X;Z) falls by more
than its errors (:mod:`utils.analysis.verdicts`); ``summary.md`` (:mod:`utils.analysis.markdown_summary`);
and ``figures/`` (:func:`utils.analysis.comparison_figures.draw_comparison_figures`). The estimation command writes a
comparison of the runs it estimates; ``python -m utils.analysis.merge_comparisons`` writes one from the
``estimates.csv`` of others.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from mi_estimators.checks import InputError
from utils import run_folder
from utils.analysis.comparison_figures import draw_comparison_figures
from utils.analysis.estimate_table import CONFIG_COLUMNS, ESTIMATE_COLUMNS, csv_text, estimate_rows
from utils.analysis.markdown_summary import summary_markdown
from utils.analysis.run_groups import check_distinct_runs, families, run_info
from utils.analysis.seed_aggregate import AGGREGATE_COLUMNS, aggregate_rows
from utils.analysis.verdicts import COMPRESSION_COLUMNS, compression_rows

TABLES = ("estimates.csv", "aggregate.csv", "compression.csv", "summary.md")
FIGURES_DIR = "figures"


def check_comparison_out(out: Path, *, plots: bool) -> None:
    """InputError unless a comparison can be written to ``out``: a folder (or one that can be made: its
    nearest existing ancestor is a writable folder) whose tables, and (``plots``) ``figures/`` with every
    file in it, are no links, folders or special files. Nothing is created."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is not a folder: a comparison writes {len(TABLES)} tables and figures into one")
    if not out.exists():
        ancestor = out.absolute().parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if ancestor.is_symlink() or not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
            raise InputError(f"--out {out} cannot be made: {ancestor} is not a writable folder")
        return
    for name in TABLES:
        run_folder.check_write_target(out / name, root=out)
    figures = out / FIGURES_DIR
    if plots and (figures.is_symlink() or (figures.exists() and not figures.is_dir())):
        raise InputError(f"{figures} is a link or a file, not a folder of figures: refusing to draw into it")
    for child in figures.iterdir() if plots and figures.is_dir() else ():
        run_folder.check_write_target(child, root=out)


def write_comparison(
    run_dirs: Sequence[Path], out: Path, *, plots: bool = True, formats: Sequence[str] = ("png",)
) -> list[Path]:
    """Write ``out/estimates.csv``, ``out/aggregate.csv``, ``out/compression.csv``, ``out/summary.md`` and
    (``plots``) the seed-aggregated planes; every run and the folder ``out`` are read and checked first."""
    check_comparison_out(out, plots=plots)
    check_distinct_runs(run_dirs)
    runs = [run_info(Path(r)) for r in run_dirs]
    return write_from_rows(estimate_rows(runs), families(runs), out, plots=plots, formats=formats)


def write_from_rows(
    rows: list[dict[str, Any]],
    family_list: list[tuple[str, list[str]]],
    out: Path,
    *,
    plots: bool,
    formats: Sequence[str],
) -> list[Path]:
    """The files of :func:`write_comparison` from the rows of its ``estimates.csv`` and its families of
    groups (:func:`utils.analysis.run_groups.families`); ``out`` checked already."""
    aggregates = aggregate_rows(rows)
    written = [out / name for name in TABLES]
    run_folder.save_text(written[0], csv_text(rows, CONFIG_COLUMNS + ESTIMATE_COLUMNS))
    run_folder.save_text(written[1], csv_text(aggregates, AGGREGATE_COLUMNS))
    compression = compression_rows(rows)
    run_folder.save_text(written[2], csv_text(compression, COMPRESSION_COLUMNS))
    run_folder.save_text(written[3], summary_markdown(rows, compression))
    if plots:
        written += draw_comparison_figures(aggregates, family_list, out / FIGURES_DIR, formats=formats)
    return written
