"""The figures as a reader sees them: every kind the toolkit writes is rendered (Agg) and checked with
matplotlib's renderer for text, legends or colour bars beyond the canvas, legends over each other, over a
colour bar or over a panel, empty panels and squeezed panels (``figure_layout.layout_problems``); the
panels are the ones with data; file names say what they hold; vector files are written when asked, at a
journal's column or page width. One tiny real run (scikit-learn's digits) and synthetic estimates."""

import math
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from matplotlib.ticker import MaxNLocator

import mi_mnist_dropout
from utils.analysis import bracket_figure, information_plane
from utils.analysis.comparison_figures import MAX_STEM, draw_comparison_figures, overlay_stem, plot_trajectories
from utils.analysis.figure_layout import COLUMN_WIDTH, PAGE_WIDTH, layout_problems
from utils.analysis.plane_drawing import Panel, PlaneSeries, plot_plane_grid
from utils.analysis.run_figures import (
    draw_run_figures,
    layer_panels,
    plot_convergence,
    plot_training_curves,
    read_history,
)
from utils.analysis.seed_aggregate import aggregate_rows
from utils.train_command import main

TINY = ["--dataset", "digits", "--epochs", "3", "--save-every", "1", "--train-subset", "300"]
TINY += ["--repr-subset", "200", "--metrics-subset", "100", "--batch-size", "16", "--lr", "0.01", "--no-analyze"]
HASH = re.compile(r"[0-9a-f]{8}")


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("fig") / "gaussian"
    assert main(TINY + ["--out", str(run)], defaults=mi_mnist_dropout.DEFAULTS, family="mnist") == 0
    information_plane.estimate_run(run, information_plane.Request(estimators=("mixture", "binning_f"), progress=False))
    return run


def _checked(fig):
    """The figure's layout problems (none expected), then close it."""
    problems = layout_problems(fig)
    plt.close(fig)
    return problems


def test_run_figures_are_clean_and_written_as_vector_files(real_run):
    from utils import run_folder

    data = run_folder.load_estimates(real_run)["estimates"]
    layer = run_folder.load_config(real_run)["layers"][0]
    panels = layer_panels(data, layer)
    assert {p.title.split("\n")[0] for p in panels} == {
        "mixture estimate",
        "binning of f(x)",
        "H(Y) - cross-entropy",
    }
    assert all("N = " in p.title for p in panels)
    fig = plot_plane_grid(panels, suptitle="t", caption="c")
    assert fig.get_figwidth() == PAGE_WIDTH and fig.get_figheight() < 9.0
    assert len([ax for ax in fig.axes if ax.get_visible()]) == len(panels) + 1  # the panels and one colour bar
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    assert _checked(fig) == []
    for split in ("train", "test"):
        fig = plot_convergence(data, "dropout", split)
        assert fig.get_figwidth() == COLUMN_WIDTH
        assert _checked(fig) == []
    assert _checked(plot_training_curves(read_history(real_run / "history.csv"), title="run")) == []
    written = draw_run_figures(real_run, formats=("png", "pdf"))
    assert {p.suffix for p in written} == {".png", ".pdf"} and len(written) == 2 * 4
    pdf = next(p for p in written if p.name == "information_plane.pdf").read_bytes()
    # vector: text as TrueType text, the data as paths; the one raster image is the colour bar's gradient
    assert pdf.startswith(b"%PDF") and b"/FontFile2" in pdf and pdf.count(b"/Subtype /Image") <= 1


def _entry(xz, zy, upper=None, saturation=0.2, log_n=math.log(1000)):
    return {
        "mi_xz": xz,
        "mi_zy": zy,
        "mi_xz_stderr": 0.01,
        "mi_xz_sampling_stderr": 0.01,
        "mi_zy_stderr": 0.005,
        "mi_xz_upper": upper,
        "saturation": saturation,
        "log_n": log_n,
        "h_y": math.log(10),
    }


def _estimates(names, splits=("train", "test"), epochs=range(0, 11, 2), kl=False):
    """Synthetic estimates: the lower estimate rises then falls, the upper one 2-20 times above it."""
    out = {}
    for name in names:
        out[name] = {"dropout": {}}
        for split in splits:
            by_epoch = {}
            for e in epochs:
                low = 0.001 if e == 0 else 4.0 + math.sin(e / 3)
                upper = (low * (2 + 18 * e / 10) if e else low) if name == "mixture" else None
                xz = 300.0 - 20 * e if name == "callback" and kl else low if name != "callback" else None
                by_epoch[str(e)] = _entry(xz, 2.0 + 0.02 * e, upper, saturation=0.6 if e > 6 else 0.2)
            out[name]["dropout"][split] = by_epoch
    return out


@pytest.mark.parametrize(
    "layer, names, kl",
    [
        ({"name": "dropout", "dropout": "gaussian", "p": 0.2}, ("mixture", "binning", "binning_f", "callback"), False),
        ({"name": "dropout", "dropout": "information", "beta": 3.0}, ("mixture", "binning", "callback"), True),
        ({"name": "dropout", "dropout": "bernoulli", "p": 0.2}, ("binning", "callback"), False),
    ],
)
def test_planes_of_every_dropout_kind_have_one_panel_per_estimator_and_split(layer, names, kl):
    panels = layer_panels(_estimates(names, kl=kl), layer)
    fig = plot_plane_grid(panels, suptitle="synthetic", caption="error bars: Monte Carlo")
    drawn = [ax for ax in fig.axes if ax.get_visible() and not hasattr(ax, "_colorbar")]
    assert len(drawn) == len(panels) and all(ax.collections for ax in drawn)
    assert _checked(fig) == []


def test_axes_span_the_trained_epochs_log_for_a_wide_bracket_and_epoch_0_at_the_edge():
    estimates = _estimates(("mixture", "binning"))
    panels = layer_panels(estimates, {"name": "dropout", "dropout": "gaussian", "p": 0.2})
    fig = plot_plane_grid(panels)
    mixture = [ax for ax in fig.axes if ax.get_title().startswith("mixture")]
    binning = [ax for ax in fig.axes if ax.get_title().startswith("binning")]
    assert len(mixture) == 2 and all(ax.get_xscale() == "log" for ax in mixture)
    assert mixture[0].get_xlim() == mixture[1].get_xlim()  # the same estimator shares its axis
    assert all(ax.get_xscale() == "linear" for ax in binning)
    lowest = min(4.0 + math.sin(e / 3) for e in range(2, 11, 2))  # the trained epochs, not epoch 0 (0.001)
    assert mixture[0].get_xlim()[0] == pytest.approx(lowest / 1.12)
    assert any(t.get_text() == "epoch 0" for t in mixture[0].texts)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("upper" in label for label in labels) and any("limited by N" in label for label in labels)
    assert sum(label.startswith("log N") for label in labels) == 1 and sum(label == "H(Y)" for label in labels) == 1
    plt.close(fig)


def _aggregates(groups, splits=("train", "test"), seeds=3):
    rows = []
    for g, (group, p) in enumerate(groups):
        for split in splits:
            for name in ("mixture", "binning_f", "callback"):
                for e in range(0, 21, 4):
                    for seed in range(seeds):
                        low = 0.01 if e == 0 else 5.0 + g - 0.05 * e + 0.1 * seed
                        rows.append(
                            {
                                "run": f"{group}-{seed}",
                                "group": group,
                                "dataset": "digits",
                                "net": "fc",
                                "dropout": "gaussian",
                                "p": p,
                                "beta": None,
                                "epochs": 20,
                                "seed": seed,
                                "layer": "dropout",
                                "split": split,
                                "epoch": e,
                                "estimator": name,
                                "mi_xz": None if name == "callback" else low,
                                "mi_xz_stderr": 0.01,
                                "mi_xz_upper": 3 * low if name == "mixture" else None,
                                "mi_zy": 2.0 + 0.01 * e,
                                "mi_zy_stderr": 0.01,
                                "saturation": 0.3,
                                "n_inputs": None if name == "callback" else 1000,
                                "log_n": None if name == "callback" else math.log(1000),
                                "h_y": math.log(10),
                            }
                        )
    return aggregate_rows(rows)


def test_comparison_figures_are_clean_and_named_after_their_groups(tmp_path, monkeypatch):
    from utils.analysis import comparison_figures

    checked = {}

    def save(fig, stem, formats=("png",), **kwargs):
        checked[Path(stem).name] = layout_problems(fig)
        plt.close(fig)
        return [Path(f"{stem}.{f}") for f in formats]

    monkeypatch.setattr(comparison_figures, "save_figure", save)
    names = [f"fc gaussian p={p} lr=0.0{i + 1}" for i, p in enumerate((0.05, 0.1, 0.2))]
    groups = [(name, p) for name, p in zip(names, (0.05, 0.1, 0.2))]
    aggregates = _aggregates(groups) + _aggregates([("fc gaussian p=0.8 lr=0.06", 0.8)], splits=("train",), seeds=1)
    written = draw_comparison_figures(aggregates, [("p", names + ["fc gaussian p=0.8 lr=0.06"])], tmp_path)
    assert all(problems == [] for problems in checked.values()), checked
    stems = {p.stem for p in written}
    assert "plane_fc-gaussian-p-0.05-lr-0.01_dropout" in stems and "epochs_fc-gaussian-p-0.8-lr-0.06_dropout" in stems
    overlays = sorted(s for s in stems if s.startswith("overlay_"))
    assert len(overlays) == 2 and all(len(s) <= MAX_STEM and not HASH.search(s) for s in overlays)
    assert overlays[0].startswith("overlay_p_fc-gaussian_p-0.05-lr-0.01_p-0.1-lr-0.02")


def test_a_split_without_data_gets_no_panel_and_captions_say_what_the_error_bars_are():
    train_only = _aggregates([("fc gaussian p=0.5", 0.5)], splits=("train",), seeds=1)
    fig = plot_trajectories(train_only, "one seed")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 2 and fig.get_figwidth() < PAGE_WIDTH  # I(X;Z), I(Y;Z) of the training split
    assert "Monte Carlo and input-sampling error" in fig.get_suptitle()
    assert _checked(fig) == []
    fig = plot_trajectories(_aggregates([("fc gaussian p=0.5", 0.5)]), "three seeds")
    assert "\u00b11 s.d. between 3 seeds" in fig.get_suptitle()
    plt.close(fig)


def test_overlay_stems_are_guessable_and_bounded():
    assert overlay_stem("p", ["fc gaussian p=0.1", "fc gaussian p=0.3"]) == "overlay_p_fc-gaussian_p-0.1_p-0.3"
    many = [f"lenet information beta={b} alpha_max=0.7" for b in range(40)]
    stem = overlay_stem("beta", many)
    assert len(stem) <= MAX_STEM and stem.endswith("_40-groups") and "beta-0_to_beta-39" in stem


def test_the_check_catches_what_a_reader_would_see():
    series = PlaneSeries([1, 2, 3], [1.0, 2.0, 3.0], [0.5, 1.0, 1.5], mi_xz_upper=[2.0, 5.0, 9.0])
    fig = plot_plane_grid([Panel("p", [series], log_n=3.5, h_y=2.3)])
    assert _checked(fig) == []
    fig = plot_plane_grid([Panel("p", [series], log_n=3.5, h_y=2.3)])
    fig.legends[0].set_bbox_to_anchor((0.5, -0.3), transform=fig.transFigure)  # moved below the canvas
    assert any("legend extends beyond the canvas" in p for p in _checked(fig))
    fig, (a, b) = plt.subplots(1, 2, figsize=(4, 2))
    a.plot([0, 1], label="x")
    a.legend(loc="center")
    box = a.get_position()
    fig.legend(*a.get_legend_handles_labels(), loc="center", bbox_to_anchor=((box.x0 + box.x1) / 2, 0.5))
    problems = _checked(fig)
    assert any("a legend and a legend overlap" in p for p in problems)
    assert any("covers the panel" in p for p in problems) and any("is empty" in p for p in problems)
    fig, (a, b) = plt.subplots(1, 2, figsize=(2.5, 1.5), layout="constrained")
    a.plot([9.2001, 9.2203], [0, 1])
    a.xaxis.set_major_locator(MaxNLocator(8))
    b.plot([0, 1])
    a.set_title("a rather long title here")
    b.set_title("another long title")
    problems = _checked(fig)
    assert any("tick labels overlap" in p for p in problems) and "two panel titles or axis labels overlap" in problems
    fig, axes = plt.subplots(1, 12, figsize=(6, 2))
    for ax in axes:
        ax.plot([0, 1])
    assert any("squeezed" in p for p in _checked(fig))


def test_bracket_figure_from_a_table(tmp_path, capsys):
    rows = []
    for run, fall in (("wide", 0.0), ("fall", 1.0)):
        for e in (0, 8, 16, 24):
            low = 0.01 if e == 0 else 8.0 - fall * e / 16
            rows.append(
                {
                    "run": run,
                    "group": run,
                    "split": "train",
                    "epoch": e,
                    "estimator": "mixture",
                    "mi_xz": low,
                    "mi_xz_stderr": 0.01,
                    "mi_xz_upper": low * (2.5 if run == "wide" else 1.1),
                    "mi_xz_upper_stderr": 0.02,
                    "mi_zy": 2.2 + 0.01 * e,
                    "saturation": 0.3,
                    "n_inputs": 60000,
                    "log_n": math.log(60000),
                    "h_y": math.log(10),
                }
            )
    csv = tmp_path / "estimates.csv"
    from utils.analysis.estimate_table import ESTIMATE_COLUMNS, csv_text

    csv.write_text(csv_text(rows, ("run", "group", *ESTIMATE_COLUMNS)))
    out = tmp_path / "figures" / "headline"
    argv = ["--case", str(csv), "wide", "train", "wide", "--case", str(csv), "fall", "train", "a fall"]
    assert bracket_figure.main([*argv, "--out", str(out), "--formats", "png,pdf"]) == 0
    assert out.with_suffix(".png").is_file() and out.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    cases = [(label, bracket_figure.run_rows(rows, run, "train")) for run, label in (("wide", "w"), ("fall", "f"))]
    fig = bracket_figure.plot_bracket_comparison(cases, "t")
    planes = [ax for ax in fig.axes if ax.get_title()]
    assert len(planes) == 2 and planes[0].get_xlim() == planes[1].get_xlim() and planes[0].get_xscale() == "log"
    assert _checked(fig) == []
    capsys.readouterr()
    assert bracket_figure.main(["--case", str(csv), "nope", "train", "x", "--out", str(out)]) == 2
    assert "no mixture rows for run 'nope'" in capsys.readouterr().err


def test_figure_sizes_fit_a_column_or_a_page():
    one = plot_plane_grid([Panel("p", [PlaneSeries([1, 2], [1.0, 2.0], [0.5, 1.0])])])
    assert one.get_figwidth() == COLUMN_WIDTH
    plt.close(one)
    many = [Panel(f"p{i}", [PlaneSeries([1, 2], [1.0, 2.0 + i], [0.5, 1.0])]) for i in range(14)]
    fig = plot_plane_grid(many)
    assert fig.get_figwidth() == PAGE_WIDTH and fig.get_figheight() <= 9.0
    assert _checked(fig) == []
