"""Which figures a run folder gets, in ``RUN_DIR/figures/``: the information planes of each dropout layer,
the convergence of I(X;Z) in the number of inputs, and the training curves.

Which planes are drawn depends on the dropout kind (Adilova, Geiger & Fischer, ICLR 2023; :data:`PLANES`):
- Gaussian dropout: the mixture estimate of I(X;Z) against each I(Y;Z) estimate (mixture,
  H(Y) - cross-entropy, EDGE, KSG, all on the same noisy Z), the Gaussian upper bound on its own
  scale, binning of the noisy Z and of the noise-free f(x).
- Information dropout: the paper's KL / cross-entropy plane (with beta), the mixture estimate in log
  space, EDGE, KSG, binning.
- Bernoulli dropout: I(X;Z) is infinite; binning of f(x) and the cross-entropy bound only.
Hollow points are limited by the number of inputs (saturation dI/dlog N > 0.5, McAllester & Stratos
2020); whiskers run from the lower (mixture) to the upper (leave-one-out) estimate of I(X;Z). How one
plane is drawn on its axes: :mod:`utils.analysis.plane_drawing`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mi_estimators.checks import InputError
from utils import run_folder
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
from utils.analysis.plane_drawing import LOG_N_COLOR, Panel, PlaneSeries, plot_plane_grid

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


def panel_title(title: str, split: str, log_n: float | None, beta: float | None = None) -> str:
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
    splits: Sequence[str] = run_folder.SPLITS,
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
                    panel_title(title, split, log_n, layer.get("beta")) + (" (warned)" if warned else ""),
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
        subsets = entries[str(epoch)]["convergence"]
        ax.errorbar(
            [s["log_n"] for s in subsets],
            [s["mi_xz"] for s in subsets],
            yerr=[s["mi_xz_stderr"] for s in subsets],
            color=cmap(norm(epoch)),
            marker="o",
            ms=2.5,
            lw=0.8,
        )
    top = max(s["log_n"] for e in chosen for s in entries[str(e)]["convergence"])
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
    config = run_folder.load_config(run_dir)
    found: Mapping[str, Any] = (estimates or run_folder.load_estimates(run_dir))["estimates"]
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
        for split in run_folder.SPLITS:
            if any(
                v.get("convergence") for v in found.get("mixture", {}).get(layer["name"], {}).get(split, {}).values()
            ):
                written += save_figure(
                    plot_convergence(found, layer["name"], split, epochs),
                    figures / f"convergence_{split}{tag}{suffix}",
                    formats,
                )
    history = run_dir / run_folder.HISTORY_NAME
    if history.exists():
        written += save_figure(
            plot_training_curves(read_history(history), title=run_dir.name), figures / "training_curves", formats
        )
    if not written:
        raise InputError(
            f"nothing to draw in {run_dir}: run `python -m utils.analysis.information_plane {run_dir}` first"
        )
    return written


def read_history(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of ``history.csv`` as float arrays (NaN for an empty cell), read and checked by
    :func:`utils.run_folder.load_history`."""
    rows = list(run_folder.load_history(path).values())
    return {k: np.array([float(r[k]) if r.get(k) else np.nan for r in rows]) for k in rows[0]}


@styled
def plot_training_curves(history: dict[str, np.ndarray], title: str | None = None) -> Figure:
    """Loss and accuracy per epoch, train and test, from ``history.csv`` columns (``epoch`` = completed
    epochs, ``loss``, ``accuracy``, ``test_loss``, ``test_accuracy``), one legend under both panels."""
    epoch = history["epoch"]
    fig = new_figure(PAGE_WIDTH, 2.6)
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        for prefix, label, color in (("", "train", "tab:blue"), ("test_", "test", "tab:orange")):
            if prefix + key in history:
                ax.plot(epoch, history[prefix + key], label=label, color=color)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    title_and_caption(fig, title, None)
    figure_legend(fig, *unique_entries([ax_loss, ax_acc]))
    return fig
