"""The seed aggregates of a comparison, ``aggregate.csv``: each group's runs averaged over their seeds.

Per group, layer, split, epoch and estimator (and N, where the runs of a group were estimated with
different numbers of inputs: :func:`utils.analysis.run_groups.group_sizes`) the mean over seeds, the
standard deviation between seeds and the mean per-seed total error (Monte Carlo and input sampling in
quadrature) of I(X;Z), its upper estimate and I(Y;Z), and the mean and largest saturation.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from utils.analysis.entries import total_error
from utils.analysis.run_groups import group_sizes, sized_group

AGGREGATED = ("xz", "xz_upper", "zy")
"""The quantities averaged over seeds: I(X;Z), its upper estimate and I(Y;Z)."""
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


def aggregate_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Seed aggregates of rows of ``estimates.csv``: mean, standard deviation between seeds and mean
    per-seed total error."""
    rows = [row for row in rows if row.get("skipped") is None]
    # The callback's rows have no N (they do not depend on it) and join every N of their group.
    sizes = group_sizes(rows)
    cells: dict[tuple, list[dict]] = {}
    for row in rows:
        found = sizes.get(row["group"], [])
        names = (
            [row["group"]]
            if len(found) < 2
            else [sized_group(row["group"], n, sizes) for n in found if row.get("n_inputs") in (None, n)]
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
