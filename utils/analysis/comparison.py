"""Compare runs: one long table of every estimate, and aggregates over runs that differ only in their seed.

``estimates.csv`` has one row per (run, layer, split, epoch, estimator) with the run's configuration
(dataset, net, dropout, p or beta, seed, epochs) and every field of the estimate (both errors of each
coordinate, saturation, N, log N, H(Y)); for the mixture also the upper (leave-one-out) estimate
``mi_xz_upper`` with both errors, and both estimates on the nested N/4 and N/16 subsets behind the
saturation (``mi_xz_quarter``, ``mi_xz_sixteenth``, ``mi_xz_upper_quarter``, ...). Runs whose flags differ
only in ``seed`` (and in flags that do not change the experiment: where the data or the output live, distribution,
verbosity) form a group.
``aggregate.csv`` has per group, layer, split, epoch and estimator (and N, where the runs of a group were
estimated with different numbers of inputs: the group's name then ends in ``N=...``) the mean over seeds, the standard
deviation between seeds and the mean per-seed total error (Monte Carlo and input sampling in
quadrature) of I(X;Z), its upper estimate and I(Y;Z), and the mean and largest saturation.
``compression.csv`` says per run whether I(X;Z) falls after its peak by more than 3 errors, its largest
fall, and whether the bracket shows a fall or a rise of the population value (:func:`compression_rows`);
its group names, and the sections of ``summary.md``, are split by N the same way.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from mi_estimators.checks import InputError
from utils import run_folder as rf
from utils import run_folder_schema as schema
from utils.analysis.bracket import BRACKET_COLUMNS, bracket_verdict, summarise_verdicts
from utils.analysis.entries import SATURATION_LIMIT, total_error
from utils.analysis.figure_layout import formats_arg
from utils.analysis.figures import draw_comparison_figures
from utils.cli import OneLineParser, run_command
from utils.run_folder_schema import Entry, Flags, RunConfig

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
AGGREGATED = ("xz", "xz_upper", "zy")
AGGREGATE_COLUMNS = (
    "group",
    "dataset",
    "net",
    "dropout",
    "p",
    "beta",
    "epochs",
    "n_seeds",
    "layer",
    "split",
    "epoch",
    "estimator",
    *(f"mi_{q}_{stat}" for q in AGGREGATED for stat in ("mean", "seed_sd", "seed_error")),
    "saturation_mean",
    "saturation_max",
    "log_n",
    "h_y",
)


@dataclass(frozen=True)
class RunInfo:
    """A run folder's configuration as the comparison sees it."""

    path: Path
    config: RunConfig
    defining: tuple[tuple[str, Any], ...]

    @property
    def flags(self) -> Flags:
        return self.config.get("flags", {})

    def describe(self, group: str) -> dict[str, Any]:
        layer = self.config["layers"][0]
        return {
            "run": self.path.name,
            "group": group,
            "dataset": self.config.get("dataset", {}).get("name"),
            "net": self.flags.get("net", self.config.get("model", {}).get("name")),
            "dropout": layer["dropout"],
            "p": layer.get("p") if layer["dropout"] != "information" else None,
            "beta": layer.get("beta") if layer["dropout"] == "information" else None,
            "seed": self.flags.get("seed", self.config.get("seed")),
            "epochs": self.flags.get("epochs"),
        }


USER_RUN = "run of a user's model"
"""The defining key that marks a run made by the callback on a user's own model (no training flags)."""


def _user_defining(path: Path, config: RunConfig) -> tuple[tuple[str, Any], ...]:
    """What defines a run of a user's model: everything in ``config.json`` that is not the seed (the model's
    name and size, its noise layers, the inputs, the tags); its group is named by the ``name`` tag, else by
    the folder's name without a ``seed<k>`` ending."""
    model = config.get("model", {})
    tags = config.get("tags", {})
    dataset = {k: v for k, v in config.get("dataset", {}).items() if k != "n_metrics_train"}
    name = str(tags.get("name") or re.sub(r"[-_.]?seed[-_]?\d+$", "", path.name) or path.name)
    return (
        (USER_RUN, name),
        ("model", f"{model.get('name')} ({model.get('n_params')} parameters)"),
        ("layers", json.dumps(config["layers"], sort_keys=True)),
        ("dataset", json.dumps(dataset, sort_keys=True)),
        ("tags", json.dumps(tags, sort_keys=True)),
    )


def run_info(path: Path) -> RunInfo:
    config = rf.load_config(path)
    flags = config.get("flags", {})
    if not flags:
        return RunInfo(Path(path), config, _user_defining(Path(path), config))
    defining = tuple(
        sorted(
            (k, v)
            for k, v in flags.items()
            if k in rf.DEFINING_FLAGS
            and k != "seed"
            and not (k in ("p",) and config["layers"][0]["dropout"] == "information")
            and not (k in ("beta", "alpha_max") and config["layers"][0]["dropout"] != "information")
        )
    )
    return RunInfo(Path(path), config, defining)


def group_names(runs: Sequence[RunInfo]) -> dict[tuple, str]:
    """A short name per group: net, dropout and p or beta, plus any other flag whose value tells groups apart
    (a flag that only some dropout kinds have, such as ``alpha_max``, only where two groups have it)."""
    keys = list(dict.fromkeys(r.defining for r in runs))
    user = [key for key in keys if key and key[0][0] == USER_RUN]
    named = {key: key[0][1] for key in user}
    for key in user:  # two different user models with one name: each named apart by its place in the list
        if list(named.values()).count(named[key]) > 1:
            named[key] = f"{key[0][1]} ({user.index(key) + 1})"
    keys = [key for key in keys if key not in named]
    varying = {
        k for k in {k for key in keys for k, _ in key} if len({dict(key)[k] for key in keys if k in dict(key)}) > 1
    } - {"net", "dropout", "p", "beta"}
    names = {}
    for key in keys:
        d = dict(key)
        level = (
            f"beta={d['beta']:g}"
            if d.get("dropout") == "information" and "beta" in d
            else f"p={d['p']:g}"
            if d.get("p") is not None
            else ""
        )
        extra = " ".join(f"{k}={d[k]}" for k in sorted(varying) if k in d)
        names[key] = " ".join(x for x in (str(d.get("net")), str(d.get("dropout")), level, extra) if x)
    return {**names, **named}


def families(runs: Sequence[RunInfo]) -> list[tuple[str, list[str]]]:
    """Sets of groups whose defining flags differ in exactly one flag: (that flag, their names by its value)."""
    names = group_names(runs)
    return _families({names[r.defining]: r.defining for r in runs})


def _families(defining: dict[str, tuple[tuple[str, Any], ...]]) -> list[tuple[str, list[str]]]:
    """``families`` from each group's name and its defining (flag, value) pairs."""
    keys = list(dict.fromkeys(defining.values()))
    names = {key: name for name, key in defining.items()}
    found = []
    for flag in sorted({k for key in keys for k, _ in key}):
        rest: dict[tuple, list[tuple]] = {}
        for key in keys:
            rest.setdefault(tuple(kv for kv in key if kv[0] != flag), []).append(key)
        for members in rest.values():
            if len(members) > 1:
                members.sort(key=lambda key: str(dict(key).get(flag)))
                found.append((flag, [names[key] for key in members]))
    return found


def estimate_rows(runs: Sequence[RunInfo]) -> list[dict[str, Any]]:
    """The long table: one row per run, layer, split, epoch and estimator."""
    names = group_names(runs)
    rows = []
    for run in runs:
        described = run.describe(names[run.defining])
        for name, layers in rf.load_estimates(run.path)["estimates"].items():
            for layer, splits in layers.items():
                for split, by_epoch in splits.items():
                    for epoch, entry in sorted(by_epoch.items(), key=lambda kv: int(kv[0])):
                        rows.append(
                            {
                                **described,
                                "layer": layer,
                                "split": split,
                                "epoch": int(epoch),
                                "estimator": name,
                                **_estimate_fields(entry),
                            }
                        )
    return rows


def _estimate_fields(entry: Entry) -> dict[str, Any]:
    derived = (*_SUBSET_COLUMNS, "draws", "skipped")
    fields = {k: entry.get(k) for k in ESTIMATE_COLUMNS[4:] if k not in derived}
    subsets = sorted(entry.get("convergence") or [], key=lambda point: point["n"])
    for column, (key, index) in _SUBSET_COLUMNS.items():
        fields[column] = subsets[index].get(key) if len(subsets) >= 3 else None
    fields["draws"] = entry.get("settings", {}).get("draws")
    fields["skipped"] = entry.get("skipped")
    return fields


def _group_sizes(rows: Iterable[dict[str, Any]]) -> dict[str, list[int]]:
    """The numbers of inputs each group was estimated with (rows without N, the callback's, aside).

    Seeds are averaged and summarised at equal N only (the mixture estimate is capped at log N): a group
    whose runs were estimated with different numbers of inputs is reported once per N, named with it."""
    sizes: dict[str, set] = {}
    for row in rows:
        if row.get("n_inputs") is not None:
            sizes.setdefault(row["group"], set()).add(row["n_inputs"])
    return {group: sorted(found) for group, found in sizes.items()}


def _sized(group: str, n: int | None, sizes: dict[str, list[int]]) -> str:
    """The group's name, with `` N=<n>`` where the group has several N (:func:`_group_sizes`)."""
    return group if n is None or len(sizes.get(group, ())) < 2 else f"{group} N={n}"


def aggregate_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Seed aggregates: mean, standard deviation between seeds and mean per-seed total error."""
    rows = [row for row in rows if row.get("skipped") is None]
    # The callback's rows have no N (they do not depend on it) and join every N of their group.
    sizes = _group_sizes(rows)
    cells: dict[tuple, list[dict]] = {}
    for row in rows:
        found = sizes.get(row["group"], [])
        names = (
            [row["group"]]
            if len(found) < 2
            else [_sized(row["group"], n, sizes) for n in found if row.get("n_inputs") in (None, n)]
        )
        for group in names:
            cells.setdefault((group, row["layer"], row["split"], row["epoch"], row["estimator"]), []).append(row)
    out = []
    for (group, layer, split, epoch, name), members in cells.items():
        first = members[0]
        agg = {k: first.get(k) for k in ("dataset", "net", "dropout", "p", "beta", "epochs", "log_n", "h_y")}
        agg.update(group=group, layer=layer, split=split, epoch=epoch, estimator=name, n_seeds=len(members))
        for q in AGGREGATED:
            values = [m[f"mi_{q}"] for m in members if m.get(f"mi_{q}") is not None]
            errors = [e for e in (total_error(m, q) for m in members) if e is not None]
            agg[f"mi_{q}_mean"] = float(np.mean(values)) if values else None
            agg[f"mi_{q}_seed_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
            agg[f"mi_{q}_seed_error"] = float(np.mean(errors)) if errors else None
        saturation = [m["saturation"] for m in members if m.get("saturation") is not None]
        agg["saturation_mean"] = float(np.mean(saturation)) if saturation else None
        agg["saturation_max"] = float(np.max(saturation)) if saturation else None
        out.append(agg)
    return sorted(out, key=lambda r: (r["group"], r["layer"], r["estimator"], r["split"], r["epoch"]))


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
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

    with rf.open_regular(path, schema.MAX_JSON_BYTES) as fh:
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


def _check_row(table: Path, line: int, row: dict[str, Any]) -> None:
    """A row of a comparison's ``estimates.csv``: the key columns present, counts non-negative integers,
    estimates finite numbers or empty, the split one of ``train``, ``test``; InputError naming the cell."""
    missing = [c for c in MERGE_KEY + ("group",) if c not in row]
    if missing:
        raise InputError(f"{table} is not an estimates.csv of a comparison (no column {missing[0]!r})")
    where = f"{table}, line {line}"
    if row["split"] not in rf.SPLITS:
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
        rf.check_write_target(out / name, root=out)
    figures = out / FIGURES_DIR
    if plots and (figures.is_symlink() or (figures.exists() and not figures.is_dir())):
        raise InputError(f"{figures} is a link or a file, not a folder of figures: refusing to draw into it")
    for child in figures.iterdir() if plots and figures.is_dir() else ():
        rf.check_write_target(child, root=out)


def check_distinct_runs(run_dirs: Sequence[Path]) -> None:
    """InputError when two of the run folders hold one run (a copy, however made, or a re-run with the same
    flags: :func:`utils.run_folder.run_identity`): a run counted twice would be two seeds with no spread."""
    seen: dict[str, Path] = {}
    for run_dir in map(Path, run_dirs):
        key = rf.run_identity(run_dir)
        if key in seen:
            raise InputError(
                f"{run_dir} and {seen[key]} hold the same run (the same flags, seed, dataset and library "
                "versions in config.json: a copy or a re-run): each run counts once, so name only one of them"
            )
        seen[key] = run_dir


def write_comparison(
    run_dirs: Sequence[Path], out: Path, *, plots: bool = True, formats: Sequence[str] = ("png",)
) -> list[Path]:
    """Write ``out/estimates.csv``, ``out/aggregate.csv``, ``out/compression.csv``, ``out/summary.md`` and
    (``plots``) the seed-aggregated planes; every run and the folder ``out`` are read and checked first."""
    check_comparison_out(out, plots=plots)
    check_distinct_runs(run_dirs)
    runs = [run_info(Path(r)) for r in run_dirs]
    return _write(estimate_rows(runs), families(runs), out, plots=plots, formats=formats)


MERGE_KEY = ("run", "layer", "split", "epoch", "estimator")
_FAMILY_COLUMNS = ("dataset", "net", "dropout", "p", "beta", "epochs")


def merge_comparisons(
    tables: Sequence[Path], out: Path, *, plots: bool = True, formats: Sequence[str] = ("png",)
) -> list[Path]:
    """One comparison from the ``estimates.csv`` of several (runs estimated in different sessions or on
    different machines): the same files as :func:`write_comparison`. A row given twice with different
    values (the same run, layer, split, epoch and estimator) is an InputError naming both tables; groups
    keep their names, and families are found from the configuration columns."""
    if not tables:
        raise InputError("no estimates.csv given to merge")
    check_comparison_out(out, plots=plots)
    rows: dict[tuple, dict] = {}
    source: dict[tuple, Path] = {}
    for table in tables:
        for line, row in enumerate(read_csv(table), start=2):
            _check_row(table, line, row)
            key = tuple(row[c] for c in MERGE_KEY)
            if key in rows and rows[key] != row:
                raise InputError(
                    f"{table} and {source[key]} disagree on run {key[0]}, {key[1]}/{key[2]} epoch "
                    f"{key[3]}, {key[4]}: merge tables of different runs (rename a run folder)"
                )
            rows[key], source[key] = row, Path(table)
    merged = list(rows.values())
    defining = {r["group"]: _merged_defining(r) for r in merged}
    return _write(merged, _families(defining), out, plots=plots, formats=formats)


def _merged_defining(row: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A merged row's defining flags: the configuration columns, plus the flags that :func:`group_names`
    put into its group's name (``lr=0.05``; the table has no column for them), so that groups differing
    only there stay apart."""
    named = dict(token.split("=", 1) for token in str(row["group"]).split() if "=" in token)
    extra = sorted((k, v) for k, v in named.items() if k not in ("p", "beta"))
    return tuple((c, row.get(c)) for c in _FAMILY_COLUMNS) + tuple(extra)


def _write(
    rows: list[dict[str, Any]],
    family_list: list[tuple[str, list[str]]],
    out: Path,
    *,
    plots: bool,
    formats: Sequence[str],
) -> list[Path]:
    aggregates = aggregate_rows(rows)
    written = [out / name for name in TABLES]
    rf.save_text(written[0], csv_text(rows, CONFIG_COLUMNS + ESTIMATE_COLUMNS))
    rf.save_text(written[1], csv_text(aggregates, AGGREGATE_COLUMNS))
    compression = compression_rows(rows)
    rf.save_text(written[2], csv_text(compression, COMPRESSION_COLUMNS))
    rf.save_text(written[3], summary_markdown(rows, compression))
    if plots:
        written += draw_comparison_figures(aggregates, family_list, out / FIGURES_DIR, formats=formats)
    return written


# -- compression: does I(X;Z) fall after its peak by more than its errors? ---------------------------

DROP_ERRORS = 3.0
"""A drop peak -> last counts as compression beyond this many errors. The peak is the largest of many
noisy points: for 51 saved epochs of pure noise the drop exceeds 2 errors in 30% of runs, 3 in 3.7%
(16 epochs: 17% and 1.5%; simulated with equal independent errors)."""
FALL_ERRORS = 4.0
"""The largest fall over all pairs of epochs counts beyond this many errors: pure noise over 51 saved
epochs exceeds 2 errors in 99.6% of runs and 4 in 2.8% (16 epochs: 0.4%)."""

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
    """Per run, layer, split and estimator: I(X;Z) at the first trained epoch, at its peak and at the last
    epoch; the drop peak - last with its error (total errors of both points in quadrature; empty for
    estimators without an error, whose drop then only has to be positive) and ``compressed`` = a drop after
    the peak larger than ``DROP_ERRORS`` times that error. ``limited_by_n``: the saturation at the peak or
    at the last epoch exceeds 0.5, so the estimate there is limited by the number of inputs and a flat
    curve says nothing about compression either way (McAllester & Stratos 2020). ``largest_fall``: the
    largest decrease from any epoch to a later one (``fall_from_epoch`` -> ``fall_to_epoch``, with the
    error of that difference), which also catches a dip that training later undoes; it counts beyond
    ``FALL_ERRORS`` errors. The ``bracket_*`` columns say whether the lower and upper estimates show a
    fall or a rise of the population I(X;Z) between any two epochs (:func:`bracket_verdict`)."""
    rows = [row for row in rows if row.get("skipped") is None]
    sizes = _group_sizes(rows)
    # A run's callback series goes with the N of the run's other estimates of that split.
    run_n = {(row["run"], row["split"]): row["n_inputs"] for row in rows if row.get("n_inputs") is not None}
    series: dict[tuple, list[dict]] = {}
    for row in rows:
        if row.get("mi_xz") is not None and row["epoch"] > 0:
            n = row.get("n_inputs") if row.get("n_inputs") is not None else run_n.get((row["run"], row["split"]))
            key = (_sized(row["group"], n, sizes), row["layer"], row["split"], row["estimator"], row["run"])
            series.setdefault(key, []).append(row)
    out = []
    for (group, layer, split, name, run), points in series.items():
        points.sort(key=lambda r: r["epoch"])
        peak = max(points, key=lambda r: r["mi_xz"])
        first, last = points[0], points[-1]
        drop = peak["mi_xz"] - last["mi_xz"]
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
                "drop": drop,
                "drop_error": error,
                "compressed": bool(peak["epoch"] < last["epoch"] and drop > DROP_ERRORS * (error or 0.0)),
                "saturation_peak": peak.get("saturation"),
                "saturation_last": last.get("saturation"),
                "limited_by_n": any((p.get("saturation") or 0.0) > SATURATION_LIMIT for p in (peak, last)),
                **_largest_fall(points),
                **bracket_verdict(points),
            }
        )
    return sorted(out, key=lambda r: (r["group"], r["layer"], r["estimator"], r["split"], r["seed"] or 0))


def _largest_fall(points: Sequence[dict]) -> dict[str, Any]:
    """The largest I(X;Z)[i] - I(X;Z)[j] over i < j (points in epoch order), with its total error.

    A curve that never falls has a largest fall of 0 and no epochs or error."""
    best, top, pair = 0.0, points[0], None
    for point in points[1:]:
        if top["mi_xz"] - point["mi_xz"] > best:
            best, pair = top["mi_xz"] - point["mi_xz"], (top, point)
        if point["mi_xz"] > top["mi_xz"]:
            top = point
    if pair is None:
        return {"largest_fall": 0.0, "fall_from_epoch": None, "fall_to_epoch": None, "fall_error": None}
    return {
        "largest_fall": best,
        "fall_from_epoch": pair[0]["epoch"],
        "fall_to_epoch": pair[1]["epoch"],
        "fall_error": _difference_error(*pair),
    }


def _difference_error(a: dict, b: dict) -> float | None:
    """Total error of I(X;Z)[a] - I(X;Z)[b]: the two points' total errors in quadrature (None without any)."""
    totals = [t for t in (total_error(a, "xz"), total_error(b, "xz")) if t is not None]
    return math.hypot(*totals) if totals else None


def _fmt(values: Sequence[float | None], digits: int = 3) -> str:
    """mean ± standard deviation between seeds (the mean alone for one seed)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=1):.{digits}f}"


def _errors(points: Sequence[dict], q: str) -> str:
    """mean Monte Carlo / mean sampling error, "-" for a kind an estimator does not report."""
    parts = []
    for field in (f"mi_{q}_stderr", f"mi_{q}_sampling_stderr"):
        values = [p[field] for p in points if p.get(field) is not None]
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
    (``compression``: :func:`compression_rows` of ``rows``)."""
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
            for split in rf.SPLITS:
                runs = [
                    c for c in compression if c["group"] == group and c["estimator"] == name and c["split"] == split
                ]
                for point in ("first", "peak", "last") if runs else ():
                    picked = [index[(c["layer"], split, name, c["run"], c[f"{point}_epoch"])] for c in runs]
                    epochs = sorted({p["epoch"] for p in picked})
                    epoch = str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"
                    verdicts = (
                        f"{_verdict(runs)} | {_falls(runs)} | {summarise_verdicts(runs)}" if point == "last" else " | |"
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


def _verdict(runs: Sequence[dict]) -> str:
    limited = sum(c["limited_by_n"] for c in runs)
    return (
        f"{sum(c['compressed'] for c in runs)} of {len(runs)}"
        + (" (no error bars)" if all(c["drop_error"] is None for c in runs) else "")
        + (f" ({limited} limited by N)" if limited else "")
    )


def _falls(runs: Sequence[dict]) -> str:
    """The largest fall (mean ± sd over seeds) and in how many seeds it exceeds ``FALL_ERRORS`` errors."""
    falls = _fmt([c["largest_fall"] for c in runs])
    if any(c["largest_fall"] > 0 and c["fall_error"] is None for c in runs):
        return f"{falls} (no error bars)"
    beyond = sum(c["fall_error"] is not None and c["largest_fall"] > FALL_ERRORS * c["fall_error"] for c in runs)
    return f"{falls} ({beyond} of {len(runs)} beyond {FALL_ERRORS:g} errors)"


def _parser() -> OneLineParser:
    parser = OneLineParser(
        prog="python -m utils.analysis.comparison",
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

    return run_command("comparison", body)


if __name__ == "__main__":
    sys.exit(main())
