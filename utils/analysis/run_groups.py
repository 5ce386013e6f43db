"""Which runs of a comparison are seeds of one experiment, and what each group is called.

Runs whose flags differ only in ``seed`` (and in flags that do not change the experiment: where the
data or the output live, distribution, verbosity; ``utils.run_folder.DEFINING_FLAGS`` lists the others)
form a group; a run that the callback made on a user's own model (no training flags) is grouped by
everything in its ``config.json`` but the seed, under the key :data:`USER_RUN`. A group whose runs were
estimated with different numbers of inputs N is reported once per N, its name ending in ``N=<n>``.
Groups that differ in exactly one flag form a family, drawn overlaid.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from mi_estimators.checks import InputError
from utils import run_folder
from utils.run_folder_schema import Flags, RunConfig

Defining = tuple[tuple[str, Any], ...]
"""The (flag, value) pairs that define a group, sorted by flag."""

_FAMILY_COLUMNS = ("dataset", "net", "dropout", "p", "beta", "epochs")
"""The configuration columns that define a group of a merged table's rows (:func:`row_defining`)."""


@dataclass(frozen=True)
class RunInfo:
    """A run folder's configuration as the comparison sees it."""

    path: Path
    config: RunConfig
    defining: Defining

    @property
    def flags(self) -> Flags:
        return self.config.get("flags", {})

    def describe(self, group: str) -> dict[str, Any]:
        """The run's configuration columns in the comparison's tables
        (:data:`utils.analysis.estimate_table.CONFIG_COLUMNS`), in group ``group``."""
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


def _user_defining(path: Path, config: RunConfig) -> Defining:
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
    """The run folder's configuration and the flags that define its group (the seed and the flags of
    another dropout kind left out)."""
    config = run_folder.load_config(path)
    flags = config.get("flags", {})
    if not flags:
        return RunInfo(Path(path), config, _user_defining(Path(path), config))
    defining = tuple(
        sorted(
            (k, v)
            for k, v in flags.items()
            if k in run_folder.DEFINING_FLAGS
            and k != "seed"
            and not (k in ("p",) and config["layers"][0]["dropout"] == "information")
            and not (k in ("beta", "alpha_max") and config["layers"][0]["dropout"] != "information")
        )
    )
    return RunInfo(Path(path), config, defining)


def check_distinct_runs(run_dirs: Sequence[Path]) -> None:
    """InputError when two of the run folders hold one run (a copy, however made, or a re-run with the same
    flags: :func:`utils.run_folder.run_identity`): a run counted twice would be two seeds with no spread."""
    seen: dict[str, Path] = {}
    for run_dir in map(Path, run_dirs):
        key = run_folder.run_identity(run_dir)
        if key in seen:
            raise InputError(
                f"{run_dir} and {seen[key]} hold the same run (the same flags, seed, dataset and library "
                "versions in config.json: a copy or a re-run): each run counts once, so name only one of them"
            )
        seen[key] = run_dir


def group_names(runs: Sequence[RunInfo]) -> dict[Defining, str]:
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
    return families_by_name({names[r.defining]: r.defining for r in runs})


def families_by_name(defining: dict[str, Defining]) -> list[tuple[str, list[str]]]:
    """:func:`families` from each group's name and its defining (flag, value) pairs."""
    keys = list(dict.fromkeys(defining.values()))
    names = {key: name for name, key in defining.items()}
    found = []
    for flag in sorted({k for key in keys for k, _ in key}):
        rest: dict[Defining, list[Defining]] = {}
        for key in keys:
            rest.setdefault(tuple(kv for kv in key if kv[0] != flag), []).append(key)
        for members in rest.values():
            if len(members) > 1:
                members.sort(key=lambda key: str(dict(key).get(flag)))
                found.append((flag, [names[key] for key in members]))
    return found


def row_defining(row: dict[str, Any]) -> Defining:
    """The defining flags of a row of a merged ``estimates.csv``: the configuration columns, plus the flags
    that :func:`group_names` put into its group's name (``lr=0.05``; the table has no column for them), so
    that groups differing only there stay apart."""
    named = dict(token.split("=", 1) for token in str(row["group"]).split() if "=" in token)
    extra = sorted((k, v) for k, v in named.items() if k not in ("p", "beta"))
    return tuple((c, row.get(c)) for c in _FAMILY_COLUMNS) + tuple(extra)


def group_sizes(rows: Iterable[dict[str, Any]]) -> dict[str, list[int]]:
    """The numbers of inputs each group was estimated with (rows without N, the callback's, aside).

    Seeds are averaged and summarised at equal N only (the mixture estimate is capped at log N): a group
    whose runs were estimated with different numbers of inputs is reported once per N, named with it."""
    sizes: dict[str, set] = {}
    for row in rows:
        if row.get("n_inputs") is not None:
            sizes.setdefault(row["group"], set()).add(row["n_inputs"])
    return {group: sorted(found) for group, found in sizes.items()}


def sized_group(group: str, n: int | None, sizes: dict[str, list[int]]) -> str:
    """The group's name, with `` N=<n>`` where the group has several N (:func:`group_sizes`)."""
    return group if n is None or len(sizes.get(group, ())) < 2 else f"{group} N={n}"
