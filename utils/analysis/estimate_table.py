"""The long table of a comparison, ``estimates.csv``: its columns, its rows from run folders, and CSV.

One row per (run, layer, split, epoch, estimator) with the run's configuration (dataset, net, dropout,
p or beta, seed, epochs) and every field of the estimate (both errors of each coordinate, saturation,
N, log N, H(Y)); for the mixture also the upper (leave-one-out) estimate ``mi_xz_upper`` with both
errors, and both estimates on the nested N/4 and N/16 subsets behind the saturation (``mi_xz_quarter``,
``mi_xz_sixteenth``, ``mi_xz_upper_quarter``, ...). :func:`read_csv` reads this table and the others of
a comparison back; :func:`check_estimate_row` checks a row read from another comparison before a merge.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

from mi_estimators.checks import InputError
from utils import run_folder, run_folder_schema
from utils.analysis.run_groups import RunInfo, group_names
from utils.run_folder_schema import Entry, iter_entries

CONFIG_COLUMNS = ("run", "group", "dataset", "net", "dropout", "p", "beta", "seed", "epochs")
ESTIMATE_COLUMNS = (
    "layer",
    "split",
    "epoch",
    "estimator",
    "sees",
    "mi_xz",
    "mi_xz_stderr",
    "mi_xz_sampling_stderr",
    "mi_xz_upper",
    "mi_xz_upper_stderr",
    "mi_xz_upper_sampling_stderr",
    "mi_zy",
    "mi_zy_stderr",
    "mi_zy_sampling_stderr",
    "saturation",
    "mi_xz_quarter",
    "mi_xz_sixteenth",
    "mi_xz_upper_quarter",
    "mi_xz_upper_sixteenth",
    "n_inputs",
    "log_n",
    "h_y",
    "draws",
    "skipped",
)
_SUBSET_COLUMNS = {
    "mi_xz_quarter": ("mi_xz", -2),
    "mi_xz_sixteenth": ("mi_xz", -3),
    "mi_xz_upper_quarter": ("mi_xz_upper", -2),
    "mi_xz_upper_sixteenth": ("mi_xz_upper", -3),
}
"""Columns taken from the nested N/4 and N/16 subsets behind the saturation (entry ``convergence``)."""
ROW_KEY = ("run", "layer", "split", "epoch", "estimator")
"""The columns that tell the rows of ``estimates.csv`` apart."""


def estimate_rows(runs: Sequence[RunInfo]) -> list[dict[str, Any]]:
    """The long table: one row per run, layer, split, epoch and estimator."""
    names = group_names(runs)
    rows = []
    for run in runs:
        described = run.describe(names[run.defining])
        for (name, layer, split, epoch), entry in iter_entries(run_folder.load_estimates(run.path)["estimates"]):
            row = {"layer": layer, "split": split, "epoch": epoch, "estimator": name, **_estimate_fields(entry)}
            rows.append({**described, **row})
    return rows


def _estimate_fields(entry: Entry) -> dict[str, Any]:
    derived = (*_SUBSET_COLUMNS, "draws", "skipped")
    fields = {k: entry.get(k) for k in ESTIMATE_COLUMNS[4:] if k not in derived}
    subsets = sorted(entry.get("convergence") or [], key=lambda subset: subset["n"])
    for column, (key, index) in _SUBSET_COLUMNS.items():
        fields[column] = subsets[index].get(key) if len(subsets) >= 3 else None
    fields["draws"] = entry.get("settings", {}).get("draws")
    fields["skipped"] = entry.get("skipped")
    return fields


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as CSV with the header ``columns`` (None as an empty cell, other keys left out)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})
    return buffer.getvalue()


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of ``estimates.csv`` or ``aggregate.csv`` with numbers parsed (empty cells become None)."""

    def parse(value: str) -> Any:
        if value == "":
            return None
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number

    with run_folder.open_regular(path, run_folder_schema.MAX_JSON_BYTES) as fh:
        raw = fh.read()
    try:
        rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"), newline="")))
    except (csv.Error, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not a CSV table ({err})") from None
    if any(None in row or None in row.values() for row in rows):
        raise InputError(f"{path} is not a CSV table: a row has another number of cells than the header")
    return [{k: parse(v) for k, v in row.items()} for row in rows]


_NUMERIC = {c for c in ESTIMATE_COLUMNS if c.startswith(("mi_", "saturation", "log_n", "h_y"))} | {"p", "beta"}
_COUNTS = ("epoch", "n_inputs", "draws", "seed", "epochs")


def check_estimate_row(table: Path, line: int, row: dict[str, Any]) -> None:
    """A row of a comparison's ``estimates.csv``: the key columns present, counts non-negative integers,
    estimates finite numbers or empty, the split one of ``train``, ``test``; InputError naming the cell."""
    missing = [c for c in ROW_KEY + ("group",) if c not in row]
    if missing:
        raise InputError(f"{table} is not an estimates.csv of a comparison (no column {missing[0]!r})")
    where = f"{table}, line {line}"
    if row["split"] not in run_folder.SPLITS:
        raise InputError(f"{where}: split must be train or test, got {row['split']!r}")
    for column in _COUNTS:
        value = row.get(column)
        if column == "epoch" or value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputError(f"{where}: {column} must be an integer >= 0, got {value!r}")
    for column in _NUMERIC:
        value = row.get(column)
        if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value)):
            raise InputError(f"{where}: {column} must be a finite number or empty, got {value!r}")
