"""From run folders to information planes: the estimation command, its cache and fingerprints, per-split
noise draws, both errors and saturation in every entry, the comparison of runs, the figures, the two
notebooks run headless, and bad run folders. Tiny trainings on scikit-learn's bundled digits."""

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

import mi_mnist_dropout
from utils import run_folder
from utils.analysis import estimation, information_plane, registry
from utils.analysis.comparison_figures import plot_trajectories
from utils.analysis.estimate_table import read_csv
from utils.analysis.plane_drawing import Panel, PlaneSeries, plot_plane_grid
from utils.analysis.registry import ESTIMATORS
from utils.analysis.run_figures import draw_run_figures, layer_panels, plot_convergence
from utils.cli import REPORT
from utils.run_folder_schema import iter_entries
from utils.train_command import main

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--dataset",
    "digits",
    "--epochs",
    "3",
    "--save-every",
    "1",
    "--train-subset",
    "300",
    "--repr-subset",
    "200",
    "--metrics-subset",
    "100",
    "--batch-size",
    "16",
    "--lr",
    "0.01",
    "--no-analyze",
]
LOG10 = math.log(10)
QUIET = information_plane.Request(progress=False)


def _train(out: Path, *extra: str) -> Path:
    assert main(TINY + ["--out", str(out), *extra], defaults=mi_mnist_dropout.DEFAULTS, family="mnist") == 0
    return out


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("ip") / "gaussian")


@pytest.fixture(scope="module")
def information_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("ip") / "information", "--dropout", "information")


@pytest.fixture(scope="module")
def bernoulli_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("ip") / "bernoulli", "--dropout", "bernoulli")


def _entries(data, name):
    for (_, layer, split, epoch), entry in iter_entries({name: data["estimates"].get(name, {})}):
        yield layer, split, epoch, entry


def _check_ranges(data, name, n_by_split):
    """Every I(X;Z) in [0, log N] and every I(Y;Z) in [0, log 10], up to 4 total standard errors."""
    seen = 0
    for _, split, _, entry in _entries(data, name):
        xz, zy = entry["mi_xz"], entry["mi_zy"]
        tol_xz = 4 * math.hypot(entry["mi_xz_stderr"] or 0, entry["mi_xz_sampling_stderr"] or 0) + 1e-9
        tol_zy = 4 * math.hypot(entry["mi_zy_stderr"] or 0, entry["mi_zy_sampling_stderr"] or 0) + 1e-9
        assert -tol_xz <= xz <= math.log(n_by_split[split]) + tol_xz, (name, split, entry)
        assert -tol_zy <= zy <= LOG10 + 1e-9, (name, split, entry)
        seen += 1
    return seen


def _n(run):
    config = run_folder.load_config(run)
    return {"train": config["dataset"]["n_repr_train"], "test": config["dataset"]["n_repr_test"]}


def test_estimation_fills_cache_and_second_run_computes_nothing(gaussian_run, monkeypatch):
    data = information_plane.estimate_run(gaussian_run, QUIET)
    assert run_folder.saved_epochs(gaussian_run, "train") == [0, 1, 2, 3]
    assert _check_ranges(data, "mixture", _n(gaussian_run)) == 8
    assert _check_ranges(data, "binning_f", _n(gaussian_run)) == 8
    entry = data["estimates"]["mixture"]["dropout"]["test"]["3"]
    assert entry["settings"]["draws"] == information_plane.DEFAULT_DRAWS["test"]
    assert entry["n_inputs"] == _n(gaussian_run)["test"] and entry["log_n"] == pytest.approx(
        math.log(entry["n_inputs"])
    )
    for key in ("mi_xz_stderr", "mi_zy_stderr"):
        assert entry[key] > 0, key
    for key in ("mi_xz_sampling_stderr", "mi_zy_sampling_stderr"):  # 0 where the input spread is all Monte Carlo
        assert entry[key] >= 0 and any(e[key] > 0 for _, _, _, e in _entries(data, "mixture")), key
    assert entry["saturation"] is not None and [p["n"] for p in entry["convergence"]][-1] == entry["n_inputs"]
    assert entry["settings"]["files"]["f"]["size"] > 0 and "blake2b" in entry["settings"]["labels"]
    # the noise level is the one config.json records, not a default
    assert entry["params"]["noise_std"] == pytest.approx(math.sqrt(0.2 / 0.8))
    assert entry["settings"]["layer"]["noise_std"] == pytest.approx(math.sqrt(0.2 / 0.8))
    # the callback's surrogates are always there; Gaussian dropout has no KL term
    assert all(e["mi_xz"] is None and e["mi_zy"] is not None for _, _, _, e in _entries(data, "callback"))

    path = run_folder.estimates_path(gaussian_run)
    before = path.read_bytes(), path.stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("the second run must compute nothing")

    for name in information_plane.DEFAULT_ESTIMATORS:
        monkeypatch.setitem(ESTIMATORS, name, dataclasses.replace(ESTIMATORS[name], run=refuse))
    assert information_plane.estimate_run(gaussian_run, QUIET) == data
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_noise_draws_are_set_per_split(gaussian_run):
    before = information_plane.estimate_run(gaussian_run, QUIET)["estimates"]["mixture"]["dropout"]
    request = information_plane.Request(
        estimators=("mixture",), draws=information_plane.draws_arg("train=2"), progress=False
    )
    after = information_plane.estimate_run(gaussian_run, request)["estimates"]["mixture"]["dropout"]
    assert after["test"] == before["test"]  # untouched
    assert all(e["settings"]["draws"] == 2 for e in after["train"].values())
    assert all(e["params"]["pilot_inputs"] == 0 for e in after["train"].values())
    assert all(
        e["params"]["draws"] == 2 and e["params"]["points"] == 2 * e["n_inputs"] for e in after["train"].values()
    )
    assert information_plane.draws_arg("4") == (("train", 4), ("test", 4))
    assert information_plane.draws_arg("test=3") == (("train", information_plane.DEFAULT_DRAWS["train"]), ("test", 3))
    for bad in ("val=2", "train=0", "train=x", "two", "100000", f"test={information_plane.MAX_DRAWS + 1}"):
        with pytest.raises((ValueError, Exception), match=r"--draws|must be an integer"):
            information_plane.draws_arg(bad)


def test_changed_representation_file_is_recomputed_and_reported(tmp_path, capsys):
    run = _fake_run(tmp_path, ["dropout"])
    request = information_plane.Request(estimators=("mixture",), progress=False)
    first = information_plane.estimate_run(run, request)["estimates"]["mixture"]["dropout"]["test"]["1"]
    path = run_folder.representation_path(run, "test", 1)
    run_folder.save_npy(path, 2.0 * run_folder.load_npy(path) + 0.5)
    capsys.readouterr()
    second = information_plane.estimate_run(run, request)["estimates"]["mixture"]["dropout"]["test"]["1"]
    assert second["settings"]["files"] != first["settings"]["files"] and second["mi_xz"] != first["mi_xz"]
    assert "recomputing 1 entries" in capsys.readouterr().out and "mixture/dropout/test/1" not in ""
    broken = run_folder.load_npy(path)
    broken[3, 1] = np.nan
    run_folder.save_npy(path, broken)
    assert information_plane.main([str(run), "--estimators", "mixture", "--no-plots"]) == 2
    assert "NaN" in capsys.readouterr().err


def test_cli_writes_figures_and_table(gaussian_run):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "utils.analysis.information_plane",
            str(gaussian_run),
            "--estimators",
            "mixture,binning,binning_f,edge,upper_bound",
            "--formats",
            "png,pdf",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "mixture" in proc.stdout and "edge" in proc.stdout
    for name in ("information_plane.png", "information_plane.pdf", "training_curves.png", "convergence_train.png"):
        assert (gaussian_run / "figures" / name).stat().st_size > 10_000
    assert f"figure: {gaussian_run / 'figures' / 'information_plane.png'}" in proc.stdout
    edge = information_plane.estimate_run(
        gaussian_run, information_plane.Request(estimators=("edge",), progress=False)
    )["estimates"]["edge"]
    assert all(e["sees"] == "noisy Z" and e["mi_xz"] is None for e in edge["dropout"]["test"].values())


def test_comparison_of_two_seeds_writes_csv_and_aggregate_planes(gaussian_run, tmp_path):
    runs = [gaussian_run, _train(tmp_path / "seed1", "--seed", "1")]
    out = tmp_path / "compare"
    assert information_plane.main([*map(str, runs), "--estimators", "mixture", "--out", str(out)]) == 0
    rows = read_csv(out / "estimates.csv")
    assert {r["run"] for r in rows} == {"gaussian", "seed1"} and {r["seed"] for r in rows} == {0, 1}
    mixture = [r for r in rows if r["estimator"] == "mixture"]
    assert len(mixture) == 2 * 2 * 4  # runs x splits x epochs
    for r in mixture:
        assert r["mi_xz_sampling_stderr"] is not None and r["saturation"] is not None and r["dataset"] == "digits"
    stored = run_folder.load_estimates(gaussian_run)["estimates"]["mixture"]["dropout"]["test"]["3"]["convergence"]
    row = next(r for r in mixture if r["run"] == "gaussian" and r["split"] == "test" and r["epoch"] == 3)
    assert [row["mi_xz_sixteenth"], row["mi_xz_quarter"], row["mi_xz"]] == pytest.approx([c["mi_xz"] for c in stored])
    assert all(r["mi_xz_quarter"] is None for r in rows if r["estimator"] == "callback")
    assert len({r["group"] for r in rows}) == 1  # differ only in the seed
    aggregate = read_csv(out / "aggregate.csv")
    cell = next(r for r in aggregate if r["estimator"] == "mixture" and r["split"] == "test" and r["epoch"] == 3)
    values = [r["mi_xz"] for r in mixture if r["split"] == "test" and r["epoch"] == 3]
    assert cell["n_seeds"] == 2 and cell["mi_xz_mean"] == pytest.approx(np.mean(values))
    assert cell["mi_xz_seed_sd"] == pytest.approx(np.std(values, ddof=1))
    figures = {p.name for p in (out / "figures").iterdir()}
    assert any(n.startswith("plane_fc-gaussian-p-0.2") for n in figures)
    assert any(n.startswith("epochs_fc-gaussian-p-0.2") for n in figures)
    single = tmp_path / "single"
    assert information_plane.main([str(runs[0]), "--estimators", "mixture", "--out", str(single), "--no-plots"]) == 0
    assert {r["run"] for r in read_csv(single / "estimates.csv")} == {"gaussian"}


def test_groups_differing_in_one_setting_are_overlaid(tmp_path):
    runs = [_fake_run(tmp_path / f"p{p}", ["dropout"], p=p, seed=seed) for p in (0.1, 0.3) for seed in (0, 1)]
    written = information_plane.analyze_runs(
        runs, out=tmp_path / "sweep", request=information_plane.Request(estimators=("mixture",), progress=False)
    )
    overlays = [p for p in written if p.name.startswith("overlay_p_")]
    assert len(overlays) == 2 and all("p-0.1" in o.name and "p-0.3" in o.name for o in overlays)
    assert sum(o.stem.endswith("_epochs") for o in overlays) == 1  # the plane and I(X;Z) per epoch
    assert {r["n_seeds"] for r in read_csv(tmp_path / "sweep" / "aggregate.csv")} == {2}


def test_trajectories_leave_out_epoch_0_and_draw_the_kl_term_only_where_there_is_one():
    def row(estimator, epoch, xz, dropout="gaussian"):
        return {
            "estimator": estimator,
            "split": "train",
            "epoch": epoch,
            "mi_xz_mean": xz,
            "mi_zy_mean": 1.0,
            "mi_xz_seed_sd": 0.1,
            "mi_zy_seed_sd": 0.1,
            "log_n": 5.0,
            "h_y": 2.3,
            "dropout": dropout,
        }

    gaussian = [row("mixture", e, 4.0 + e) for e in (0, 1, 2)] + [row("callback", e, None) for e in (0, 1, 2)]
    fig = plot_trajectories(gaussian, "g")
    assert len(fig.axes) == 2  # I(X;Z), I(Y;Z) of the one split with data (no empty test column)
    assert list(fig.axes[0].lines[0].get_xdata()) == [1, 2]
    information = gaussian[:3] + [row("callback", e, 100.0 - e, "information") for e in (0, 1, 2)]
    assert len(plot_trajectories(information, "i").axes) == 3
    plt.close("all")


def test_information_dropout_run(information_run):
    data = information_plane.estimate_run(information_run, QUIET)
    assert _check_ranges(data, "mixture", _n(information_run)) == 8
    kl = [e["mi_xz"] for _, _, _, e in _entries(data, "callback")]
    assert kl and all(v > 0 for v in kl)  # the KL term is the I(X;Z) surrogate of information dropout
    layer = run_folder.load_config(information_run)["layers"][0]
    titles = [p.title for p in layer_panels(data["estimates"], layer)]
    assert any(t.startswith("KL term (beta = 3)") for t in titles)
    kl_panel = next(p for p in layer_panels(data["estimates"], layer) if p.title.startswith("KL"))
    assert kl_panel.log_n == pytest.approx(math.log(200))
    assert draw_run_figures(information_run)


def test_bernoulli_run_says_infinite_and_still_plots_binning(bernoulli_run):
    data = information_plane.estimate_run(bernoulli_run, QUIET)
    skipped = [e for _, _, _, e in _entries(data, "mixture")]
    assert skipped and all("infinite" in e["skipped"] for e in skipped)
    assert _check_ranges(data, "binning", _n(bernoulli_run)) == 8
    paths = draw_run_figures(bernoulli_run)
    assert bernoulli_run / "figures" / "information_plane.png" in paths


def test_figures_keep_legends_off_the_data_and_show_integer_epochs():
    series = PlaneSeries(
        [0, 1, 2, 3],
        [0.1, 2.0, 3.0, 3.4],
        [0.2, 1.0, 1.5, 1.6],
        [0.01] * 4,
        [0.02] * 4,
        saturated=[False, False, True, True],
    )
    bound = PlaneSeries([0, 1], [0.5, 130.0], [0.1, 1.0])
    fig = plot_plane_grid([Panel("p", [series], log_n=3.5, h_y=2.3), Panel("ub", [bound], log_n=3.5, own_scale=True)])
    fig.canvas.draw()
    ax, ub = fig.axes[0], fig.axes[1]
    legend = fig.legends[0].get_window_extent()  # one legend for the figure
    assert legend.y1 <= min(a.get_window_extent().y0 for a in fig.axes)  # below the panels, never on the points
    assert any("limited by N" in t.get_text() for t in fig.legends[0].get_texts())
    assert ax.get_xlim()[0] > 1.0  # set by the trained epochs, not by epoch 0 at 0.1
    assert not any(line.get_xdata()[0] == 3.5 for line in ub.get_lines() if len(line.get_xdata()))
    ticks = [float(t.get_text().replace("\N{MINUS SIGN}", "-")) for t in fig.axes[-1].get_yticklabels() if t.get_text()]
    assert ticks and all(t.is_integer() for t in ticks)
    plt.close(fig)


def test_convergence_figure(gaussian_run):
    data = information_plane.estimate_run(gaussian_run, QUIET)
    fig = plot_convergence(data["estimates"], "dropout", "test")
    assert len(fig.axes[0].lines) >= 4
    plt.close(fig)
    with pytest.raises(ValueError, match="no convergence"):
        plot_convergence(data["estimates"], "nope", "test")


def test_mnist_script_analyze_ends_with_a_figure(tmp_path):
    out = tmp_path / "analyzed"
    argv = TINY + ["--epochs", "2", "--out", str(out), "--analyze"]
    proc = subprocess.run(
        [sys.executable, "mi_mnist_dropout.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    figure = out / "figures" / "information_plane.png"
    assert figure.is_file() and f"figure: {figure}" in proc.stdout


@pytest.mark.parametrize("notebook", ["mnist_draw_IP.ipynb", "cifar10_draw_IP.ipynb"])
def test_notebooks_run_headless_with_paths_relative_to_the_repository(
    notebook, gaussian_run, information_run, tmp_path
):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    # the MNIST notebook as in the paper: a Gaussian-dropout and an information-dropout run together,
    # copied into one folder: the comparison goes to their common parent, here, not to the work tree
    runs = [
        shutil.copytree(run, tmp_path / run.name)
        for run in ([gaussian_run, information_run] if notebook.startswith("mnist") else [information_run])
    ]
    nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    relative = [os.path.relpath(run, ROOT) for run in runs]
    os.environ["RUN_DIR"] = os.pathsep.join(relative)
    try:
        NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
        ).execute()
    finally:
        del os.environ["RUN_DIR"]
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2 * len(runs)  # per run at least the information planes and the training curves
    for run in runs:
        assert _check_ranges(run_folder.load_estimates(run), "mixture", _n(run)) == 8
        assert (run / "figures" / "information_plane.png").is_file()


def test_a_notebook_shows_bad_input_as_one_line(tmp_path, monkeypatch):
    """An InputError inside the notebook's cell is its one ``error:`` line in the cell's output: no traceback,
    and the notebook runs to its end."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / "mnist_draw_IP.ipynb", as_version=4)
    monkeypatch.setenv("RUN_DIR", str(tmp_path / "no-such-run"))
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [c for c in nb.cells if c.cell_type == "code"][-1].outputs  # the first may hold tqdm's import notice
    assert [o["output_type"] for o in outputs] == ["stream"] and outputs[0]["name"] == "stderr"
    assert outputs[0]["text"].startswith("error: RUN_DIR: no run folder") and outputs[0]["text"].count("\n") == 1


def test_notebook_run_folders_that_do_not_exist_are_named_before_any_work(tmp_path, monkeypatch):
    (tmp_path / "runs" / "a").mkdir(parents=True)
    monkeypatch.delenv("RUN_DIR", raising=False)
    assert information_plane.notebook_runs(tmp_path, default=["runs/a"]) == [tmp_path / "runs" / "a"]
    # the defaults that exist are drawn: the README's digits run right after its first command
    assert information_plane.notebook_runs(tmp_path, default=["runs/b", "runs/a"]) == [tmp_path / "runs" / "a"]
    with pytest.raises(
        information_plane.InputError,
        match=r"the notebook's default \(RUN_DIR is not set\): no run folder .*runs/b, .*runs/c\. "
        r"Train one with mi_mnist_dropout.py",
    ):
        information_plane.notebook_runs(tmp_path, default=["runs/b", "runs/c"])
    monkeypatch.setenv("RUN_DIR", os.pathsep.join(["runs/a", "runs/c"]))
    with pytest.raises(information_plane.InputError, match=r"^RUN_DIR: no run folder .*runs/c\."):
        information_plane.notebook_runs(tmp_path, default=["runs/a"])
    monkeypatch.setenv("RUN_DIR", os.pathsep)
    with pytest.raises(information_plane.InputError, match="RUN_DIR names no run folder"):
        information_plane.notebook_runs(tmp_path, default=["runs/a"])


def _fake_run(tmp_path, layers, n=40, dim=3, epochs=(0, 1), p=0.2, seed=0):
    """A run folder written directly (no training) for format-level tests."""
    run = tmp_path / f"fake-seed{seed}"
    rng = np.random.default_rng(seed)
    entries = [
        {"name": name, "dim": dim, "dropout": "gaussian", "p": p, "noise_std": math.sqrt(p / (1 - p))}
        for name in layers
    ]
    flags = {"net": "fc", "dropout": "gaussian", "p": p, "seed": seed, "epochs": max(epochs)}
    run_folder.save_json(run / run_folder.CONFIG_NAME, {"flags": flags, "dataset": {"name": "fake"}, "layers": entries})
    for split in run_folder.SPLITS:
        run_folder.save_npy(run_folder.inputs_path(run, split), rng.random((n, 4)).astype(np.float32))
        run_folder.save_npy(run_folder.labels_path(run, split), rng.integers(0, 3, n))
        for epoch in epochs:
            for name in layers:
                tag = name if len(layers) > 1 else None
                run_folder.save_npy(
                    run_folder.representation_path(run, split, epoch, tag),
                    (0.1 + rng.random((n, dim))).astype(np.float32),
                )
    return run


def test_several_dropout_layers_give_one_plane_each(tmp_path):
    run = _fake_run(tmp_path, ["drop_a", "drop_b"])
    data = information_plane.estimate_run(run, QUIET)
    assert set(data["estimates"]["mixture"]) == {"drop_a", "drop_b"}
    names = {p.name for p in draw_run_figures(run)}
    assert {"information_plane_drop_a.png", "information_plane_drop_b.png"} <= names


def test_epoch_selection_limits_the_figures(tmp_path):
    run = _fake_run(tmp_path, ["dropout"], epochs=(0, 1, 2))
    assert information_plane.main([str(run), "--epochs", "1-"]) == 0
    data = run_folder.load_estimates(run)
    assert sorted(data["estimates"]["mixture"]["dropout"]["test"], key=int) == ["1", "2"]
    assert (run / "figures" / "information_plane_epochs1-.png").is_file()
    assert not (run / "figures" / "information_plane.png").exists()
    panels = layer_panels(data["estimates"], run_folder.load_config(run)["layers"][0], epochs=lambda e: e >= 2)
    assert panels and all(list(s.epochs) == [2] for p in panels for s in p.series)


def _error(capsys, argv):
    code = information_plane.main(list(map(str, argv)))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_bad_run_folders_give_clear_errors(tmp_path, capsys):
    assert "config.json" in _error(capsys, [tmp_path])  # not a run folder
    assert "does not exist" in _error(capsys, [tmp_path / "nowhere"])
    run = _fake_run(tmp_path, ["dropout"])
    assert "is a file" in _error(capsys, [run / run_folder.CONFIG_NAME])
    err = _error(capsys, [run, "--epochs", "7-9", "--no-plots"])
    assert "no saved" in err and "[0, 1]" in err
    assert "magic" in _error(capsys, [run, "--estimators", "mixture,magic", "--no-plots"])
    assert "--draws" in _error(capsys, [run, "--draws", "val=3"])
    assert "--max-inputs" in _error(capsys, [run, "--max-inputs", "1"])
    assert "--formats" in _error(capsys, [run, "--formats", "gif"])
    assert "bad epoch" in _error(capsys, [run, "--epochs", "a-b"])
    assert "--seed" in _error(capsys, [run, "--seed", "-1"])
    assert "no estimator" in _error(capsys, [run, "--estimators", ""])
    assert "--out" in _error(capsys, [run, "--out", ""])
    assert "given twice" in _error(capsys, [run, str(run) + "/", "--no-plots"])
    with pytest.raises(ValueError, match="no run folders"):
        information_plane.analyze_runs([])

    bad = run_folder.representation_path(run, "test", 1)
    bad.write_bytes(bad.read_bytes()[:60])  # truncated .npy
    assert bad.name in _error(capsys, [run, "--no-plots"])
    run_folder.save_npy(bad, np.zeros((40, 5), np.float32))  # wrong width
    assert "dim 3" in _error(capsys, [run, "--no-plots"])
    assert "--clip-min" in _error(capsys, [run, "--clip-min", "0"])
    run_folder.save_npy(bad, np.zeros((40, 3), np.float32))  # exactly-zero codes
    assert "exactly-zero" in _error(capsys, [run, "--no-plots"])
    assert information_plane.main([str(run), "--no-plots", "--estimators", "mixture", "--clip-min", "1e-6"]) == 0
    entry = run_folder.load_estimates(run)["estimates"]["mixture"]["dropout"]["test"]["1"]
    assert entry["params"]["n_clipped"] == 120 and entry["settings"]["clip_min"] == 1e-6
    run_folder.estimates_path(run).write_text("{not json")
    assert "estimates.json" in _error(capsys, [run, "--no-plots"])
    old = {
        "format": run_folder.ESTIMATES_FORMAT - 1,
        "estimates": {"mixture": {"dropout": {"test": {"1": {"n_samples": 40}}}}},
    }
    run_folder.save_json(run_folder.estimates_path(run), old)  # an older layout is refused, never read
    message = _error(capsys, [run, "--no-plots"])
    assert f"format {run_folder.ESTIMATES_FORMAT} (format {run_folder.ESTIMATES_FORMAT - 1})" in message
    assert "re-run the estimation" in message


@pytest.mark.parametrize("bug", [TypeError("unsupported operand"), ValueError("operands could not be broadcast")])
def test_a_bug_in_an_estimator_is_reported_as_a_bug(tmp_path, capsys, monkeypatch, bug):
    """Only InputError is the user's fault: any other exception keeps its traceback and exits 1."""
    run = _fake_run(tmp_path, ["dropout"])

    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(registry, "binning_mi", broken)
    assert information_plane.main([str(run), "--no-plots", "--estimators", "binning"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and str(bug) in err and err.strip().splitlines()[-1] == f"information_plane: {REPORT}"


def test_unwritable_folders_give_clear_errors(tmp_path, capsys, monkeypatch):
    """Checked through the writer (file permissions do not bind root, which runs CI)."""
    run = _fake_run(tmp_path, ["dropout"])

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(run_folder, "atomic_write", refuse)
    err = _error(capsys, [run, "--no-plots"])
    assert "permission denied" in err and "estimates.json" in err


def test_training_curves_show_train_and_test(gaussian_run):
    from utils.analysis.run_figures import plot_training_curves, read_history

    fig = plot_training_curves(read_history(gaussian_run / run_folder.HISTORY_NAME))
    for ax in fig.axes:
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {"train", "test"}
        assert list(lines["test"].get_xdata()) == [1, 2, 3]  # completed epochs
    plt.close(fig)


def test_parse_epochs():
    sel = information_plane.parse_epochs("0-4,10,20-")
    assert [e for e in range(30) if sel(e)] == [0, 1, 2, 3, 4, 10] + list(range(20, 30))
    with pytest.raises(ValueError, match="bad epoch"):
        information_plane.parse_epochs("a-b")


def test_estimates_file_is_plain_json(gaussian_run):
    information_plane.estimate_run(gaussian_run, QUIET)
    raw = json.loads(run_folder.estimates_path(gaussian_run).read_text())
    assert raw["format"] == run_folder.ESTIMATES_FORMAT and "mixture" in raw["estimates"]


def test_a_bad_file_at_the_last_epoch_changes_nothing(tmp_path, capsys):
    """Every input is checked before the first estimate is written: a NaN in the last epoch's file fails
    the command with the file named, and no estimates.json appears (of this run or of another one)."""
    good, run = _fake_run(tmp_path / "a", ["dropout"]), _fake_run(tmp_path / "b", ["dropout"])
    bad = run_folder.representation_path(run, "train", 1)
    values = np.load(bad)
    values[2, 0] = np.nan
    run_folder.save_npy(bad, values)
    assert bad.name in _error(capsys, [good, run, "--no-plots", "--estimators", "mixture"])
    assert not run_folder.estimates_path(good).exists() and not run_folder.estimates_path(run).exists()


# -- bad run folders: an example of each class of problem --------------------------------------------------------


def _estimated(tmp_path):
    run = _fake_run(tmp_path, ["dropout"])
    assert information_plane.main([str(run), "--no-plots", "--estimators", "binning"]) == 0
    return run


def _tree(root):
    return {
        str(p.relative_to(root)): (os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda e: e.update(mixture=[]), "estimates.mixture: input should be a valid dictionary"),
        (lambda e: e["binning"]["dropout"]["test"]["1"].update(mi_xz="3"), "test.1.mi_xz: input should be a valid"),
        (lambda e: e["binning"]["dropout"]["test"]["1"].update(mi_xz=float("nan")), "test.1.mi_xz is not a finite"),
        (lambda e: e["binning"]["dropout"]["test"].update({"01": {"settings": {}}}), "01 (a key)"),
        (lambda e: e["binning"]["dropout"]["test"]["1"].pop("log_n"), "test.1 lacks 'log_n'"),
    ],
)
def test_a_damaged_cached_entry_is_one_line_naming_the_file_and_the_field(tmp_path, capsys, change, field):
    run = _estimated(tmp_path)
    data = json.loads(run_folder.estimates_path(run).read_text())
    change(data["estimates"])
    run_folder.estimates_path(run).write_text(json.dumps(data))  # NaN written as the token NaN, as another tool might
    before = _tree(tmp_path)
    err = _error(capsys, [run, "--estimators", "binning"])
    assert "estimates.json" in err and field in err
    assert _tree(tmp_path) == before


def test_inputs_and_outputs_are_checked_before_the_first_write(tmp_path, capsys):
    """Fractional labels, --out naming a file or /dev/null: refused before IP/estimates.json exists."""
    run = _fake_run(tmp_path, ["dropout"])
    existing = tmp_path / "a-file"
    existing.write_text("mine\n")
    for argv, needle in (
        ([run, "--out", existing], "is not a folder"),
        ([run, "--out", os.devnull], "is not a folder"),
    ):
        assert needle in _error(capsys, [*argv, "--no-plots", "--estimators", "binning"])
        assert not run_folder.estimates_path(run).exists()
    labels = run_folder.labels_path(run, "test")
    np.save(labels, np.load(labels) + 0.5)
    assert "test_labels.npy" in _error(capsys, [run, "--no-plots", "--estimators", "binning"])
    assert not run_folder.estimates_path(run).exists() and existing.read_text() == "mine\n"


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_a_representation_that_is_no_regular_file_is_refused_at_once(tmp_path, capsys, kind):
    run = _fake_run(tmp_path, ["dropout"])
    path = run_folder.representation_path(run, "test", 1)
    path.unlink()
    os.mkfifo(path) if kind == "fifo" else path.symlink_to("/dev/zero")
    err = _error(capsys, [run, "--no-plots", "--estimators", "binning"])  # returns: no read blocks
    assert path.name in err and "not a regular file" in err
    assert not run_folder.estimates_path(run).exists()


def test_no_write_goes_through_a_link(tmp_path, capsys):
    run, victim = _fake_run(tmp_path, ["dropout"]), tmp_path / "victim.json"
    victim.write_text("{}\n")
    run_folder.estimates_path(run).parent.mkdir(exist_ok=True)
    run_folder.estimates_path(run).symlink_to(victim)
    assert "symbolic link" in _error(capsys, [run, "--no-plots", "--estimators", "binning"])
    run_folder.estimates_path(run).unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "figures").symlink_to(elsewhere)
    assert "figures" in _error(capsys, [run, "--estimators", "binning"])
    assert (
        victim.read_text() == "{}\n" and not list(elsewhere.iterdir()) and not run_folder.estimates_path(run).exists()
    )


def test_a_run_and_its_copy_are_one_run(tmp_path, capsys):
    run = _fake_run(tmp_path, ["dropout"])
    copy = shutil.copytree(run, tmp_path / "copy", symlinks=True)
    err = _error(capsys, [run, copy, "--no-plots", "--estimators", "binning"])
    assert "hold the same run" in err and not run_folder.estimates_path(run).exists()
    assert run_folder.run_identity(run) != run_folder.run_identity(_fake_run(tmp_path, ["dropout"], seed=1))


def test_estimates_without_a_plane_to_draw_are_no_error(tmp_path, capsys):
    """EDGE gives I(Y;Z) only: with no history either, there is no figure to draw, and that is said, not an
    error raised after estimates.json was written."""
    run = _fake_run(tmp_path, ["dropout"])
    assert information_plane.main([str(run), "--estimators", "edge"]) == 0
    assert "no figure" in capsys.readouterr().out and run_folder.estimates_path(run).is_file()


def test_a_run_without_its_representations_says_so(tmp_path, capsys):
    run = _fake_run(tmp_path, ["dropout"])
    shutil.rmtree(run / run_folder.REPR_DIR)
    err = _error(capsys, [run, "--no-plots"])
    assert "no saved train epochs" in err and "run its training command again" in err


def test_long_work_is_announced_and_reported(tmp_path, capsys, monkeypatch):
    """Off a terminal the command says how long before it starts, then prints a line per epoch; beyond a
    week of work in this process it refuses with the figure. The Python API logs the same."""
    run = _fake_run(tmp_path, ["dropout"])
    monkeypatch.setattr(estimation, "MIXTURE_SECONDS_PER_PAIR", 1e-2)  # 40 inputs: 16 s per draw and epoch
    assert information_plane.main([str(run), "--no-plots", "--estimators", "mixture", "--no-progress"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("information_plane: 4 estimates predicted to take about")
    assert sum("epochs estimated" in line for line in err) == 4 and "4 of 4" in err[-1]
    monkeypatch.setattr(estimation, "MIXTURE_SECONDS_PER_PAIR", 1e3)
    assert "would take about" in _error(capsys, [run, "--no-plots", "--estimators", "mixture", "--draws", "2"])
    assert estimation.duration(3 * 86400) == "3.0 days" and estimation.duration(30) == "30 s"
    monkeypatch.setattr(estimation, "_physical_memory", lambda: 1000)
    assert "more than this machine's" in _error(capsys, [run, "--no-plots", "--estimators", "binning", "--seed", "3"])


def test_the_mnist_notebook_draws_the_readme_digits_run_without_run_dir(gaussian_run, tmp_path, monkeypatch):
    """Right after the README's first command only runs/digits-fc-gaussian-p0.2-seed0 exists: the notebook's
    defaults that exist are drawn, headless, with no RUN_DIR."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    shutil.copytree(gaussian_run, tmp_path / "runs" / "digits-fc-gaussian-p0.2-seed0")
    monkeypatch.delenv("RUN_DIR", raising=False)
    nb = nbformat.read(ROOT / "notebooks" / "mnist_draw_IP.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2
    assert (tmp_path / "runs" / "digits-fc-gaussian-p0.2-seed0" / "figures" / "information_plane.png").is_file()
