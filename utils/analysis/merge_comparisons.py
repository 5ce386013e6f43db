"""Merge the ``estimates.csv`` of several comparisons into one comparison (runs estimated in different
sessions or on different machines):

    python -m utils.analysis.merge_comparisons CSV [CSV ...] --out DIR [--no-plots] [--formats png,pdf]

The merged comparison has the same files as one of the estimation command
(:func:`utils.analysis.comparison.write_comparison`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from mi_estimators.checks import InputError
from utils.analysis.comparison import check_comparison_out, write_from_rows
from utils.analysis.estimate_table import ROW_KEY, check_estimate_row, read_csv
from utils.analysis.figure_layout import formats_arg
from utils.analysis.run_groups import families_by_name, row_defining
from utils.cli import OneLineParser, run_command


def merge_comparisons(
    tables: Sequence[Path], out: Path, *, plots: bool = True, formats: Sequence[str] = ("png",)
) -> list[Path]:
    """One comparison from the ``estimates.csv`` of several: the same files as
    :func:`utils.analysis.comparison.write_comparison`. A row given twice with different values (the same
    run, layer, split, epoch and estimator) is an InputError naming both tables; groups keep their names,
    and families are found from the configuration columns."""
    if not tables:
        raise InputError("no estimates.csv given to merge")
    check_comparison_out(out, plots=plots)
    rows: dict[tuple, dict] = {}
    source: dict[tuple, Path] = {}
    for table in tables:
        for line, row in enumerate(read_csv(table), start=2):
            check_estimate_row(table, line, row)
            key = tuple(row[c] for c in ROW_KEY)
            if key in rows and rows[key] != row:
                raise InputError(
                    f"{table} and {source[key]} disagree on run {key[0]}, {key[1]}/{key[2]} epoch "
                    f"{key[3]}, {key[4]}: merge tables of different runs (rename a run folder)"
                )
            rows[key], source[key] = row, Path(table)
    merged = list(rows.values())
    defining = {r["group"]: row_defining(r) for r in merged}
    return write_from_rows(merged, families_by_name(defining), out, plots=plots, formats=formats)


def _parser() -> OneLineParser:
    parser = OneLineParser(
        prog="python -m utils.analysis.merge_comparisons",
        description="Merge the estimates.csv of several comparisons into one comparison "
        "(runs estimated in different sessions or on different machines).",
    )
    parser.add_argument("tables", nargs="+", type=Path, metavar="CSV", help="estimates.csv files of comparisons")
    parser.add_argument("--out", type=Path, required=True, help="folder for the merged comparison")
    parser.add_argument("--no-plots", action="store_true", help="tables only, no figures")
    parser.add_argument(
        "--formats", type=formats_arg, default=("png",), help="figure formats, comma-separated from png,pdf,svg"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0; 2 with one ``error:`` line for bad input)."""

    def body() -> None:
        args = _parser().parse_args(argv)
        for path in merge_comparisons(args.tables, args.out, plots=not args.no_plots, formats=args.formats):
            print(f"comparison: {path}", flush=True)

    return run_command("merge_comparisons", body)


if __name__ == "__main__":
    sys.exit(main())
