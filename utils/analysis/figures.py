"""The figures of run folders: information planes per dropout layer, convergence in N, training curves,
and the seed-aggregated planes of a comparison of runs.

Which planes are drawn depends on the dropout kind (Adilova, Geiger & Fischer, ICLR 2023):
- Gaussian dropout: the mixture estimate of I(X;Z) against each I(Y;Z) estimate (mixture,
  H(Y) - cross-entropy, EDGE, KSG, all on the same noisy Z), the Gaussian upper bound on its own
  scale, binning of the noisy Z and of the noise-free f(x).
- Information dropout: the paper's KL / cross-entropy plane (with beta), the mixture estimate in log
  space, EDGE, KSG, binning.
- Bernoulli dropout: I(X;Z) is infinite; binning of f(x) and the cross-entropy bound only.
Error bars are the Monte Carlo and input-sampling errors in quadrature; hollow points are limited by
the number of inputs (saturation dI/dlog N > 0.5, McAllester & Stratos 2020).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import Normalize
from matplotlib.ticker import MaxNLocator

from mi_estimators.checks import InputError
from utils import run_folder as rf
from utils.analysis.entries import SATURATION_LIMIT, UPPER, total_error
from utils.analysis.plotting import (
    BRACKET_CAPTION,
    LOG_AXIS_RATIO,
    Panel,
    PlaneSeries,
    plot_plane_grid,
    plot_training_curves,
    read_history,
    save_figure,
)

# (estimator giving I(X;Z), estimator giving I(Y;Z), panel title) in drawing order.
PLANES = {
    "gaussian": [
        ("mixture", "mixture", "dropout mixture estimate"),
        ("mixture", "callback", "mixture I(X;Z), H(Y) - cross-entropy"),
        ("mixture", "edge", "mixture I(X;Z), EDGE I(Y;Z)"),
        ("mixture", "ksg", "mixture I(X;Z), KSG I(Y;Z)"),
        ("upper_bound", "mixture", "Gaussian upper bound I(X;Z), mixture I(Y;Z)"),
        ("binning", "binning", "binning of one noisy draw of Z"),
        ("binning_f", "binning_f", "binning of the noise-free f(x)"),
    ],
    "information": [
        ("callback", "callback", "KL term (beta = {beta:g}), H(Y) - cross-entropy"),
        ("mixture", "mixture", "mixture estimate (log space)"),
        ("mixture", "edge", "mixture I(X;Z), EDGE I(Y;Z)"),
        ("mixture", "ksg", "mixture I(X;Z), KSG I(Y;Z)"),
        ("binning", "binning", "binning of one noisy draw of Z"),
        ("binning_f", "binning_f", "binning of the noise-free f(x)"),
    ],
    "bernoulli": [
        ("binning", "binning", "binning of f(x); Bernoulli dropout: I(X;Z) is infinite"),
        ("binning", "callback", "binning I(X;Z) of f(x), H(Y) - cross-entropy"),
    ],
}
OWN_SCALE = {"upper_bound"}
ERROR_CAPTION = f"error bars: Monte Carlo and input-sampling errors in quadrature\n{BRACKET_CAPTION}"


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


def _log_n(estimates: dict, layer: str, split: str) -> float | None:
    """log N of the analysed inputs of a split (from any estimate that records it)."""
    for by_layer in estimates.values():
        for entry in by_layer.get(layer, {}).get(split, {}).values():
            if entry.get("log_n") is not None:
                return entry["log_n"]
    return None


def layer_panels(
    estimates: dict[str, Any],
    layer: dict,
    splits: Sequence[str] = rf.SPLITS,
    epochs: Callable[[int], bool] | None = None,
) -> list[Panel]:
    """Information-plane panels for one ``config.json`` layer entry: planes x splits (``epochs``
    selects the epochs drawn; default all)."""
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
            flag = "\n[the estimator warned: see IP/estimates.json]" if warned else ""
            panels.append(
                Panel(
                    f"{title.format(beta=layer.get('beta') or 0)} ({split}){flag}",
                    [series],
                    log_n=_log_n(estimates, layer["name"], split),
                    h_y=h_y,
                    own_scale=x_name in OWN_SCALE,
                )
            )
    return panels


def plot_convergence(
    estimates: dict[str, Any], layer: str, split: str, epochs: Callable[[int], bool] | None = None
) -> plt.Figure:
    """I(X;Z) of the mixture estimate against log n on the nested subsets of every saved epoch, with the
    ceiling I = log n: a curve that still follows the ceiling is limited by the number of inputs."""
    entries = estimates.get("mixture", {}).get(layer, {}).get(split, {})
    chosen = sorted(int(e) for e, v in entries.items() if v.get("convergence") and (epochs is None or epochs(int(e))))
    if not chosen:
        raise InputError(
            f"no convergence-in-N points for layer {layer!r}, {split} split: estimate with the mixture estimator first"
        )
    fig, ax = plt.subplots(figsize=(5.2, 4.2), constrained_layout=True)
    norm = Normalize(vmin=min(chosen), vmax=max(max(chosen), min(chosen) + 1))
    cmap = plt.get_cmap("viridis")
    for epoch in chosen:
        points = entries[str(epoch)]["convergence"]
        ax.errorbar(
            [p["log_n"] for p in points],
            [p["mi_xz"] for p in points],
            yerr=[p["mi_xz_stderr"] for p in points],
            color=cmap(norm(epoch)),
            marker="o",
            ms=3,
            lw=1,
        )
    top = max(p["log_n"] for e in chosen for p in entries[str(e)]["convergence"])
    ax.plot([0, top], [0, top], "--", color="tab:red", lw=1, label="I = log n (the ceiling)")
    ax.set_xlabel("log n (nested random subsets of the inputs)")
    ax.set_ylabel("mixture I(X;Z) [nats]")
    ax.set_title(f"convergence in N: layer {layer}, {split} split", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="epoch")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    return fig


def draw_run_figures(
    run_dir: str | Path,
    *,
    formats: Sequence[str] = ("png",),
    estimates: dict[str, Any] | None = None,
    epochs: Callable[[int], bool] | None = None,
    suffix: str = "",
) -> list[Path]:
    """Draw ``RUN_DIR/figures/information_plane[_<layer>]<suffix>``, ``convergence_<split>[_<layer>]<suffix>``
    and ``training_curves`` (each in every format); returns the written paths.

    ``estimates`` defaults to the content of ``IP/estimates.json``; ``epochs`` selects the epochs
    drawn (e.g. to leave out epoch 0, which can set the scale)."""
    run_dir = Path(run_dir)
    config = rf.load_config(run_dir)
    estimates = (estimates or rf.load_estimates(run_dir))["estimates"]
    figures = run_dir / "figures"
    several = len(config["layers"]) > 1
    written = []
    for layer in config["layers"]:
        tag = f"_{layer['name']}" if several else ""
        panels = layer_panels(estimates, layer, epochs=epochs)
        if panels:
            level = f"p = {layer['p']}" if layer.get("p") is not None else f"beta = {layer.get('beta')}"
            title = f"{run_dir.name}: layer {layer['name']} ({layer['dropout']} dropout, {level})"
            written += save_figure(
                plot_plane_grid(panels, ncols=2, suptitle=title, caption=ERROR_CAPTION),
                figures / f"information_plane{tag}{suffix}",
                formats,
            )
        for split in rf.SPLITS:
            if any(
                v.get("convergence")
                for v in estimates.get("mixture", {}).get(layer["name"], {}).get(split, {}).values()
            ):
                written += save_figure(
                    plot_convergence(estimates, layer["name"], split, epochs),
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


def _aggregate_series(
    rows: list[dict], x_name: str, y_name: str, color: str | None = None, label: str | None = None
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
        [xs[e].get("mi_xz_seed_sd") for e in epochs],
        [ys[e].get("mi_zy_seed_sd") for e in epochs],
        saturated=[(xs[e].get("saturation_mean") or 0.0) > SATURATION_LIMIT for e in epochs],
        label=label,
        color=color,
        mi_xz_upper=uppers if any(u is not None for u in uppers) else None,
    )


def _group_panels(rows: list[dict]) -> tuple[list[Panel], str]:
    first = rows[0]
    kind = first["dropout"]
    panels, errors = [], []
    for x_name, y_name, title in PLANES[kind]:
        for split in rf.SPLITS:
            cell = [r for r in rows if r["split"] == split]
            series = _aggregate_series(cell, x_name, y_name)
            if series is None:
                continue
            log_n = next((r["log_n"] for r in cell if r.get("log_n") is not None), None)
            errors += [r["mi_xz_seed_error"] for r in cell if r["estimator"] == x_name and r.get("mi_xz_seed_error")]
            panels.append(
                Panel(
                    f"{title.format(beta=first.get('beta') or 0)} ({split})",
                    [series],
                    log_n=log_n,
                    h_y=first.get("h_y"),
                    own_scale=x_name in OWN_SCALE,
                )
            )
    seeds = max(r["n_seeds"] for r in rows)
    caption = (
        f"mean over {seeds} seed{'s' if seeds > 1 else ''}; error bars: standard deviation between seeds "
        f"(mean per-seed total error of I(X;Z): {np.mean(errors) if errors else float('nan'):.3g} nats)\n"
        f"{BRACKET_CAPTION}"
    )
    return panels, caption


TRAJECTORY_ESTIMATORS = {
    "mixture": "mixture",
    "binning": "binning of noisy Z",
    "binning_f": "binning of f(x)",
    "callback": "KL term",
}


def plot_trajectories(rows: list[dict], title: str) -> plt.Figure:
    """I(X;Z) and I(Y;Z) against the trained epochs (epoch 0, before training, would set the scale), one
    line per estimator with a band of +-1 standard deviation between seeds (mean per-seed total error with
    one seed): a compression phase is a fall of I(X;Z) after its peak, which the plane's axes, spanning
    0 to log N, hide. The KL term of information dropout is on its own axis (many times log N)."""
    rows = [r for r in rows if r["epoch"] > 0]
    kl = any(r["estimator"] == "callback" and r.get("mi_xz_mean") is not None for r in rows)
    quantities = [("xz", "I(X;Z) [nats]"), ("zy", "I(Y;Z) [nats]")] + ([("kl", "KL term [nats]")] if kl else [])
    fig, axes = plt.subplots(
        len(quantities),
        len(rf.SPLITS),
        figsize=(6.2 * len(rf.SPLITS), 3.4 * len(quantities)),
        squeeze=False,
        sharex=True,
    )
    colors = dict(zip(TRAJECTORY_ESTIMATORS, plt.get_cmap("tab10").colors))
    for col, split in enumerate(rf.SPLITS):
        cell = [r for r in rows if r["split"] == split]
        for row_i, (q, ylabel) in enumerate(quantities):
            ax = axes[row_i][col]
            names = ["callback"] if q == "kl" else [n for n in TRAJECTORY_ESTIMATORS if n != "callback" or q == "zy"]
            for name in names:
                key = "xz" if q == "kl" else q
                pts = [
                    (
                        r["epoch"],
                        r[f"mi_{key}_mean"],
                        r.get(f"mi_{key}_seed_sd") or r.get(f"mi_{key}_seed_error") or 0.0,
                    )
                    for r in cell
                    if r["estimator"] == name and r.get(f"mi_{key}_mean") is not None
                ]
                label = "H(Y) - cross-entropy" if name == "callback" and q == "zy" else TRAJECTORY_ESTIMATORS[name]
                _band(ax, pts, colors[name], label)
                if name == "mixture" and q == "xz":
                    _bracket(ax, [r for r in cell if r["estimator"] == name], pts, colors[name])
            ref = next(
                (
                    r.get("log_n") if q == "xz" else r.get("h_y")
                    for r in cell
                    if (r.get("log_n") if q == "xz" else r.get("h_y")) is not None
                ),
                None,
            )
            if ref is not None and q != "kl":
                ax.axhline(
                    ref,
                    color="tab:red" if q == "xz" else "tab:blue",
                    ls="--",
                    lw=1,
                    label=f"{'log N' if q == 'xz' else 'H(Y)'} = {ref:.2f}",
                )
            ax.set_ylabel(ylabel)
            ax.set_title(f"{ylabel.split(' [')[0]} ({split})")
            ax.grid(alpha=0.3)
            _legend_below(ax)
        axes[-1][col].set_xlabel("epoch")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def draw_comparison_figures(
    aggregates: list[dict],
    families: Sequence[tuple[str, list[str]]],
    folder: Path,
    *,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Per group the seed-aggregated planes (``plane_<group>``) and I(X;Z), I(Y;Z) against the epoch
    (``epochs_<group>``); per family of groups that differ in one flag, the mixture planes overlaid
    (``overlay_<flag>_<groups>``)."""
    written = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in aggregates:
        groups.setdefault((row["group"], row["layer"]), []).append(row)
    for (group, layer), rows in groups.items():
        panels, caption = _group_panels(rows)
        if panels:
            fig = plot_plane_grid(panels, ncols=2, suptitle=f"{group} (layer {layer})", caption=caption)
            written += save_figure(fig, folder / f"plane_{_slug(group)}_{layer}", formats)
            seeds = max(r["n_seeds"] for r in rows)
            band = "+-1 standard deviation between seeds" if seeds > 1 else "+-1 total error of the one seed"
            fig = plot_trajectories(
                rows, f"{group} (layer {layer}): mean over {seeds} seed{'s' if seeds > 1 else ''}; bands: {band}"
            )
            written += save_figure(fig, folder / f"epochs_{_slug(group)}_{layer}", formats)
    present = sorted({group for group, _ in groups})
    for flag, names in families:
        # (a group estimated with several N is aggregated per N: "<name> N=<n>", comparison.aggregate_rows)
        found = [g for name in names for g in present if g == name or g.startswith(f"{name} N=")]
        written += _overlay(groups, flag, found, folder, formats)
    return written


MAX_STEM = 120


def _overlay(groups: dict, flag: str, names: list[str], folder: Path, formats: Sequence[str]) -> list[Path]:
    colors = plt.get_cmap("tab10").colors
    panels = []
    for split in rf.SPLITS:
        series = []
        for i, name in enumerate(names):
            rows = [r for (g, _), rs in groups.items() if g == name for r in rs if r["split"] == split]
            found = _aggregate_series(rows, "mixture", "mixture", color=colors[i % len(colors)], label=name)
            if found is not None:
                series.append(found)
        if series:
            panels.append(Panel(f"mixture estimate ({split})", series))
    if not panels:
        return []
    fig = plot_plane_grid(
        panels,
        ncols=2,
        suptitle=f"groups differing in {flag}",
        caption="mean over seeds; error bars: standard deviation between seeds",
    )
    stem = f"overlay_{flag}_{_slug('_'.join(names))}"
    if len(stem) > MAX_STEM:  # (file names have a length limit; the figure's legend names the groups)
        stem = f"overlay_{flag}_{len(names)}_groups_{hashlib.sha1(stem.encode()).hexdigest()[:8]}"
    written = save_figure(fig, folder / stem, formats)
    fig = _overlay_epochs(
        groups,
        names,
        f"mixture I(X;Z) of groups differing in {flag}: mean over seeds, bands: +-1 standard deviation between seeds",
    )
    return written + save_figure(fig, folder / f"{stem}_epochs", formats)


def _overlay_epochs(groups: dict, names: list[str], title: str) -> plt.Figure:
    """The mixture I(X;Z) of several groups against the trained epochs, one panel per split."""
    fig, axes = plt.subplots(1, len(rf.SPLITS), figsize=(6.2 * len(rf.SPLITS), 3.6), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax, split in zip(axes[0], rf.SPLITS):
        log_n = None
        for i, name in enumerate(names):
            pts = [
                (r["epoch"], r["mi_xz_mean"], r.get("mi_xz_seed_sd") or 0.0)
                for (g, _), rs in groups.items()
                if g == name
                for r in rs
                if r["split"] == split
                and r["estimator"] == "mixture"
                and r["epoch"] > 0
                and r.get("mi_xz_mean") is not None
            ]
            if not pts:
                continue
            log_n = next(
                (r["log_n"] for (g, _), rs in groups.items() if g == name for r in rs if r.get("log_n")), log_n
            )
            _band(ax, pts, colors[i % len(colors)], name)
        if log_n is not None:
            ax.axhline(log_n, color="tab:red", ls="--", lw=1, label=f"log N = {log_n:.2f}")
        ax.set(title=f"mixture I(X;Z) ({split})", xlabel="epoch", ylabel="I(X;Z) [nats]")
        ax.grid(alpha=0.3)
        _legend_below(ax)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _band(ax: plt.Axes, pts: list[tuple[float, float, float]], color, label: str) -> None:
    """One mean line over the epochs with a band of +-1 spread, from (epoch, mean, spread) points."""
    if not pts:
        return
    e, m, sd = (np.array(v, dtype=float) for v in zip(*sorted(pts)))
    ax.plot(e, m, "-o", ms=2.5, lw=1, color=color, label=label)
    ax.fill_between(e, m - sd, m + sd, color=color, alpha=0.25, lw=0)


def _bracket(ax: plt.Axes, rows: list[dict], lower: list[tuple[float, float, float]], color) -> None:
    """The upper estimate of I(X;Z) as a dashed line, the bracket lower..upper shaded; a log axis where the
    upper estimate is far above the lower one."""
    upper = sorted((r["epoch"], r["mi_xz_upper_mean"]) for r in rows if r.get("mi_xz_upper_mean") is not None)
    if not upper or not lower:
        return
    e, u = (np.array(v, dtype=float) for v in zip(*upper))
    low = dict((p[0], p[1]) for p in lower)
    ax.plot(e, u, "--", lw=1, color=color, label="mixture: upper (leave-one-out)")
    ax.fill_between(e, [low.get(x, np.nan) for x in e], u, color=color, alpha=0.08, lw=0)
    if u.max() > LOG_AXIS_RATIO * max(p[1] for p in lower):
        ax.set_yscale("log")


def _legend_below(ax: plt.Axes) -> None:
    """The legend under the axes, where it cannot cover a curve near log N."""
    if ax.lines:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in text).strip("-")
