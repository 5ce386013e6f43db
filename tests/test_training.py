"""The training scripts end to end on scikit-learn's bundled digits: run folder contents, config noise
levels, bit-identical resume after SIGKILL and after a NaN, seeding, the mirrored strategy, fast start
without Keras, silenced native logs and the JAX backend. Bad input (and the one-writer lock):
tests/test_training_bad_input.py."""

import csv
import importlib.util
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import mi_cifar_dropout
import mi_mnist_dropout
from utils import run_folder
from utils.cli import CommandError, native_logs_silenced
from utils.keras_training import CHECKPOINT_NAME
from utils.models import build_model
from utils.train_command import main, parse_args, remove_leftovers, run_dir_for, train

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--dataset",
    "digits",
    "--epochs",
    "3",
    "--save-every",
    "2",
    "--train-subset",
    "200",
    "--repr-subset",
    "120",
    "--metrics-subset",
    "80",
    "--batch-size",
    "50",
    "--no-analyze",
]


def _main(argv):
    return main(argv, defaults=mi_mnist_dropout.DEFAULTS, family="mnist")


def _history(run_dir):
    with open(run_dir / run_folder.HISTORY_NAME, newline="") as fh:
        return list(csv.DictReader(fh))


def _representations(run_dir, epochs=(0, 2, 3)):
    return {(s, e): run_folder.load_representations(run_dir, s, e) for s in run_folder.SPLITS for e in epochs}


def _same_numbers(run, reference):
    """Same representations, IP values and history (timing columns aside) as ``reference``."""
    for key, array in _representations(reference).items():
        np.testing.assert_array_equal(_representations(run)[key], array, err_msg=str(key))
    for split in run_folder.SPLITS:
        for quantity in run_folder.IP_QUANTITIES:
            assert run_folder.load_ip(run, split, quantity) == run_folder.load_ip(reference, split, quantity)
    untimed = [{k: v for k, v in row.items() if "seconds" not in k} for row in _history(reference)]
    assert [{k: v for k, v in row.items() if "seconds" not in k} for row in _history(run)] == untimed


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "run"
    assert _main(TINY + ["--out", str(out)]) == 0
    return out


def test_script_defaults_are_the_papers():
    mnist = parse_args([], mi_mnist_dropout.DEFAULTS, family="mnist")
    assert (
        mnist.dataset,
        mnist.net,
        mnist.dropout,
        mnist.lr,
        mnist.batch_size,
        mnist.epochs,
        mnist.p,
        mnist.weight_decay,
        mnist.save_every,
        mnist.analyze,
    ) == ("mnist", "fc", "gaussian", 0.1, 256, 200, 0.2, 1e-3, 2, True)
    assert run_dir_for(mnist) == Path("runs/mnist-fc-gaussian-p0.2-seed0")
    cifar = parse_args([], mi_cifar_dropout.DEFAULTS, family="cifar10")
    assert (
        cifar.dataset,
        cifar.net,
        cifar.dropout,
        cifar.lr,
        cifar.batch_size,
        cifar.epochs,
        cifar.p,
        cifar.weight_decay,
        cifar.save_every,
        cifar.analyze,
    ) == ("cifar10", "resnet18", "gaussian", 0.05, 64, 200, 0.4, 5e-4, 10, False)
    allcnn = parse_args(
        ["--net", "allcnn", "--beta", "20", "--filters", "0.25"], mi_cifar_dropout.DEFAULTS, family="cifar10"
    )
    assert allcnn.dropout == "information" and run_dir_for(allcnn).name == "cifar10-allcnn-information-beta20-seed0"


def test_gaussian_noise_as_a_rate_or_a_standard_deviation():
    """--noise-std sigma is --p sigma^2 / (1 + sigma^2): the same run, recorded by its rate."""
    by_std = parse_args(["--noise-std", "0.5"], mi_mnist_dropout.DEFAULTS, family="mnist")
    by_rate = parse_args(["--p", "0.2"], mi_mnist_dropout.DEFAULTS, family="mnist")
    assert by_std.p == pytest.approx(0.2) and not hasattr(by_std, "noise_std") and vars(by_std) == vars(by_rate)
    for argv, message in [
        (["--noise-std", "0.5", "--p", "0.2"], "not both"),
        (["--noise-std", "0.5", "--dropout", "information", "--net", "lenet"], "not of information dropout"),
    ]:
        with pytest.raises(CommandError, match=message):
            parse_args(argv, mi_mnist_dropout.DEFAULTS, family="mnist")


def test_tiny_run_folder_is_complete(tiny_run):
    config = run_folder.load_config(tiny_run)
    assert config["flags"]["lr"] == 0.1 and config["flags"]["save_every"] == 2
    assert config["dataset"] | {"source": None} == {
        "name": "digits",
        "source": None,
        "n_train": 200,
        "n_test": 450,
        "n_classes": 10,
        "input_shape": [8, 8, 1],
        "n_repr_train": 120,
        "n_repr_test": 450,
        "n_metrics_train": 80,
    }
    assert config["versions"]["backend"] == keras.backend.backend() == "tensorflow"
    assert set(config["versions"]) >= {"python", "tensorflow", "keras", "numpy"}
    assert "resumed_at" not in config
    (layer,) = config["layers"]
    assert layer == {"name": "dropout", "dim": 32, "shape": [32], "dropout": "gaussian", "p": 0.2, "noise_std": 0.5}
    # The recorded noise is what the network's dropout layer draws.
    model = build_model("fc", dropout="gaussian", p=0.2, input_shape=(8, 8, 1), n_classes=10, n_train=200)
    z = keras.ops.convert_to_numpy(model.get_layer(layer["name"])(np.ones((1000, 32), np.float32), training=True))
    assert abs(z.std() - layer["noise_std"]) < 5 * layer["noise_std"] / math.sqrt(2 * z.size)

    for split, n in (("train", 120), ("test", 450)):
        assert run_folder.saved_epochs(tiny_run, split) == [0, 2, 3]
        for epoch in (0, 2, 3):
            f = run_folder.load_representations(tiny_run, split, epoch)
            assert f.shape == (n, 32) and f.dtype == np.float32 and np.all(f > 0)  # softplus
        x, y = run_folder.load_inputs_labels(tiny_run, split)
        assert x.shape == (n, 8, 8, 1) and y.shape == (n,)
        for quantity in run_folder.IP_QUANTITIES:
            assert sorted(run_folder.load_ip(tiny_run, split, quantity)) == [0, 1, 2, 3]
    assert set(run_folder.load_ip(tiny_run, "train", "mean_kl").values()) == {0.0}
    assert all(v <= math.log(10) for v in run_folder.load_ip(tiny_run, "test", "mi_zy").values())
    rows = _history(tiny_run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"loss", "accuracy", "test_loss", "test_accuracy", "learning_rate", "seconds", "callback_seconds"} <= set(
        rows[0]
    )
    # Cosine decay over the whole run: lr(t) = lr0 (1 + cos(pi t / T)) / 2 after t of T steps.
    lrs = [float(r["learning_rate"]) for r in rows]
    np.testing.assert_allclose(lrs, [0.1 * (1 + math.cos(math.pi * e / 3)) / 2 for e in (1, 2, 3)], atol=1e-6)
    with np.load(tiny_run / CHECKPOINT_NAME) as checkpoint:
        assert int(checkpoint["epochs_done"]) == 3
    assert not list(tiny_run.rglob("*.tmp"))


def test_information_dropout_run_in_the_default_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        _main(
            [
                "--dataset",
                "digits",
                "--net",
                "lenet",
                "--dropout",
                "information",
                "--beta",
                "2",
                "--epochs",
                "1",
                "--train-subset",
                "60",
                "--batch-size",
                "30",
                "--no-analyze",
            ]
        )
        == 0
    )
    run = tmp_path / "runs" / "digits-lenet-information-beta2-seed0"
    (layer,) = run_folder.load_config(run)["layers"]
    assert (layer["dropout"], layer["dim"], layer["beta"], layer["alpha_max"], layer["noise_std"]) == (
        "information",
        84,
        2.0,
        0.7,
        None,
    )
    assert run_folder.saved_epochs(run, "test") == [0, 1]
    alpha = run_folder.load_alphas(run, "train", 1)
    assert alpha.shape == (60, 84) and np.all((alpha > 0.001) & (alpha <= 0.701))
    assert all(v > 0 for v in run_folder.load_ip(run, "test", "mean_kl").values())


class _PoisonWeights(keras.callbacks.Callback):
    """Makes the loss NaN from the third epoch on."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            kernel = self.model.get_layer("predictions").kernel
            kernel.assign(np.full(kernel.shape, np.nan, np.float32))


_KILLER = """
import os, signal, sys
import keras
import mi_mnist_dropout
from utils import run_folder
from utils.train_command import parse_args, train

kind, at, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
count = [0]

def count_and_die():
    count[0] += 1
    if count[0] == at:
        os.kill(os.getpid(), signal.SIGKILL)

class DieAtStep(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if kind == "step":
            count_and_die()

real = run_folder.atomic_write
def atomic_write(path, write, mode):  # with kind "write": die inside the at-th write, before its rename
    return real(path, lambda fh: (write(fh), kind == "write" and count_and_die()), mode)
run_folder.atomic_write = atomic_write
train(parse_args(argv, mi_mnist_dropout.DEFAULTS, family="mnist"), extra_callbacks=[DieAtStep()], verbose=0)
"""


def test_killed_runs_resume_to_the_same_bytes(tiny_run, tmp_path, capsys):
    """Three processes SIGKILLed at random points, inside a training step or inside a file write (its
    temporary file written, not yet renamed), then the same command: the same bytes as an uninterrupted
    run in every representation and IP file, in history.csv but its timing columns and in the checkpoint."""
    rng = np.random.default_rng()
    # a TINY run writes 33 files (config, 4 inputs and labels, per epoch the IP files, the representations
    # of epochs 0, 2 and 3, history.csv and the checkpoint) and takes 3 x 4 training steps
    trials = [
        ("write", int(rng.integers(1, 34))) if rng.random() < 0.5 else ("step", int(rng.integers(1, 13)))
        for _ in range(3)
    ]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _KILLER, kind, str(at), *TINY, "--out", str(tmp_path / str(i))],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i, (kind, at) in enumerate(trials)
    ]
    for proc in procs:
        assert proc.wait(timeout=300) == -signal.SIGKILL, (trials, proc.stderr.read().decode()[-2000:])
    expected = {
        str(p.relative_to(tiny_run)): p.read_bytes()
        for sub in (run_folder.REPR_DIR, run_folder.IP_DIR)
        for p in (tiny_run / sub).iterdir()
    }
    for i in range(len(trials)):
        out = tmp_path / str(i)
        assert _main(TINY + ["--out", str(out)]) == 0
        assert {
            str(p.relative_to(out)): p.read_bytes()
            for sub in (run_folder.REPR_DIR, run_folder.IP_DIR)
            for p in (out / sub).iterdir()
        } == expected, f"killed at {trials[i]} (the n-th write or step)"
        _same_numbers(out, tiny_run)
        assert not list(out.rglob("*.tmp"))
        assert run_folder.load_config(out).get("resumed_at", [0])[0] < 3
        with np.load(out / CHECKPOINT_NAME) as checkpoint, np.load(tiny_run / CHECKPOINT_NAME) as reference:
            assert checkpoint.files == reference.files
            for key in reference.files:
                np.testing.assert_array_equal(checkpoint[key], reference[key], err_msg=key)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".train.lock"}
    capsys.readouterr()
    assert _main(TINY + ["--out", str(out)]) == 0  # a finished run is left as it is
    assert "is complete (3 epochs); nothing to do" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_leftovers_of_killed_writes_are_removed_but_not_the_analysis_files(tmp_path):
    ours = [
        ".config.json.k2j.tmp",
        ".checkpoint.npz.8s.tmp",
        "representations/.train_inputs.npy.x1.tmp",
        "IP/.test_mi_zy.json.q0.tmp",
    ]
    theirs = [
        "IP/.estimates.json.a9.tmp",
        "IP/.estimates.json.lock",
        "figures/.information_plane.png.z.tmp",
        "config.json",
    ]
    for name in ours + theirs:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    remove_leftovers(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == sorted(theirs)


def test_nan_loss_stops_with_one_line_and_the_run_resumes_from_the_last_good_epoch(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    argv = TINY + ["--out", str(run)]
    with pytest.raises(CommandError, match=r"training loss is nan at step 1 of epoch 3; .* last good epoch, 2"):
        train(
            parse_args(argv, mi_mnist_dropout.DEFAULTS, family="mnist"), extra_callbacks=[_PoisonWeights()], verbose=0
        )
    assert [int(r["epoch"]) for r in _history(run)] == [1, 2]
    assert sorted(run_folder.load_ip(run, "test", "mi_zy")) == [0, 1, 2] and run_folder.saved_epochs(run, "test") == [
        0,
        2,
    ]
    with np.load(run / CHECKPOINT_NAME) as checkpoint:
        assert int(checkpoint["epochs_done"]) == 2
    assert _main(argv) == 0
    _same_numbers(run, tiny_run)

    blown = tmp_path / "blown"
    assert _main(TINY + ["--out", str(blown), "--lr", "1e6"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("train: error: the training loss is nan at step") and "--lr" in err
    assert not (blown / run_folder.HISTORY_NAME).exists() and not (blown / CHECKPOINT_NAME).exists()


def test_a_finished_run_without_its_representations_says_how_to_recover(tiny_run, tmp_path, capsys):
    """A run whose checkpoint says it is complete is complete only with the files of its epochs: a copy
    without representations/ names what is missing; moving checkpoint.npz away, as the message says,
    trains it again into the same bytes."""
    run = shutil.copytree(tiny_run, tmp_path / "run")
    for path in (run / run_folder.REPR_DIR).glob("no_noise_*"):
        path.unlink()
    capsys.readouterr()
    assert _main(TINY + ["--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has trained 3 epochs" in err and "no_noise_train_representations_0.npy" in err
    assert f"move {CHECKPOINT_NAME} away" in err
    (run / CHECKPOINT_NAME).rename(tmp_path / CHECKPOINT_NAME)
    assert _main(TINY + ["--out", str(run)]) == 0
    _same_numbers(run, tiny_run)


def test_long_training_is_announced_after_its_first_epoch(capsys):
    """Off a terminal too: the first epoch's time times the epochs left, on stderr, when above a minute."""
    from utils.keras_training import AnnounceDuration

    for first_epoch_seconds, said in ((30.0, True), (1.0, False)):
        announce = AnnounceDuration(Path("run"))
        announce.params = {"epochs": 10}
        announce.on_epoch_begin(3)
        announce.start -= first_epoch_seconds
        announce.on_epoch_end(3)
        announce.on_epoch_end(4)  # only once
        err = capsys.readouterr().err
        assert (err == "run: epoch 4 took 30 s; the remaining 6 epochs will take about 3 min\n") if said else not err


def test_another_seed_gives_other_weights(tiny_run, tmp_path):
    # (the same seed gives the same numbers: the resume tests compare separate runs bit for bit)
    assert _main(TINY + ["--out", str(tmp_path / "seed1"), "--seed", "1", "--epochs", "1"]) == 0
    assert not np.allclose(
        run_folder.load_representations(tiny_run, "test", 0),
        run_folder.load_representations(tmp_path / "seed1", "test", 0),
    )


def test_mirrored_strategy_on_two_logical_cpus(tiny_run, tmp_path):
    out = tmp_path / "mirrored"
    code = (
        "import sys, tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "import mi_mnist_dropout\n"
        "from utils.train_command import main\n"
        f"sys.exit(main({TINY + ['--out', str(out), '--distribute', 'mirrored', '--epochs', '2']!r}, "
        "defaults=mi_mnist_dropout.DEFAULTS, family='mnist'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert run_folder.load_config(out)["model"]["replicas"] == 2
    assert [int(r["epoch"]) for r in _history(out)] == [1, 2]
    # Same seed, same initial weights: epoch 0 must match the single-device run row by row.
    for split in run_folder.SPLITS:
        np.testing.assert_allclose(
            run_folder.load_representations(out, split, 0),
            run_folder.load_representations(tiny_run, split, 0),
            rtol=1e-5,
            atol=1e-6,
        )
        assert run_folder.saved_epochs(out, split) == [0, 2]


def test_help_and_flag_errors_answer_without_keras():
    """``--help`` and a flag error load neither Keras nor TensorFlow nor JAX (they take seconds to import)."""
    code = (
        "import sys, mi_mnist_dropout\n"
        "from utils.train_command import main\n"
        "def run(argv):\n"
        "    try:\n"
        "        return main(argv, defaults=mi_mnist_dropout.DEFAULTS, family='mnist')\n"
        "    except SystemExit as stop:\n"
        "        return stop.code\n"
        "codes = [run(['--help']), run(['--dataset', 'digits', '--lr', '-1'])]\n"
        "print(codes, sorted({m.split('.')[0] for m in sys.modules} & {'keras', 'tensorflow', 'jax'}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "[0, 2] []"
    assert proc.stderr == "train: error: argument --lr: must be a finite number > 0, got -1.0\n"


def test_native_start_up_messages_are_silenced_unless_verbose(capfd):
    with native_logs_silenced(verbose=False):
        os.write(2, b"E0000 failed call to cuInit: INTERNAL: CUDA error\n")
    with native_logs_silenced(verbose=True):
        os.write(2, b"shown with --verbose\n")
    assert capfd.readouterr().err == "shown with --verbose\n"
    with pytest.raises(RuntimeError), native_logs_silenced(verbose=False):
        os.write(2, b"replayed when the start fails\n")
        raise RuntimeError("start failed")
    assert capfd.readouterr().err == "replayed when the start fails\n"


@pytest.mark.parametrize(
    "script, argv, backend, needle",
    [
        (
            "mi_mnist_dropout.py",
            ["--dataset", "digits", "--p", "2"],
            "tensorflow",
            "--p must lie strictly between 0 and 1",
        ),
        ("mi_cifar_dropout.py", ["--data-dir", "/nonexistent/cifar", "--epochs", "1"], "tensorflow", "--data-dir"),
        (
            "mi_mnist_dropout.py",
            ["--dataset", "digits", "--epochs", "1"],
            "theano",
            "cannot start Keras with the backend KERAS_BACKEND=theano",
        ),
    ],
)
def test_scripts_exit_2_with_one_line(script, argv, backend, needle, tmp_path):
    proc = subprocess.run(
        [sys.executable, script, *argv, "--out", str(tmp_path / "run")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, KERAS_BACKEND=backend),
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"{script}: error:") and proc.stderr.count("\n") == 1 and needle in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")
def test_readme_digits_job_runs_on_jax(tmp_path):
    out = tmp_path / "jax"
    # the README's digits job, shortened; batch sizes that divide the sets keep JAX's compilations few
    readme = [
        "--dataset",
        "digits",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--lr",
        "0.01",
        "--train-subset",
        "320",
        "--eval-batch-size",
        "512",
        "--out",
        str(out),
        "--no-analyze",
    ]
    odd = [
        "--dataset",
        "digits",
        "--train-subset",
        "301",
        "--batch-size",
        "16",
        "--distribute",
        "mirrored",
        "--out",
        str(tmp_path / "odd"),
    ]
    code = (
        "import mi_mnist_dropout\n"
        "from utils.train_command import main\n"
        "print([main(argv, defaults=mi_mnist_dropout.DEFAULTS, family='mnist')"
        f" for argv in ({readme!r}, {odd!r})])\n"
    )
    env = dict(os.environ, KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.stdout.strip().splitlines()[-1] == "[0, 2]", proc.stderr[-2000:]
    # no native start-up noise, no warnings; DataParallel's even split checked before anything is written
    assert proc.stderr == (
        "train: error: --distribute mirrored on JAX splits every batch evenly over the 2 devices; "
        "not a multiple of 2: the last training batch (13), the last batch of the saved training "
        "inputs (45), the last batch of the --metrics-subset (45); choose --batch-size, "
        "--eval-batch-size or --train-subset to fit\n"
    )
    assert not (tmp_path / "odd").exists()
    versions = run_folder.load_config(out)["versions"]
    assert versions["backend"] == "jax" and "jax" in versions and "tensorflow" not in versions
    assert [int(r["epoch"]) for r in _history(out)] == [1, 2]
    assert run_folder.saved_epochs(out, "test") == [0, 2]
    assert run_folder.load_representations(out, "train", 2).shape == (320, 32)
