"""The training scripts end to end on scikit-learn's bundled digits: run folder contents, config noise
levels, resume after an interruption, seeding, the mirrored strategy and every kind of bad input."""
import csv
import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import mi_cifar_dropout
import mi_mnist_dropout
from utils import run_folder as rf
from utils.models import NETS, build_model
from utils.training import main, parse_args, run_dir_for, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "digits", "--epochs", "3", "--save-every", "2", "--train-subset", "200", "--repr-subset", "120",
        "--metrics-subset", "80", "--batch-size", "50"]


def _main(argv):
    return main(argv, defaults=mi_mnist_dropout.DEFAULTS, family="mnist")


def _history(run_dir):
    with open(run_dir / rf.HISTORY_NAME, newline="") as fh:
        return list(csv.DictReader(fh))


def _representations(run_dir, epochs=(0, 2, 3)):
    return {(s, e): rf.load_representations(run_dir, s, e) for s in rf.SPLITS for e in epochs}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "run"
    assert _main(TINY + ["--out", str(out)]) == 0
    return out


def test_script_defaults_are_the_papers():
    mnist = parse_args([], mi_mnist_dropout.DEFAULTS, family="mnist")
    assert (mnist.dataset, mnist.net, mnist.dropout, mnist.lr, mnist.batch_size, mnist.epochs, mnist.p,
            mnist.weight_decay, mnist.save_every) == ("mnist", "fc", "gaussian", 0.1, 256, 200, 0.2, 1e-3, 2)
    assert run_dir_for(mnist) == Path("runs/mnist-fc-gaussian-p0.2-seed0")
    cifar = parse_args([], mi_cifar_dropout.DEFAULTS, family="cifar10")
    assert (cifar.dataset, cifar.net, cifar.dropout, cifar.lr, cifar.batch_size, cifar.epochs, cifar.p,
            cifar.weight_decay, cifar.save_every) == ("cifar10", "resnet18", "gaussian", 0.05, 64, 200, 0.4, 5e-4, 10)
    allcnn = parse_args(["--net", "allcnn", "--beta", "20", "--filters", "0.25"], mi_cifar_dropout.DEFAULTS,
                        family="cifar10")
    assert allcnn.dropout == "information" and run_dir_for(allcnn).name == "cifar10-allcnn-information-beta20-seed0"


def test_tiny_run_folder_is_complete(tiny_run):
    config = rf.load_config(tiny_run)
    assert config["flags"]["lr"] == 0.1 and config["flags"]["save_every"] == 2
    assert config["dataset"] | {"source": None} == {
        "name": "digits", "source": None, "n_train": 200, "n_test": 450, "n_classes": 10, "input_shape": [8, 8, 1],
        "n_repr_train": 120, "n_repr_test": 450, "n_metrics_train": 80}
    assert set(config["versions"]) >= {"python", "tensorflow", "keras", "numpy"}
    layer, = config["layers"]
    assert layer == {"name": "dropout", "dim": 32, "shape": [32], "dropout": "gaussian", "p": 0.2, "noise_std": 0.5}
    # The recorded noise is what the network's dropout layer draws.
    model = build_model("fc", dropout="gaussian", p=0.2, input_shape=(8, 8, 1), n_classes=10, n_train=200)
    z = keras.ops.convert_to_numpy(model.get_layer(layer["name"])(np.ones((1000, 32), np.float32), training=True))
    assert abs(z.std() - layer["noise_std"]) < 5 * layer["noise_std"] / math.sqrt(2 * z.size)

    for split, n in (("train", 120), ("test", 450)):
        assert rf.saved_epochs(tiny_run, split) == [0, 2, 3]
        for epoch in (0, 2, 3):
            f = rf.load_representations(tiny_run, split, epoch)
            assert f.shape == (n, 32) and f.dtype == np.float32 and np.all(f > 0)  # softplus
        x, y = rf.load_inputs_labels(tiny_run, split)
        assert x.shape == (n, 8, 8, 1) and y.shape == (n,)
        for quantity in rf.IP_QUANTITIES:
            assert sorted(rf.load_ip(tiny_run, split, quantity)) == [0, 1, 2, 3]
    assert set(rf.load_ip(tiny_run, "train", "mi_xz").values()) == {0.0}
    assert all(v <= math.log(10) for v in rf.load_ip(tiny_run, "test", "mi_zy").values())
    rows = _history(tiny_run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"loss", "accuracy", "test_loss", "test_accuracy", "learning_rate", "seconds",
            "callback_seconds"} <= set(rows[0])
    # Cosine decay over the whole run: lr(t) = lr0 (1 + cos(pi t / T)) / 2 after t of T steps.
    lrs = [float(r["learning_rate"]) for r in rows]
    np.testing.assert_allclose(lrs, [0.1 * (1 + math.cos(math.pi * e / 3)) / 2 for e in (1, 2, 3)], atol=1e-6)
    assert not list(tiny_run.rglob("*.tmp"))


def test_information_dropout_run_in_the_default_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _main(["--dataset", "digits", "--net", "lenet", "--dropout", "information", "--beta", "2", "--epochs", "1",
                  "--train-subset", "60", "--batch-size", "30"]) == 0
    run = tmp_path / "runs" / "digits-lenet-information-beta2-seed0"
    layer, = rf.load_config(run)["layers"]
    assert (layer["dropout"], layer["dim"], layer["beta"], layer["alpha_max"], layer["noise_std"]) == \
        ("information", 84, 2.0, 0.7, None)
    assert rf.saved_epochs(run, "test") == [0, 1]
    alpha = rf.load_alphas(run, "train", 1)
    assert alpha.shape == (60, 84) and np.all((alpha > 0.001) & (alpha <= 0.701))
    assert all(v > 0 for v in rf.load_ip(run, "test", "mi_xz").values())


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt


def test_resume_after_interruption(tmp_path):
    argv = TINY[:] + ["--out", str(tmp_path / "run")]
    argv[argv.index("--epochs") + 1] = "4"
    args = parse_args(argv, mi_mnist_dropout.DEFAULTS, family="mnist")
    with pytest.raises(KeyboardInterrupt):
        train(args, extra_callbacks=[_Interrupt()], verbose=0)
    run = tmp_path / "run"
    assert [int(r["epoch"]) for r in _history(run)] == [1, 2]
    assert rf.saved_epochs(run, "train") == [0, 2]

    assert _main(argv) == 0
    rows = _history(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    # The optimizer state came back: the cosine schedule continues where it stopped.
    lrs = [float(r["learning_rate"]) for r in rows]
    np.testing.assert_allclose(lrs, [0.1 * (1 + math.cos(math.pi * e / 4)) / 2 for e in (1, 2, 3, 4)], atol=1e-6)
    for split in rf.SPLITS:
        assert rf.saved_epochs(split=split, run_dir=run) == [0, 2, 4]
        for epoch in (0, 2, 4):
            assert rf.load_representations(run, split, epoch).shape[1] == 32
        for quantity in rf.IP_QUANTITIES:
            assert sorted(rf.load_ip(run, split, quantity)) == [0, 1, 2, 3, 4]
    before = (run / rf.HISTORY_NAME).read_bytes()
    assert _main(argv) == 0  # a finished run is left as it is
    assert (run / rf.HISTORY_NAME).read_bytes() == before


def test_same_seed_same_representations(tiny_run, tmp_path):
    assert _main(TINY + ["--out", str(tmp_path / "again")]) == 0
    assert _main(TINY + ["--out", str(tmp_path / "seed1"), "--seed", "1"]) == 0
    first, again, other = (_representations(d) for d in (tiny_run, tmp_path / "again", tmp_path / "seed1"))
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.allclose(first[("test", 3)], other[("test", 3)])
    assert rf.load_ip(tiny_run, "test", "mi_zy") == rf.load_ip(tmp_path / "again", "test", "mi_zy")


def test_mirrored_strategy_on_two_logical_cpus(tiny_run, tmp_path):
    out = tmp_path / "mirrored"
    code = (
        "import sys, tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "import mi_mnist_dropout\n"
        "from utils.training import main\n"
        f"sys.exit(main({TINY + ['--out', str(out), '--distribute', 'mirrored']!r}, "
        "defaults=mi_mnist_dropout.DEFAULTS, family='mnist'))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert rf.load_config(out)["model"]["replicas"] == 2
    assert [int(r["epoch"]) for r in _history(out)] == [1, 2, 3]
    # Same seed, same initial weights: epoch 0 must match the single-device run row by row.
    for split in rf.SPLITS:
        np.testing.assert_allclose(rf.load_representations(out, split, 0),
                                   rf.load_representations(tiny_run, split, 0), rtol=1e-5, atol=1e-6)
        assert rf.saved_epochs(out, split) == [0, 2, 3]


def _bad_inputs(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    return {
        "p above 1": (["--p", "1.5"], "--p"),
        "p zero": (["--p", "0"], "--p"),
        "unknown net": (["--net", "resnet18"], "invalid choice"),
        "unknown dataset": (["--dataset", "cifar10"], "invalid choice"),
        "unknown dropout": (["--dropout", "poisson"], "invalid choice"),
        "save-every 0": (["--save-every", "0"], "--save-every"),
        "epochs 0": (["--epochs", "0"], "--epochs"),
        "negative lr": (["--lr", "-1"], "--lr"),
        "filters on fc": (["--filters", "0.5"], "--filters"),
        "unwritable out": (["--out", str(blocker / "run")], "cannot write"),
        "missing dataset": (["--dataset", "mnist", "--data-dir", str(tmp_path / "nothing")], "--data-dir"),
        "train subset too big": (["--train-subset", "100000"], "train_subset"),
        "repr subset too big": (["--repr-subset", "5000"], "--repr-subset"),
    }


def test_bad_input_gives_one_line_and_exit_code_2(tmp_path, capsys):
    for name, (extra, needle) in _bad_inputs(tmp_path).items():
        argv = ["--dataset", "digits", "--out", str(tmp_path / "out"), "--epochs", "1"] + extra
        assert _main(argv) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("train: error:") and needle in err, (name, err)
    assert not (tmp_path / "out").exists()


def test_dropout_kind_the_net_cannot_take(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(NETS, "fc", dataclasses.replace(NETS["fc"], dropouts=("gaussian",)))
    assert _main(["--dataset", "digits", "--dropout", "information", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "cannot take information dropout" in err and err.count("\n") == 1


def test_folder_with_another_configuration_is_refused(tiny_run, tmp_path, capsys):
    config_before = (tiny_run / rf.CONFIG_NAME).read_text()
    assert _main(TINY + ["--out", str(tiny_run), "--lr", "0.05"]) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "lr: 0.1 there, 0.05 now" in err and err.count("\n") == 1
    assert (tiny_run / rf.CONFIG_NAME).read_text() == config_before
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    assert _main(TINY + ["--out", str(stranger)]) == 2
    assert "holds no config.json" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / rf.CONFIG_NAME).write_text("{")
    assert _main(TINY + ["--out", str(broken)]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("script, argv, needle", [
    ("mi_mnist_dropout.py", ["--dataset", "digits", "--p", "2"], "--p must lie strictly between 0 and 1"),
    ("mi_mnist_dropout.py", ["--net", "bogus"], "invalid choice"),
    ("mi_cifar_dropout.py", ["--data-dir", "/nonexistent/cifar", "--epochs", "1"], "--data-dir"),
])
def test_scripts_exit_2_without_traceback(script, argv, needle, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, script, *argv, "--out", str(tmp_path / "run")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{script}: error:") and needle in last, proc.stderr[-1000:]
