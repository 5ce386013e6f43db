"""The figures of a run folder: information planes per dropout layer and the training curves.

Which planes are drawn depends on the dropout kind (Adilova, Geiger & Fischer, ICLR 2023):
- Gaussian dropout: the mixture estimate of I(X;Z) against each I(Y;Z) estimate (mixture,
  H(Y) - cross-entropy, EDGE, KSG), the Gaussian upper bound, and binning.
- Information dropout: the paper's KL / cross-entropy plane, the mixture estimate in log space, binning.
- Bernoulli dropout: I(X;Z) is infinite; binning and the cross-entropy bound only, with a note.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from utils import run_folder as rf
from utils.plotting import Panel, PlaneSeries, plot_plane_grid, plot_training_curves, read_history, save_figure

# (estimator giving I(X;Z), estimator giving I(Y;Z), panel title) in drawing order.
PLANES = {
    "gaussian": [("mixture", "mixture", "dropout mixture estimate"),
                 ("mixture", "callback", "mixture I(X;Z), H(Y) - cross-entropy"),
                 ("mixture", "edge", "mixture I(X;Z), EDGE I(Y;Z)"),
                 ("mixture", "ksg", "mixture I(X;Z), KSG I(Y;Z)"),
                 ("upper_bound", "mixture", "Gaussian upper bound I(X;Z), mixture I(Y;Z)"),
                 ("binning", "binning", "binning")],
    "information": [("callback", "callback", "KL term, H(Y) - cross-entropy"),
                    ("mixture", "mixture", "mixture estimate (log space)"),
                    ("mixture", "edge", "mixture I(X;Z), EDGE I(Y;Z)"),
                    ("mixture", "ksg", "mixture I(X;Z), KSG I(Y;Z)"),
                    ("binning", "binning", "binning")],
    "bernoulli": [("binning", "binning", "binning"),
                  ("binning", "callback", "binning I(X;Z), H(Y) - cross-entropy")],
}
BERNOULLI_NOTE = "Bernoulli dropout: I(X;Z) is infinite;\nonly binning and the cross-entropy bound are shown"


def _series(x_entries: dict, y_entries: dict, keep: Callable[[int], bool]
            ) -> tuple[PlaneSeries, float | None, float | None] | None:
    epochs = sorted((int(e) for e in set(x_entries) & set(y_entries) if keep(int(e))
                     and x_entries[e].get("mi_xz") is not None and y_entries[e].get("mi_zy") is not None))
    if not epochs:
        return None
    xs = [x_entries[str(e)] for e in epochs]
    ys = [y_entries[str(e)] for e in epochs]
    series = PlaneSeries(epochs, [x["mi_xz"] for x in xs], [y["mi_zy"] for y in ys],
                         [x.get("mi_xz_stderr") for x in xs], [y.get("mi_zy_stderr") for y in ys])
    return series, xs[-1].get("log_n"), ys[-1].get("h_y")


def layer_panels(estimates: dict[str, Any], layer: dict, splits: Sequence[str] = rf.SPLITS,
                 epochs: Callable[[int], bool] | None = None) -> list[Panel]:
    """Information-plane panels for one ``config.json`` layer entry: planes x splits (``epochs``
    selects the epochs drawn; default all)."""
    panels = []
    for x_name, y_name, title in PLANES[layer["dropout"]]:
        for split in splits:
            x_entries = estimates.get(x_name, {}).get(layer["name"], {}).get(split, {})
            y_entries = estimates.get(y_name, {}).get(layer["name"], {}).get(split, {})
            found = _series(x_entries, y_entries, epochs or (lambda e: True))
            if found is None:
                continue
            series, log_n, h_y = found
            note = BERNOULLI_NOTE if layer["dropout"] == "bernoulli" and not panels else None
            panels.append(Panel(f"{title} ({split})", [series], log_n=log_n, h_y=h_y, note=note))
    return panels


def draw_run_figures(run_dir: str | Path, *, formats: Sequence[str] = ("png",),
                     estimates: dict[str, Any] | None = None, epochs: Callable[[int], bool] | None = None,
                     suffix: str = "") -> list[Path]:
    """Draw ``RUN_DIR/figures/information_plane[_<layer>]<suffix>.<fmt>`` and ``training_curves.<fmt>``.

    ``estimates`` defaults to the content of ``IP/estimates.json``; ``epochs`` selects the epochs
    drawn (e.g. to leave out epoch 0, which can set the scale); returns the written paths.
    """
    from mi_estimators.information_plane import load_estimates

    run_dir = Path(run_dir)
    config = rf.load_config(run_dir)
    estimates = (estimates or load_estimates(run_dir))["estimates"]
    figures = run_dir / "figures"
    several = len(config["layers"]) > 1
    written = []
    for layer in config["layers"]:
        panels = layer_panels(estimates, layer, epochs=epochs)
        if not panels:
            continue
        name = "information_plane" + (f"_{layer['name']}" if several else "") + suffix
        title = (f"{run_dir.name}: layer {layer['name']} ({layer['dropout']} dropout"
                 + (f", p = {layer['p']})" if layer.get("p") is not None else ")"))
        written += save_figure(plot_plane_grid(panels, ncols=2, suptitle=title), figures / name, formats)
    history = run_dir / rf.HISTORY_NAME
    if history.exists():
        written += save_figure(plot_training_curves(read_history(history), title=run_dir.name),
                               figures / "training_curves", formats)
    if not written:
        raise ValueError(f"nothing to draw in {run_dir}: run `python -m mi_estimators.information_plane "
                         f"{run_dir}` first")
    return written
