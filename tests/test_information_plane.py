"""From run folder to information planes: the estimation command, its cache, the figures, the two
notebooks run headless, and bad run folders. Tiny trainings on scikit-learn's bundled digits."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mi_mnist_dropout
from mi_estimators import information_plane as ip
from utils import run_folder as rf
from utils.ip_figures import draw_run_figures, layer_panels
from utils.training import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "digits", "--epochs", "3", "--save-every", "1", "--train-subset", "300", "--repr-subset", "200",
        "--metrics-subset", "100", "--batch-size", "16", "--lr", "0.01", "--no-analyze"]
LOG10 = math.log(10)


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
    for layer, splits in data["estimates"].get(name, {}).items():
        for split, by_epoch in splits.items():
            for epoch, entry in by_epoch.items():
                yield layer, split, int(epoch), entry


def _check_ranges(data, name, n_by_split):
    """Every I(X;Z) in [0, log N] and every I(Y;Z) in [0, log 10], up to 4 Monte Carlo standard errors."""
    seen = 0
    for _, split, _, entry in _entries(data, name):
        xz, zy = entry["mi_xz"], entry["mi_zy"]
        tol_xz = 4 * (entry["mi_xz_stderr"] or 0) + 1e-9
        tol_zy = 4 * (entry["mi_zy_stderr"] or 0) + 1e-9
        assert -tol_xz <= xz <= math.log(n_by_split[split]) + 1e-9, (name, split, entry)
        assert -tol_zy <= zy <= LOG10 + 1e-9, (name, split, entry)
        seen += 1
    return seen


def test_estimation_fills_cache_and_second_run_computes_nothing(gaussian_run, monkeypatch):
    data = ip.estimate_run(gaussian_run, progress=False)
    config = rf.load_config(gaussian_run)
    n = {"train": config["dataset"]["n_repr_train"], "test": config["dataset"]["n_repr_test"]}
    epochs = rf.saved_epochs(gaussian_run, "train")
    assert epochs == [0, 1, 2, 3]
    assert _check_ranges(data, "mixture", n) == 2 * len(epochs)
    assert _check_ranges(data, "binning", n) == 2 * len(epochs)
    entry = data["estimates"]["mixture"]["dropout"]["test"]["3"]
    assert entry["settings"]["noise_samples"] == ip.DEFAULT_NOISE_SAMPLES["test"]
    assert entry["n_samples"] == n["test"] and entry["log_n"] == pytest.approx(math.log(n["test"]))
    assert entry["mi_xz_stderr"] > 0 and entry["mi_zy_stderr"] > 0
    # the noise level is the one config.json records, not a default
    assert entry["params"]["noise_std"] == pytest.approx(math.sqrt(0.2 / 0.8))
    # the callback's surrogates are always there; Gaussian dropout has no KL term
    assert all(e["mi_xz"] == 0.0 for _, _, _, e in _entries(data, "callback"))

    path = ip.estimates_path(gaussian_run)
    before = path.read_bytes(), path.stat().st_mtime_ns

    def refuse(*args, **kwargs):
        raise AssertionError("the second run must compute nothing")

    monkeypatch.setitem(ip.ESTIMATORS, "mixture", ip.Estimator("x", refuse, kinds=("gaussian",), noisy=True))
    monkeypatch.setitem(ip.ESTIMATORS, "binning", ip.Estimator("x", refuse))
    assert ip.estimate_run(gaussian_run, progress=False) == data
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_changed_settings_and_new_estimators_are_computed(gaussian_run):
    ip.estimate_run(gaussian_run, progress=False)
    data = ip.estimate_run(gaussian_run, estimators=["mixture", "upper_bound"], splits=["test"], epochs="2-3",
                           noise_samples=2, progress=False)
    est = data["estimates"]
    assert est["mixture"]["dropout"]["test"]["3"]["settings"]["noise_samples"] == 2
    assert est["mixture"]["dropout"]["test"]["0"]["settings"]["noise_samples"] == ip.DEFAULT_NOISE_SAMPLES["test"]
    assert sorted(est["upper_bound"]["dropout"]["test"], key=int) == ["2", "3"]
    for e in ("2", "3"):  # the Gaussian bound on h(Z) bounds I(X;Z) from above (up to Monte Carlo error)
        ub, mix = est["upper_bound"]["dropout"]["test"][e], est["mixture"]["dropout"]["test"][e]
        assert ub["mi_xz"] >= mix["mi_xz"] - 4 * mix["mi_xz_stderr"]


def test_cli_writes_figures_and_table(gaussian_run):
    proc = subprocess.run([sys.executable, "-m", "mi_estimators.information_plane", str(gaussian_run),
                           "--estimators", "mixture,binning,edge", "--formats", "png,pdf"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "mixture" in proc.stdout and "edge" in proc.stdout
    for name in ("information_plane.png", "information_plane.pdf", "training_curves.png"):
        assert (gaussian_run / "figures" / name).stat().st_size > 10_000
    assert f"figure: {gaussian_run / 'figures' / 'information_plane.png'}" in proc.stdout


def test_information_dropout_run(information_run):
    data = ip.estimate_run(information_run, progress=False)
    n = {"train": 200, "test": rf.load_config(information_run)["dataset"]["n_repr_test"]}
    assert _check_ranges(data, "mixture", n) == 8
    kl = [e["mi_xz"] for _, _, _, e in _entries(data, "callback")]
    assert kl and all(v > 0 for v in kl)  # the KL term is the I(X;Z) surrogate of information dropout
    assert draw_run_figures(information_run)


def test_bernoulli_run_says_infinite_and_still_plots_binning(bernoulli_run, capsys):
    data = ip.estimate_run(bernoulli_run, progress=False)
    skipped = [e for _, _, _, e in _entries(data, "mixture")]
    assert skipped and all("infinite" in e["skipped"] for e in skipped)
    assert _check_ranges(data, "binning", {"train": 200, "test": 450}) == 8
    paths = draw_run_figures(bernoulli_run)
    assert bernoulli_run / "figures" / "information_plane.png" in paths


def test_mnist_script_analyze_ends_with_a_figure(tmp_path):
    out = tmp_path / "analyzed"
    argv = [a for a in TINY if a != "--no-analyze"] + ["--epochs", "2", "--out", str(out)]
    proc = subprocess.run([sys.executable, "mi_mnist_dropout.py", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figure = out / "figures" / "information_plane.png"
    assert figure.is_file() and f"figure: {figure}" in proc.stdout


@pytest.mark.parametrize("notebook", ["mnist_draw_IP.ipynb", "cifar10_draw_IP.ipynb"])
def test_notebooks_run_headless(notebook, gaussian_run, information_run):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    # the MNIST notebook as in the paper: a Gaussian-dropout and an information-dropout run together
    runs = [gaussian_run, information_run] if notebook.startswith("mnist") else [information_run]
    nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    os.environ["RUN_DIR"] = os.pathsep.join(map(str, runs))
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        del os.environ["RUN_DIR"]
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 2 * len(runs)  # per run: the information planes and the training curves
    for run in runs:
        data = ip.load_estimates(run)
        config = rf.load_config(run)
        n = {"train": config["dataset"]["n_repr_train"], "test": config["dataset"]["n_repr_test"]}
        assert _check_ranges(data, "mixture", n) == 8
        assert (run / "figures" / "information_plane.png").is_file()


def _fake_run(tmp_path, layers, n=40, dim=3, epochs=(0, 1)):
    """A run folder written directly (no training) for format-level tests."""
    run = tmp_path / "fake"
    rng = np.random.default_rng(0)
    entries = [{"name": name, "dim": dim, "dropout": "gaussian", "p": 0.2, "noise_std": math.sqrt(0.25)}
               for name in layers]
    rf.save_json(run / rf.CONFIG_NAME, {"flags": {}, "layers": entries})
    for split in rf.SPLITS:
        rf.save_npy(rf.inputs_path(run, split), rng.random((n, 4)).astype(np.float32))
        rf.save_npy(rf.labels_path(run, split), rng.integers(0, 3, n))
        for epoch in epochs:
            for name in layers:
                tag = name if len(layers) > 1 else None
                rf.save_npy(rf.representation_path(run, split, epoch, tag),
                            (0.1 + rng.random((n, dim))).astype(np.float32))
    return run


def test_several_dropout_layers_give_one_plane_each(tmp_path):
    run = _fake_run(tmp_path, ["drop_a", "drop_b"])
    data = ip.estimate_run(run, progress=False)
    assert set(data["estimates"]["mixture"]) == {"drop_a", "drop_b"}
    names = {p.name for p in draw_run_figures(run)}
    assert {"information_plane_drop_a.png", "information_plane_drop_b.png"} <= names


def test_epoch_selection_limits_the_figures(tmp_path):
    run = _fake_run(tmp_path, ["dropout"], epochs=(0, 1, 2))
    proc = _cli(run, "--epochs", "1-")
    assert proc.returncode == 0, proc.stderr
    data = ip.load_estimates(run)
    assert sorted(data["estimates"]["mixture"]["dropout"]["test"], key=int) == ["1", "2"]
    assert (run / "figures" / "information_plane_epochs1-.png").is_file()
    assert not (run / "figures" / "information_plane.png").exists()
    panels = layer_panels(data["estimates"], rf.load_config(run)["layers"][0], epochs=lambda e: e >= 2)
    assert panels and all(list(s.epochs) == [2] for p in panels for s in p.series)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mi_estimators.information_plane", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_bad_run_folders_give_clear_errors(tmp_path):
    proc = _cli(tmp_path)  # not a run folder
    assert proc.returncode == 2 and "config.json" in proc.stderr and "Traceback" not in proc.stderr

    run = _fake_run(tmp_path, ["dropout"])
    proc = _cli(run, "--epochs", "7-9", "--no-plots")
    assert proc.returncode == 2 and "no saved" in proc.stderr and "[0, 1]" in proc.stderr

    proc = _cli(run, "--estimators", "mixture,magic", "--no-plots")
    assert proc.returncode == 2 and "magic" in proc.stderr

    bad = rf.representation_path(run, "test", 1)
    bad.write_bytes(bad.read_bytes()[:60])  # truncated .npy
    proc = _cli(run, "--no-plots")
    assert proc.returncode == 2 and bad.name in proc.stderr and "Traceback" not in proc.stderr

    rf.save_npy(bad, np.zeros((40, 5), np.float32))  # wrong width
    proc = _cli(run, "--no-plots")
    assert proc.returncode == 2 and "dim 3" in proc.stderr

    ip.estimates_path(run).write_text("{not json")
    proc = _cli(run, "--no-plots")
    assert proc.returncode == 2 and "estimates.json" in proc.stderr


def test_training_curves_show_train_and_test(gaussian_run):
    from utils.plotting import plot_training_curves, read_history

    fig = plot_training_curves(read_history(gaussian_run / rf.HISTORY_NAME))
    for ax in fig.axes:
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {"train", "test"}
        assert list(lines["test"].get_xdata()) == [1, 2, 3]  # completed epochs


def test_parse_epochs():
    sel = ip.parse_epochs("0-4,10,20-")
    assert [e for e in range(30) if sel(e)] == [0, 1, 2, 3, 4, 10] + list(range(20, 30))
    with pytest.raises(ValueError, match="bad epoch"):
        ip.parse_epochs("a-b")


def test_estimates_file_is_plain_json(gaussian_run):
    ip.estimate_run(gaussian_run, progress=False)
    raw = json.loads(ip.estimates_path(gaussian_run).read_text())
    assert raw["format"] == ip.FORMAT and "mixture" in raw["estimates"]
