"""Run-folder I/O: atomic writes, pickle-free loads with clear errors, config validation, file names."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from utils import run_folder
from utils import run_folder_schema as schema


def _gaussian_layer(name="dropout", p=0.2, dim=4):
    return {"name": name, "dim": dim, "dropout": "gaussian", "p": p, "noise_std": math.sqrt(p / (1 - p))}


def _info_layer(name="dropout", dim=4):
    return {
        "name": name,
        "dim": dim,
        "dropout": "information",
        "p": None,
        "noise_std": None,
        "alpha_max": 0.7,
        "beta": 3.0,
        "prior": "lognormal",
    }


def _run(tmp_path, layers):
    run_folder.save_json(tmp_path / run_folder.CONFIG_NAME, {"flags": {}, "layers": layers})
    return tmp_path


def test_npy_round_trip_and_no_temp_files_left(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "sub" / "a.npy"
    run_folder.save_npy(path, a)
    np.testing.assert_array_equal(run_folder.load_npy(path), a)
    assert run_folder.load_npy(path).dtype == np.float32
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.npy"]
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's owner-only 0o600


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "a.npy"
    run_folder.save_npy(path, np.zeros(3))

    def broken_save(fh, arr, allow_pickle):
        fh.write(b"\x93NUMPY partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        run_folder.save_npy(path, np.ones(3))
    monkeypatch.undo()
    np.testing.assert_array_equal(run_folder.load_npy(path), np.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_object_arrays_and_nan_json_are_refused(tmp_path):
    with pytest.raises(ValueError, match="pickle"):
        run_folder.save_npy(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError):
        run_folder.save_json(tmp_path / "x.json", {"0": float("nan")})
    assert not list(tmp_path.iterdir())


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.npy"
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        run_folder.load_npy(missing)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"not an npy file at all")
    with pytest.raises(ValueError, match="garbage.npy"):
        run_folder.load_npy(garbage)
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickled.npy"):
        run_folder.load_npy(pickled)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{oops")
    with pytest.raises(ValueError, match="bad.json"):
        run_folder.load_json(bad_json)


def test_file_names_follow_the_readme(tmp_path):
    assert run_folder.representation_path(tmp_path, "train", 4).name == "no_noise_train_representations_4.npy"
    assert (
        run_folder.representation_path(tmp_path, "test", 0, "fc_2").name == "no_noise_test_representations_fc_2_0.npy"
    )
    assert run_folder.alpha_path(tmp_path, "test", 10).name == "alpha_test_10.npy"
    assert run_folder.alpha_path(tmp_path, "train", 10, "d").name == "alpha_train_d_10.npy"
    assert run_folder.inputs_path(tmp_path, "train").name == "train_inputs.npy"
    assert run_folder.labels_path(tmp_path, "test").name == "test_labels.npy"
    assert run_folder.ip_path(tmp_path, "test", "mi_zy").relative_to(tmp_path).as_posix() == "IP/test_mi_zy.json"
    assert run_folder.ip_path(tmp_path, "train", "mean_kl", "d").name == "train_mean_kl_d.json"
    assert run_folder.ip_path(tmp_path, "train", "mi_zy", "d").name == "train_mi_zy.json"
    for bad in (
        lambda: run_folder.representation_path(tmp_path, "val", 0),
        lambda: run_folder.alpha_path(tmp_path, "train", -1),
        lambda: run_folder.representation_path(tmp_path, "train", 1, "a/b"),
        lambda: run_folder.ip_path(tmp_path, "train", "mi_xy"),
    ):
        with pytest.raises(ValueError):
            bad()


def test_load_config_checks_the_layers(tmp_path):
    run = _run(tmp_path, [_gaussian_layer()])
    assert run_folder.load_config(run)["layers"][0]["noise_std"] == pytest.approx(0.5)
    with pytest.raises(FileNotFoundError, match="run folder"):
        run_folder.load_config(tmp_path / "elsewhere")
    defects = {
        r"\.noise_std": dict(_gaussian_layer(), noise_std=0.2),
        r"\.dropout": dict(_gaussian_layer(), dropout="poisson"),
        r"\.p must": dict(_gaussian_layer(), p=1.0, noise_std=1.0),
        r"\.dim": dict(_gaussian_layer(), dim=0),
        "lacks 'alpha_max'": {k: v for k, v in _info_layer().items() if k != "alpha_max"},
    }
    for pattern, layer in defects.items():
        _run(tmp_path, [layer])
        with pytest.raises(ValueError, match=pattern):
            run_folder.load_config(run)
    _run(tmp_path, [_gaussian_layer(), _gaussian_layer()])
    with pytest.raises(ValueError, match="unique"):
        run_folder.load_config(run)
    (tmp_path / run_folder.CONFIG_NAME).write_text(json.dumps({"layers": []}))
    with pytest.raises(ValueError, match="config.json"):
        run_folder.load_config(run)


def test_saved_epochs_and_loaders_single_layer(tmp_path):
    run = _run(tmp_path, [_info_layer()])
    for epoch in (0, 2, 10):
        run_folder.save_npy(run_folder.representation_path(run, "train", epoch), np.full((3, 4), epoch, np.float32))
    for epoch in (0, 10):  # epoch 2 lacks its alpha file: incomplete
        run_folder.save_npy(run_folder.alpha_path(run, "train", epoch), np.ones((3, 4), np.float32))
    assert run_folder.saved_epochs(run, "train") == [0, 10]
    assert run_folder.saved_epochs(run, "test") == []
    assert run_folder.load_representations(run, "train", 10)[0, 0] == 10
    assert run_folder.load_representations(run, "train", 10, layer="dropout")[0, 0] == 10
    assert run_folder.load_alphas(run, "train", 0).shape == (3, 4)
    with pytest.raises(ValueError, match="one analysed dropout layer"):
        run_folder.load_representations(run, "train", 10, layer="other")


def test_saved_epochs_and_loaders_several_layers(tmp_path):
    run = _run(tmp_path, [_gaussian_layer("a"), _gaussian_layer("b", p=0.5)])
    for name, epochs in (("a", (0, 1, 2)), ("b", (0, 2))):
        for epoch in epochs:
            run_folder.save_npy(run_folder.representation_path(run, "test", epoch, name), np.zeros((2, 4), np.float32))
    assert run_folder.saved_epochs(run, "test") == [0, 2]
    assert run_folder.load_representations(run, "test", 1, layer="a").shape == (2, 4)
    with pytest.raises(ValueError, match="several"):
        run_folder.load_representations(run, "test", 0)
    with pytest.raises(ValueError, match="information"):
        run_folder.load_alphas(run, "test", 0, layer="a")


def test_inputs_labels_and_ip_dictionaries(tmp_path):
    run = _run(tmp_path, [_gaussian_layer()])
    run_folder.save_npy(run_folder.inputs_path(run, "test"), np.zeros((5, 2, 2, 1), np.float32))
    run_folder.save_npy(run_folder.labels_path(run, "test"), np.arange(5))
    x, y = run_folder.load_inputs_labels(run, "test")
    assert x.shape == (5, 2, 2, 1) and y.tolist() == [0, 1, 2, 3, 4]
    run_folder.save_npy(run_folder.labels_path(run, "test"), np.arange(4))
    with pytest.raises(ValueError, match="5 rows"):
        run_folder.load_inputs_labels(run, "test")
    assert run_folder.load_ip(run, "train", "mi_zy") == {}
    run_folder.save_json(run_folder.ip_path(run, "train", "mi_zy"), {"10": 1.5, "2": 1.0, "0": None})
    assert list(run_folder.load_ip(run, "train", "mi_zy").items()) == [(0, None), (2, 1.0), (10, 1.5)]
    run_folder.save_json(run_folder.ip_path(run, "train", "mi_zy"), {"x": 1.0})
    with pytest.raises(ValueError, match="train_mi_zy.json"):
        run_folder.load_ip(run, "train", "mi_zy")


def test_the_documented_format_is_the_schemas():
    """docs/run_folder.md's format is generated from utils/run_folder_schema.py: rerun
    ``python -m utils.run_folder_schema`` after changing a schema."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "run_folder.md").read_text()
    assert schema.with_format(doc) == doc
    assert "| `mi_xz` (optional) | number or null | I(X;Z), nats |" in doc


def test_checkpoint_and_history_read_back_as_written(tmp_path):
    arrays = {"model_00000": np.arange(6.0).reshape(2, 3), "optimizer_00000": np.array(3, dtype=np.int64)}
    run_folder.save_checkpoint(tmp_path / run_folder.CHECKPOINT_NAME, 7, arrays)
    done, back = run_folder.load_checkpoint(tmp_path / run_folder.CHECKPOINT_NAME)
    assert done == 7 and back.keys() == arrays.keys()
    for key, array in arrays.items():
        np.testing.assert_array_equal(back[key], array)
    with pytest.raises(ValueError, match="model_<i> or optimizer_<i>"):
        run_folder.save_checkpoint(tmp_path / "other.npz", 1, {"weights": np.zeros(2)})
    assert not (tmp_path / "other.npz").exists()

    rows = {2: {"epoch": "2", "extra": "0.5", "loss": "1.25"}, 1: {"epoch": "1", "loss": "2.0"}}
    run_folder.save_history(tmp_path / run_folder.HISTORY_NAME, rows)
    text = (tmp_path / run_folder.HISTORY_NAME).read_text()
    assert text.splitlines()[0] == "epoch,loss,extra"  # the known columns first, then the others by name
    assert run_folder.load_history(tmp_path / run_folder.HISTORY_NAME) == {
        1: {"epoch": "1", "loss": "2.0", "extra": ""},
        2: {"epoch": "2", "loss": "1.25", "extra": "0.5"},
    }
