"""A researcher's own Keras model: the README's script runs as written, the callback's run folder is
complete, runs are grouped by what they are, additive noise is estimated with its bracket, and set-ups
that cannot be analysed as they stand are flagged or refused with the reason."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from utils import run_folder
from utils.analysis import information_plane
from utils.callback import RepresentationCallback

ROOT = Path(__file__).resolve().parents[1]
DIGITS = load_digits()
X = (DIGITS.images[..., None] / 16).astype("float32")
Y = DIGITS.target
TRAIN, TEST = (X[:300], Y[:300]), (X[1500:1650], Y[1500:1650])


def readme_script() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Your own model") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_script_runs_as_written(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", readme_script()], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "my-cnn"
    config = run_folder.load_config(run)
    assert config["layers"][0]["dropout"] == "gaussian" and config["layers"][0]["p"] == pytest.approx(0.3)
    assert config["tags"] == {"name": "my-cnn"} and config["seed"] == 0 and config["model"]["n_params"] > 0
    assert len(run_folder.load_history(run / run_folder.HISTORY_NAME)) == 15
    entries = run_folder.load_estimates(run)["estimates"]["mixture"]["gaussian_dropout"]["train"]
    assert sorted(map(int, entries)) == [0, 3, 6, 9, 12, 15]
    assert all(e["mi_xz"] <= e["mi_xz_upper"] for e in entries.values())
    assert (run / "figures" / "information_plane.png").is_file()


def _model(name: str, noise: list[keras.layers.Layer], *, logits: bool = False, width: int = 16) -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Dense(width, activation="softplus")(keras.layers.Flatten()(inputs))
    for layer in noise:
        h = layer(keras.layers.Dense(width, activation="softplus")(h))
    out = keras.layers.Dense(10, activation=None if logits else "softmax")(h)
    model = keras.Model(inputs, out, name=name)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _fit(run: Path, model: keras.Model, *, seed: int = 0, tags: dict | None = None, epochs: int = 2) -> Path:
    keras.utils.set_random_seed(seed)
    recorder = RepresentationCallback(run, TRAIN, TEST, seed=seed, tags=tags)
    model.fit(*TRAIN, epochs=epochs, batch_size=32, callbacks=[recorder], verbose=0)
    return run


def _estimate(*runs: Path, out: Path | None = None) -> None:
    information_plane.analyze_runs(
        runs, out=out, request=information_plane.Request(progress=False, splits=("train",)), plots=False
    )


def test_different_models_are_different_groups_and_seeds_of_one_are_pooled(tmp_path):
    runs = [
        # the seeds' layers carry the same names, as in one script run once per seed
        _fit(tmp_path / "a-seed0", _model("a", [keras.layers.GaussianDropout(0.2, name="dropout")])),
        _fit(tmp_path / "a-seed1", _model("a", [keras.layers.GaussianDropout(0.2, name="dropout")]), seed=1),
        _fit(tmp_path / "b", _model("b", [keras.layers.GaussianDropout(0.5)])),
        _fit(tmp_path / "c", _model("c", [keras.layers.GaussianDropout(0.2)], width=8), tags={"name": "narrow"}),
    ]
    _estimate(*runs, out=tmp_path / "comparison")
    with (tmp_path / "comparison" / "estimates.csv").open() as f:
        groups = {(row["run"], row["group"]) for row in csv.DictReader(f)}
    assert groups == {("a-seed0", "a"), ("a-seed1", "a"), ("b", "b"), ("c", "narrow")}
    with (tmp_path / "comparison" / "aggregate.csv").open() as f:
        seeds = {row["group"]: int(row["n_seeds"]) for row in csv.DictReader(f)}
    assert seeds == {"a": 2, "b": 1, "narrow": 1}
    summary = (tmp_path / "comparison" / "summary.md").read_text()
    assert "2 runs pooled as seeds: a-seed0, a-seed1" in summary and "1 run pooled as seeds: c" in summary


def test_logits_without_from_logits_are_flagged(tmp_path):
    run = _fit(tmp_path / "logits", _model("logits", [keras.layers.GaussianDropout(0.2)], logits=True))
    config = run_folder.load_config(run)
    assert config["from_logits"] is False and "not class probabilities" in config["warnings"][0]
    _estimate(run)
    callback = run_folder.load_estimates(run)["estimates"]["callback"]
    entry = next(iter(callback.values()))["train"]["2"]
    assert any("not class probabilities" in w for w in entry["warnings"])
    # compiled for logits: nothing to flag
    model = _model("fine", [keras.layers.GaussianDropout(0.2)], logits=True)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fine = run_folder.load_config(_fit(tmp_path / "fine", model))
    assert fine["from_logits"] is True and "warnings" not in fine


def test_additive_noise_layers_get_the_bracket(tmp_path):
    run = _fit(tmp_path / "additive", _model("additive", [keras.layers.GaussianNoise(0.5, name="noise")]))
    (layer,) = run_folder.load_config(run)["layers"]
    assert layer["dropout"] == "additive" and layer["noise_std"] == 0.5
    _estimate(run)
    entries = run_folder.load_estimates(run)["estimates"]["mixture"]["noise"]["train"]
    for entry in entries.values():
        assert 0 <= entry["mi_xz"] <= entry["mi_xz_upper"] and entry["mi_xz_stderr"] > 0
        assert entry["mi_xz_sampling_stderr"] > 0 and entry["saturation"] is not None


def test_a_layer_behind_another_noise_layer_is_not_estimated(tmp_path, capsys):
    noise = [keras.layers.GaussianNoise(0.3, name="first"), keras.layers.GaussianDropout(0.2, name="second")]
    run = _fit(tmp_path / "stacked", _model("stacked", noise))
    layers = {layer["name"]: layer for layer in run_folder.load_config(run)["layers"]}
    assert "upstream_noise" not in layers["first"] and layers["second"]["upstream_noise"] == ["first"]
    _estimate(run)
    estimates = run_folder.load_estimates(run)["estimates"]
    skipped = estimates["mixture"]["second"]["train"]["1"]["skipped"]
    assert "noise layers upstream (first)" in skipped and "another channel" in skipped
    assert estimates["mixture"]["first"]["train"]["1"]["mi_xz"] > 0
    printed = capsys.readouterr().out
    assert "skipped: noise layers upstream (first) make the input f(x) of 'second' random" in printed


def test_another_model_in_the_same_folder_is_refused(tmp_path):
    run = _fit(tmp_path / "run", _model("a", [keras.layers.GaussianDropout(0.2)]))
    before = json.loads((run / run_folder.CONFIG_NAME).read_text())
    with pytest.raises(ValueError, match="holds another run .*differs in layers"):
        _fit(run, _model("a", [keras.layers.GaussianDropout(0.5)]))
    assert json.loads((run / run_folder.CONFIG_NAME).read_text()) == before


def test_a_continued_fit_records_where_it_resumed(tmp_path):
    model = _model("a", [keras.layers.GaussianDropout(0.2)])
    run = _fit(tmp_path / "run", model)
    recorder = RepresentationCallback(run, TRAIN, TEST)
    model.fit(*TRAIN, epochs=4, initial_epoch=2, batch_size=32, callbacks=[recorder], verbose=0)
    assert run_folder.load_config(run)["resumed_at"] == [2]
    assert sorted(run_folder.load_history(run / run_folder.HISTORY_NAME)) == [1, 2, 3, 4]
    assert np.load(run_folder.representation_path(run, "train", 4, None)).shape == (300, 16)
