"""The figures of run folders: information planes per dropout layer, convergence in N, training curves,
and the seed-aggregated planes, epoch curves and overlays of a comparison of runs.

Which planes are drawn depends on the dropout kind (Adilova, Geiger & Fischer, ICLR 2023):
- Gaussian dropout: the mixture estimate of I(X;Z) against each I(Y;Z) estimate (mixture,
  H(Y) - cross-entropy, EDGE, KSG, all on the same noisy Z), the Gaussian upper bound on its own
  scale, binning of the noisy Z and of the noise-free f(x).
- Information dropout: the paper's KL / cross-entropy plane (with beta), the mixture estimate in log
  space, EDGE, KSG, binning.
- Bernoulli dropout: I(X;Z) is infinite; binning of f(x) and the cross-entropy bound only.
Hollow points are limited by the number of inputs (saturation dI/dlog N > 0.5, McAllester & Stratos
2020); whiskers run from the lower (mixture) to the upper (leave-one-out) estimate of I(X;Z).
File names say what they hold: ``plane_<group>_<layer>``, ``epochs_<group>_<layer>`` and
``overlay_<flag>_<what the groups share>_<what tells them apart>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mi_estimators.checks import InputError
from utils import run_folder as rf
from utils.analysis.entries import SATURATION_LIMIT, UPPER, total_error
from utils.analysis.figure_layout import (
    COLUMN_WIDTH,
    PAGE_WIDTH,
    figure_legend,
    new_figure,
    save_figure,
    styled,
    title_and_caption,
    unique_entries,
)
from utils.analysis.plotting import (
    H_Y_COLOR,
    LOG_AXIS_RATIO,
    LOG_N_COLOR,
    Panel,
    PlaneSeries,
    log_ticks,
    plot_plane_grid,
    plot_training_curves,
    read_history,
    shared_ranges,
)

# (estimator giving I(X;Z), estimator giving I(Y;Z), panel title) in drawing order.
PLANES = {
    "gaussian": [
        ("mixture", "mixture", "mixture estimate"),
        ("mixture", "callback", "H(Y) - cross-entropy"),
        ("mixture", "edge", "EDGE I(Y;Z)"),
        ("mixture", "ksg", "KSG I(Y;Z)"),
        ("upper_bound", "mixture", "Gaussian upper bound"),
        ("binning", "binning", "binning of noisy Z"),
        ("binning_f", "binning_f", "binning of f(x)"),
    ],
    "information": [
        ("callback", "callback", "KL term (beta = {beta:g})"),
        ("mixture", "mixture", "mixture (log space)"),
        ("mixture", "edge", "EDGE I(Y;Z)"),
        ("mixture", "ksg", "KSG I(Y;Z)"),
        ("binning", "binning", "binning of noisy Z"),
        ("binning_f", "binning_f", "binning of f(x)"),
    ],
    "bernoulli": [
        ("binning", "binning", "binning of f(x)"),
        ("binning", "callback", "H(Y) - cross-entropy"),
    ],
}
OWN_SCALE = {"upper_bound", "callback"}
"""I(X;Z) estimators far beyond log N (a loose bound, the KL term): their panels get their own axis."""
RUN_CAPTION = "error bars: Monte Carlo and input-sampling errors in quadrature"
MAX_STEM = 120
"""Longest figure file name (without its extension): the file system's limit is 255 bytes."""


def _panel_title(title: str, split: str, log_n: float | None, beta: float | None = None) -> str:
    """The estimator on one line, the split and its number of inputs N on the next."""
    n = f", N = {round(np.exp(log_n)):,}" if log_n is not None else ""
    return f"{title.format(beta=beta or 0)}\n{split}{n}"


def _series(x_entries: dict, y_entries: dict, keep: Callable[[int], bool]) -> PlaneSeries | None:
    epochs = sorted(
        int(e)
        for e in set(x_entries) & set(y_entries)
        if keep(int(e)) and x_entries[e].get("mi_xz") is not None and y_entries[e].get("mi_zy") is not None
    )
    if not epochs:
        return None
    xs = [x_entries[str(e)] for e in epochs]
    ys = [y_entries[str(e)] for e in epochs]
    uppers = [x.get(UPPER) for x in xs]
    return PlaneSeries(
        epochs,
        [x["mi_xz"] for x in xs],
        [y["mi_zy"] for y in ys],
        [total_error(x, "xz") for x in xs],
        [total_error(y, "zy") for y in ys],
        saturated=[(x.get("saturation") or 0.0) > SATURATION_LIMIT for x in xs],
        mi_xz_upper=uppers if any(u is not None for u in uppers) else None,
    )


def _log_n(estimates: Mapping[str, Any], layer: str, split: str) -> float | None:
    """log N of the analysed inputs of a split (from any estimate that records it)."""
    for by_layer in estimates.values():
        for entry in by_layer.get(layer, {}).get(split, {}).values():
            if entry.get("log_n") is not None:
                return entry["log_n"]
    return None


def layer_panels(
    estimates: Mapping[str, Any],
    layer: Mapping[str, Any],
    splits: Sequence[str] = rf.SPLITS,
    epochs: Callable[[int], bool] | None = None,
) -> list[Panel]:
    """Information-plane panels for one ``config.json`` layer entry: planes x splits, only those with data
    (``epochs`` selects the epochs drawn; default all)."""
    panels = []
    for x_name, y_name, title in PLANES[layer["dropout"]]:
        for split in splits:
            x_entries = estimates.get(x_name, {}).get(layer["name"], {}).get(split, {})
            y_entries = estimates.get(y_name, {}).get(layer["name"], {}).get(split, {})
            series = _series(x_entries, y_entries, epochs or (lambda e: True))
            if series is None:
                continue
            h_y = next((e.get("h_y") for e in y_entries.values() if e.get("h_y") is not None), None)
            warned = any(e.get("warnings") for e in (*x_entries.values(), *y_entries.values()))
            log_n = _log_n(estimates, layer["name"], split)
            panels.append(
                Panel(
                    _panel_title(title, split, log_n, layer.get("beta")) + (" (warned)" if warned else ""),
                    [series],
                    log_n=log_n,
                    h_y=h_y,
                    own_scale=x_name in OWN_SCALE,
                    x_key=x_name,
                    y_key=y_name,
                )
            )
    return panels


@styled
def plot_convergence(
    estimates: Mapping[str, Any], layer: str, split: str, epochs: Callable[[int], bool] | None = None
) -> Figure:
    """I(X;Z) of the mixture estimate against log n on the nested subsets of every saved epoch, with the
    ceiling I = log n: a curve that still follows the ceiling is limited by the number of inputs."""
    entries = estimates.get("mixture", {}).get(layer, {}).get(split, {})
    chosen = sorted(int(e) for e, v in entries.items() if v.get("convergence") and (epochs is None or epochs(int(e))))
    if not chosen:
        raise InputError(
            f"no convergence-in-N points for layer {layer!r}, {split} split: estimate with the mixture estimator first"
        )
    fig = new_figure(COLUMN_WIDTH, 3.2)
    ax = fig.subplots()
    norm = Normalize(vmin=min(chosen), vmax=max(max(chosen), min(chosen) + 1))
    cmap = colormaps["viridis"]
    for epoch in chosen:
        points = entries[str(epoch)]["convergence"]
        ax.errorbar(
            [p["log_n"] for p in points],
            [p["mi_xz"] for p in points],
            yerr=[p["mi_xz_stderr"] for p in points],
            color=cmap(norm(epoch)),
            marker="o",
            ms=2.5,
            lw=0.8,
        )
    top = max(p["log_n"] for e in chosen for p in entries[str(e)]["convergence"])
    ax.plot([0, top], [0, top], "--", color=LOG_N_COLOR, lw=0.8, label="I = log n (the ceiling)")
    ax.set_xlabel("log n (nested random subsets of the inputs)")
    ax.set_ylabel("mixture I(X;Z) [nats]")
    ax.grid(alpha=0.3)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="epoch", aspect=30, pad=0.01)
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    title_and_caption(fig, f"convergence in N: layer {layer}, {split} split", "error bars: Monte Carlo errors")
    figure_legend(fig, *unique_entries([ax]))
    return fig


def draw_run_figures(
    run_dir: str | Path,
    *,
    formats: Sequence[str] = ("png",),
    estimates: Mapping[str, Any] | None = None,
    epochs: Callable[[int], bool] | None = None,
    suffix: str = "",
) -> list[Path]:
    """Draw ``RUN_DIR/figures/information_plane[_<layer>]<suffix>``, ``convergence_<split>[_<layer>]<suffix>``
    and ``training_curves`` (each in every format); returns the written paths.

    ``estimates`` defaults to the content of ``IP/estimates.json``; ``epochs`` selects the epochs
    drawn (e.g. to leave out epoch 0, which the axes leave out anyway)."""
    run_dir = Path(run_dir)
    config = rf.load_config(run_dir)
    found: Mapping[str, Any] = (estimates or rf.load_estimates(run_dir))["estimates"]
    figures = run_dir / "figures"
    several = len(config["layers"]) > 1
    written = []
    for layer in config["layers"]:
        tag = f"_{layer['name']}" if several else ""
        panels = layer_panels(found, layer, epochs=epochs)
        if panels:
            level = f"p = {layer['p']}" if layer.get("p") is not None else f"beta = {layer.get('beta')}"
            title = f"{run_dir.name}: layer {layer['name']} ({layer['dropout']} dropout, {level})"
            written += save_figure(
                plot_plane_grid(panels, suptitle=title, caption=RUN_CAPTION),
                figures / f"information_plane{tag}{suffix}",
                formats,
            )
        for split in rf.SPLITS:
            if any(
                v.get("convergence") for v in found.get("mixture", {}).get(layer["name"], {}).get(split, {}).values()
            ):
                written += save_figure(
                    plot_convergence(found, layer["name"], split, epochs),
                    figures / f"convergence_{split}{tag}{suffix}",
                    formats,
                )
    history = run_dir / rf.HISTORY_NAME
    if history.exists():
        written += save_figure(
            plot_training_curves(read_history(history), title=run_dir.name), figures / "training_curves", formats
        )
    if not written:
        raise InputError(
            f"nothing to draw in {run_dir}: run `python -m utils.analysis.information_plane {run_dir}` first"
        )
    return written


# -- comparisons of runs (rows of utils.analysis.comparison's aggregate table) ---------------------------


def _spread(row: dict, q: str) -> float | None:
    """The error bar of an aggregate: the standard deviation between seeds, or the one seed's total error."""
    sd = row.get(f"mi_{q}_seed_sd")
    return sd if sd is not None else row.get(f"mi_{q}_seed_error")


def _aggregate_series(
    rows: list[dict], x_name: str, y_name: str, color: Any = None, label: str | None = None
) -> PlaneSeries | None:
    xs = {r["epoch"]: r for r in rows if r["estimator"] == x_name and r.get("mi_xz_mean") is not None}
    ys = {r["epoch"]: r for r in rows if r["estimator"] == y_name and r.get("mi_zy_mean") is not None}
    epochs = sorted(set(xs) & set(ys))
    if not epochs:
        return None
    uppers = [xs[e].get("mi_xz_upper_mean") for e in epochs]
    return PlaneSeries(
        epochs,
        [xs[e]["mi_xz_mean"] for e in epochs],
        [ys[e]["mi_zy_mean"] for e in epochs],
        [_spread(xs[e], "xz") for e in epochs],
        [_spread(ys[e], "zy") for e in epochs],
        saturated=[(xs[e].get("saturation_mean") or 0.0) > SATURATION_LIMIT for e in epochs],
        label=label,
        color=color,
        mi_xz_upper=uppers if any(u is not None for u in uppers) else None,
    )


def error_caption(rows: Sequence[dict], what: str = "error bars") -> str:
    """What the error bars of seed aggregates are, in a few words."""
    seeds = sorted({r.get("n_seeds") or 1 for r in rows})
    if seeds[-1] == 1:
        return f"one seed; {what}: Monte Carlo and input-sampling error"
    if seeds[0] > 1:
        return f"{what}: \u00b11 s.d. between {'-'.join(map(str, sorted({seeds[0], seeds[-1]})))} seeds"
    return f"{what}: \u00b11 s.d. between 1-{seeds[-1]} seeds (1 seed: its error)"


def _group_panels(rows: list[dict]) -> list[Panel]:
    first = rows[0]
    panels = []
    for x_name, y_name, title in PLANES[first["dropout"]]:
        for split in rf.SPLITS:
            cell = [r for r in rows if r["split"] == split]
            series = _aggregate_series(cell, x_name, y_name)
            if series is None:
                continue
            log_n = next((r["log_n"] for r in cell if r.get("log_n") is not None), None)
            panels.append(
                Panel(
                    _panel_title(title, split, log_n, first.get("beta")),
                    [series],
                    log_n=log_n,
                    h_y=first.get("h_y"),
                    own_scale=x_name in OWN_SCALE,
                    x_key=x_name,
                    y_key=y_name,
                )
            )
    return panels


TRAJECTORY_ESTIMATORS = {
    "mixture": "mixture: lower estimate",
    "binning": "binning of noisy Z",
    "binning_f": "binning of f(x)",
    "callback": "KL term",
}
COLORS = dict(zip(TRAJECTORY_ESTIMATORS, ("tab:blue", "tab:orange", "tab:green", "tab:purple")))
CE_LABEL = "H(Y) - cross-entropy"
GROUP_COLORS = [f"C{i}" for i in range(10)]
"""One colour per group of an overlay (matplotlib's default cycle)."""


@styled
def plot_trajectories(rows: list[dict], title: str) -> Figure:
    """I(X;Z) and I(Y;Z) against the trained epochs (epoch 0, before training, would set the scale), one
    line per estimator with a band of +-1 standard deviation between seeds (the total error with one
    seed), the bracket of the mixture estimate shaded up to its upper estimate: a compression phase is a
    fall of I(X;Z) after its peak, which the plane's axes hide. The KL term of information dropout is on
    its own axis (many times log N). One column per split with data."""
    rows = [r for r in rows if r["epoch"] > 0]
    splits = [s for s in rf.SPLITS if any(r["split"] == s and r.get("mi_xz_mean") is not None for r in rows)]
    if not splits:
        raise InputError(f"no trained epochs to draw for {title!r}")
    kl = any(r["estimator"] == "callback" and r.get("mi_xz_mean") is not None for r in rows)
    quantities = [("xz", "I(X;Z) [nats]"), ("zy", "I(Y;Z) [nats]")] + ([("kl", "KL term [nats]")] if kl else [])
    fig = new_figure(PAGE_WIDTH if len(splits) > 1 else COLUMN_WIDTH + 0.5, 1.75 * len(quantities) + 1.1)
    axes = fig.subplots(len(quantities), len(splits), squeeze=False, sharex=True)
    for col, split in enumerate(splits):
        cell = [r for r in rows if r["split"] == split]
        log_n = next((r["log_n"] for r in cell if r.get("log_n") is not None), None)
        for row_i, (q, ylabel) in enumerate(quantities):
            ax = axes[row_i][col]
            names = ["callback"] if q == "kl" else [n for n in TRAJECTORY_ESTIMATORS if n != "callback" or q == "zy"]
            for name in names:
                key = "xz" if q == "kl" else q
                pts = [
                    (r["epoch"], r[f"mi_{key}_mean"], _spread(r, key) or 0.0)
                    for r in cell
                    if r["estimator"] == name and r.get(f"mi_{key}_mean") is not None
                ]
                label = CE_LABEL if name == "callback" and q == "zy" else TRAJECTORY_ESTIMATORS[name]
                _band(ax, pts, COLORS[name], label)
                if name == "mixture" and q == "xz":
                    _bracket(ax, [r for r in cell if r["estimator"] == name], pts, COLORS[name])
            ref = log_n if q == "xz" else next((r["h_y"] for r in cell if r.get("h_y") is not None), None)
            if ref is not None and q != "kl":
                ax.axhline(ref, color=LOG_N_COLOR if q == "xz" else H_Y_COLOR, ls="--", lw=0.8, label=_ref_label(q))
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if ax.get_yscale() == "linear":
                ax.yaxis.set_major_locator(MaxNLocator(4))
        n = f", N = {round(np.exp(log_n)):,}" if log_n is not None else ""
        axes[0][col].set_title(f"{split}{n}")
        axes[-1][col].set_xlabel("epoch")
    caption = error_caption(rows, "bands")
    if any(r.get("mi_xz_upper_mean") is not None for r in rows):
        caption += "; pale: lower to upper I(X;Z)"
    title_and_caption(fig, title, caption)
    figure_legend(fig, *unique_entries(list(axes.flat)))
    return fig


def _ref_label(q: str) -> str:
    return "log N (N: analysed inputs)" if q == "xz" else "H(Y)"


def draw_comparison_figures(
    aggregates: list[dict],
    families: Sequence[tuple[str, list[str]]],
    folder: Path,
    *,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Per group the seed-aggregated planes (``plane_<group>_<layer>``) and I(X;Z), I(Y;Z) against the epoch
    (``epochs_<group>_<layer>``); per family of groups that differ in one flag, the mixture planes and
    I(X;Z) against the epoch overlaid (``overlay_<flag>_...``, :func:`overlay_stem`)."""
    written = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in aggregates:
        groups.setdefault((row["group"], row["layer"]), []).append(row)
    for (group, layer), rows in groups.items():
        panels = _group_panels(rows)
        if panels:
            caption = f"{error_caption(rows)}{_per_seed_error(rows)}; {_axis_note(panels)}"
            fig = plot_plane_grid(panels, suptitle=f"{group} (layer {layer})", caption=caption)
            written += save_figure(fig, folder / f"plane_{_slug(group)}_{layer}", formats)
        if any(r["epoch"] > 0 and r.get("mi_xz_mean") is not None for r in rows):
            fig = plot_trajectories(rows, f"{group} (layer {layer})")
            written += save_figure(fig, folder / f"epochs_{_slug(group)}_{layer}", formats)
    present = sorted({group for group, _ in groups})
    for flag, names in families:
        # (a group estimated with several N is aggregated per N: "<name> N=<n>", comparison.aggregate_rows)
        found = [g for name in names for g in present if g == name or g.startswith(f"{name} N=")]
        written += _overlay(groups, flag, found, folder, formats)
    return written


def _per_seed_error(rows: Sequence[dict]) -> str:
    """``; mean per-seed error of the mixture I(X;Z): ...`` where several seeds are averaged."""
    errors = [r["mi_xz_seed_error"] for r in rows if r["estimator"] == "mixture" and r.get("mi_xz_seed_error")]
    several = any((r.get("n_seeds") or 1) > 1 for r in rows)
    return f"; mean per-seed error of the mixture I(X;Z): {np.mean(errors):.2g}" if errors and several else ""


def _axis_note(panels: Sequence[Panel]) -> str:
    """What the caption says about the axes: the trained epochs set them, the bracket on a log axis."""
    brackets = any(s.mi_xz_upper is not None for p in panels for s in p.series)
    logs = any(axis.log for axis in shared_ranges(panels)[0])
    whiskers = "whiskers: lower to upper I(X;Z)" + (" on a log axis" if logs else "") + "; " if brackets else ""
    return f"{whiskers}axes span the trained epochs"


def overlay_stem(flag: str, names: Sequence[str]) -> str:
    """``overlay_<flag>_<tokens all groups share>_<each group's other tokens>``: the groups'
    names (``fc gaussian p=0.2 N=60000``) say what to look for; past ``MAX_STEM`` characters, the first
    and the last group and their number."""
    tokens = [name.split() for name in names]
    common = [t for t in tokens[0] if all(t in other for other in tokens)]
    rest = [_slug("-".join(t for t in other if t not in common)) or "all" for other in tokens]
    base = f"overlay_{flag}_{_slug('-'.join(common))}" if common else f"overlay_{flag}"
    stem = f"{base}_{'_'.join(rest)}"
    if len(stem) > MAX_STEM:
        stem = f"{base}_{rest[0][:40]}_to_{rest[-1][:40]}_{len(names)}-groups"
    return stem


def _overlay(groups: dict, flag: str, names: list[str], folder: Path, formats: Sequence[str]) -> list[Path]:
    panels = []
    caption_rows = []
    for split in rf.SPLITS:
        series = []
        log_n = None
        for i, name in enumerate(names):
            rows = [r for (g, _), rs in groups.items() if g == name for r in rs if r["split"] == split]
            found = _aggregate_series(rows, "mixture", "mixture", color=GROUP_COLORS[i % len(GROUP_COLORS)], label=name)
            if found is not None:
                series.append(found)
                caption_rows += rows
                log_n = log_n or next((r["log_n"] for r in rows if r.get("log_n") is not None), None)
        if series:
            panels.append(Panel(f"mixture estimate\n{split}", series, h_y=_h_y(caption_rows), x_key="mixture"))
    if not panels:
        return []
    stem = overlay_stem(flag, names)
    fig = plot_plane_grid(
        panels,
        suptitle=f"groups differing in {flag}",
        caption=error_caption(caption_rows) + "; " + _axis_note(panels),
    )
    written = save_figure(fig, folder / stem, formats)
    fig = _overlay_epochs(
        groups, names, f"mixture I(X;Z) of groups differing in {flag}", error_caption(caption_rows, "bands")
    )
    return written + save_figure(fig, folder / f"{stem}_epochs", formats)


def _h_y(rows: Sequence[dict]) -> float | None:
    return next((r["h_y"] for r in rows if r.get("h_y") is not None), None)


@styled
def _overlay_epochs(groups: dict, names: list[str], title: str, caption: str) -> Figure:
    """The mixture I(X;Z) of several groups against the trained epochs, one panel per split with data, and
    log N of each number of inputs N among them."""
    cells = {
        split: [
            (
                i,
                name,
                [
                    r
                    for (g, _), rs in groups.items()
                    if g == name
                    for r in rs
                    if r["split"] == split
                    and r["estimator"] == "mixture"
                    and r["epoch"] > 0
                    and r.get("mi_xz_mean") is not None
                ],
            )
            for i, name in enumerate(names)
        ]
        for split in rf.SPLITS
    }
    splits = [s for s in rf.SPLITS if any(found for _, _, found in cells[s])]
    fig = new_figure(PAGE_WIDTH if len(splits) > 1 else COLUMN_WIDTH + 0.5, 3.0)
    axes = fig.subplots(1, len(splits), squeeze=False)[0]
    for ax, split in zip(axes, splits):
        sizes = set()
        for i, name, found in cells[split]:
            _band(
                ax,
                [(r["epoch"], r["mi_xz_mean"], _spread(r, "xz") or 0.0) for r in found],
                GROUP_COLORS[i % len(GROUP_COLORS)],
                name,
            )
            sizes |= {r["log_n"] for r in found if r.get("log_n") is not None}
        for log_n in sorted(sizes):
            ax.axhline(log_n, color=LOG_N_COLOR, ls="--", lw=0.8, label=_ref_label("xz"))
            ax.annotate(
                f"N = {round(np.exp(log_n)):,}",
                (1.0, log_n),
                xycoords=("axes fraction", "data"),
                xytext=(-2, 2),
                textcoords="offset points",
                ha="right",
                va="bottom",
                fontsize=6,
                color=LOG_N_COLOR,
            )
        ax.set(title=split, xlabel="epoch", ylabel="I(X;Z) [nats]")
        ax.grid(alpha=0.3)
    title_and_caption(fig, title, caption)
    figure_legend(fig, *unique_entries(list(axes)))
    return fig


def _band(ax: Axes, pts: list[tuple[float, float, float]], color: Any, label: str) -> None:
    """One mean line over the epochs with a band of +-1 spread, from (epoch, mean, spread) points."""
    if not pts:
        return
    e, m, sd = (np.array(v, dtype=float) for v in zip(*sorted(pts)))
    ax.plot(e, m, "-o", ms=2, lw=0.9, color=color, label=label)
    ax.fill_between(e, m - sd, m + sd, color=color, alpha=0.25, lw=0)


def _bracket(ax: Axes, rows: list[dict], lower: list[tuple[float, float, float]], color: Any) -> None:
    """The upper estimate of I(X;Z) as a dashed line, the bracket lower..upper shaded; a log axis where the
    upper estimate is far above the lower one."""
    upper = sorted((r["epoch"], r["mi_xz_upper_mean"]) for r in rows if r.get("mi_xz_upper_mean") is not None)
    if not upper or not lower:
        return
    e, u = (np.array(v, dtype=float) for v in zip(*upper))
    low = dict((p[0], p[1]) for p in lower)
    ax.plot(e, u, "--", lw=0.9, color=color, label="mixture: upper estimate")
    ax.fill_between(e, [low.get(x, np.nan) for x in e], u, color=color, alpha=0.08, lw=0)
    if u.max() > LOG_AXIS_RATIO * min(p[1] for p in lower):
        ax.set_yscale("log")
        log_ticks(ax.yaxis, 0.95 * min(p[1] for p in lower), 1.05 * u.max())


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text).strip("-")
