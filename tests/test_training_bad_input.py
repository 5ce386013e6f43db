"""Bad input to the training scripts and to the training-side Python API. Every command-line case ends
with exit code 2 and one ``train: error:`` line naming the flag or file, every API case with a one-line
ValueError naming the argument or file; never a traceback, and no file changes (the lock file aside).
The scripts' own processes: tests/test_training.py."""

import dataclasses
import gzip
import json
import os
import stat
import struct

import keras
import numpy as np
import pytest

import mi_cifar_dropout
import mi_mnist_dropout
from utils import run_folder
from utils.callback import HistoryCSV, RepresentationCallback
from utils.data import CIFAR_BIN_FILES, CIFAR_PY_FILES, IDX_FILES, load_dataset
from utils.keras_training import CHECKPOINT_NAME, load_checkpoint
from utils.layers import InformationDropout
from utils.models import build_model
from utils.nets import NETS
from utils.train_command import flags_of, main, parse_args, run_lock

DIGITS = ["--dataset", "digits", "--epochs", "1", "--train-subset", "100", "--batch-size", "50"]


def _snapshot(root):
    """Every path under ``root`` with its bytes and modification time, link target or kind (the lock file
    left out; links are not followed, special files not read)."""

    def state(p):
        if p.is_symlink():
            return ("link", os.readlink(p))
        return (p.read_bytes(), p.stat().st_mtime_ns) if p.is_file() else (stat.S_IFMT(p.stat().st_mode),)

    return {str(p.relative_to(root)): state(p) for p in sorted(root.rglob("*")) if p.name != run_folder.TRAIN_LOCK_NAME}


# -- fixtures written by the cases ---------------------------------------------------------------------


def _write_idx(path, array):
    raw = (
        bytes([0, 0, 0x08, array.ndim])
        + struct.pack(f">{array.ndim}i", *array.shape)
        + array.astype(np.uint8).tobytes()
    )
    if path.suffix == ".gz":
        raw = gzip.compress(raw, mtime=0)
    path.write_bytes(raw)


def _mnist(folder, ext=".gz"):
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, (12, 28, 28)),
        rng.integers(0, 10, 12),
        rng.integers(0, 256, (5, 28, 28)),
        rng.integers(0, 10, 5),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    for stem, array in zip(IDX_FILES, arrays):
        _write_idx(folder / (stem + ext), array)
    return folder / (IDX_FILES[0] + ext)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _corrupt_middle(path):
    raw = bytearray(path.read_bytes())
    raw[20:60] = bytes(40)
    path.write_bytes(bytes(raw))


def _npz(folder, **overrides):
    arrays = {
        "x_train": np.zeros((4, 28, 28), np.uint8),
        "y_train": np.zeros(4, np.int64),
        "x_test": np.zeros((2, 28, 28), np.uint8),
        "y_test": np.zeros(2, np.int64),
        **overrides,
    }
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "mnist.npz", **{k: v for k, v in arrays.items() if v is not None})


def _mnist_case(damage, ext=".gz"):
    return lambda tmp: damage(_mnist(tmp / "data", ext))


MNIST_DATA = ["--dataset", "mnist", "--data-dir", "{tmp}/data"]

CLI_CASES = {
    # flags
    "p above 1": (["--p", "1.5"], "--p must lie strictly between 0 and 1", None),
    "p zero": (["--p", "0"], "--p", None),
    "p nan": (["--p", "nan"], "argument --p: must be a finite number", None),
    "unknown net": (["--net", "resnet18"], "argument --net: invalid choice", None),
    "unknown dataset": (["--dataset", "cifar10"], "argument --dataset: invalid choice", None),
    "unknown dropout": (["--dropout", "poisson"], "argument --dropout: invalid choice", None),
    "save-every 0": (["--save-every", "0"], "argument --save-every", None),
    "epochs 0": (["--epochs", "0"], "argument --epochs", None),
    "epochs not an integer": (["--epochs", "2.5"], "argument --epochs: must be an integer", None),
    "epochs beyond any run": (["--epochs", "2147483648"], "argument --epochs: must be an integer between 1 and", None),
    "epochs as 20 digits": (["--epochs", "1" + "0" * 20], "argument --epochs: must be an integer between", None),
    "absurd batch size": (["--batch-size", "1" + "0" * 12], "argument --batch-size", None),
    "train subset of one input": (["--train-subset", "1"], "argument --train-subset", None),
    "repr subset of one input": (["--repr-subset", "1"], "argument --repr-subset", None),
    "negative batch size": (["--batch-size", "-3"], "argument --batch-size", None),
    "negative lr": (["--lr", "-1"], "argument --lr", None),
    "infinite lr": (["--lr", "inf"], "argument --lr", None),
    "negative weight decay": (["--weight-decay", "-0.1"], "argument --weight-decay", None),
    "negative beta": (["--beta", "-1"], "argument --beta", None),
    "alpha-max zero": (["--alpha-max", "0"], "argument --alpha-max", None),
    "filters on fc": (["--filters", "0.5"], "--filters applies to the CIFAR-10", None),
    "negative seed": (["--seed", "-1"], "argument --seed", None),
    "train subset 0": (["--train-subset", "0"], "argument --train-subset", None),
    "metrics subset 0": (["--metrics-subset", "0"], "argument --metrics-subset", None),
    "eval batch size 0": (["--eval-batch-size", "0"], "argument --eval-batch-size", None),
    "unknown distribution": (["--distribute", "ring"], "argument --distribute: invalid choice", None),
    "unknown flag": (["--learning-rate", "0.1"], "unrecognized arguments: --learning-rate", None),
    "data-dir with digits": (["--data-dir", "{tmp}"], "--data-dir does not apply to --dataset digits", None),
    "train subset too big": (["--train-subset", "100000"], "--train-subset", None),
    "repr subset too big": (["--repr-subset", "5000"], "--repr-subset 5000 exceeds the 100 training inputs", None),
    # run folder
    "out is a file": (["--out", "{tmp}/afile"], "cannot write to --out", lambda tmp: (tmp / "afile").write_text("")),
    "out below a file": (
        ["--out", "{tmp}/afile/run"],
        "cannot write to --out",
        lambda tmp: (tmp / "afile").write_text(""),
    ),
    "out holds other files": (
        ["--out", "{tmp}/mine"],
        "holds no config.json; choose an empty or new --out",
        lambda tmp: (tmp / "mine").mkdir() or (tmp / "mine" / "notes.txt").write_text("x"),
    ),
    "out holds a broken config": (
        ["--out", "{tmp}/broken"],
        "broken/config.json",
        lambda tmp: (tmp / "broken").mkdir() or (tmp / "broken" / "config.json").write_text("{"),
    ),
    "out holds a config that is a list": (
        ["--out", "{tmp}/listed"],
        "listed/config.json",
        lambda tmp: (tmp / "listed").mkdir() or (tmp / "listed" / "config.json").write_text("[]"),
    ),
    # local data files
    "data dir missing": (["--dataset", "mnist", "--data-dir", "{tmp}/absent"], "--data-dir", None),
    "data dir is a file": (
        ["--dataset", "mnist", "--data-dir", "{tmp}/afile"],
        "is not a folder",
        lambda tmp: (tmp / "afile").write_text(""),
    ),
    "data dir empty": (MNIST_DATA, "none of the expected files found", lambda tmp: (tmp / "data").mkdir()),
    "idx file missing": (
        MNIST_DATA,
        "t10k-labels-idx1-ubyte",
        _mnist_case(lambda p: (p.parent / (IDX_FILES[3] + ".gz")).unlink()),
    ),
    "truncated gz": (MNIST_DATA, "train-images-idx3-ubyte.gz cannot be read", _mnist_case(_truncate)),
    "gz that is not gzip": (
        MNIST_DATA,
        "train-images-idx3-ubyte.gz cannot be read",
        _mnist_case(lambda p: p.write_bytes(b"plain bytes, not gzip")),
    ),
    "corrupt deflate stream": (MNIST_DATA, "train-images-idx3-ubyte.gz cannot be read", _mnist_case(_corrupt_middle)),
    "idx bad header": (
        MNIST_DATA,
        "train-images-idx3-ubyte is not an idx file",
        _mnist_case(lambda p: p.write_bytes(b"\x00\x00\x09\x03" + bytes(20)), ext=""),
    ),
    "idx size mismatch": (
        MNIST_DATA,
        "train-images-idx3-ubyte holds 10 bytes of data",
        _mnist_case(lambda p: p.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3i", 5, 28, 28) + bytes(10)), ext=""),
    ),
    "npz not a zip": (
        MNIST_DATA,
        "mnist.npz is not a readable .npz file",
        lambda tmp: (tmp / "data").mkdir() or (tmp / "data" / "mnist.npz").write_bytes(b"PK\x03\x04junk"),
    ),
    "npz lacks arrays": (MNIST_DATA, "mnist.npz lacks the arrays y_test", lambda tmp: _npz(tmp / "data", y_test=None)),
    "npz pixels out of range": (
        MNIST_DATA,
        "mnist.npz: train pixels are not uint8 or floats in [0, 1]",
        lambda tmp: _npz(tmp / "data", x_train=np.full((4, 28, 28), 2.0)),
    ),
    "npz labels out of range": (
        MNIST_DATA,
        "mnist.npz: test labels outside 0..9",
        lambda tmp: _npz(tmp / "data", y_test=np.array([3, 10])),
    ),
    "npz images of another shape": (
        MNIST_DATA,
        "mnist.npz: train split has images (4, 32, 32, 1)",
        lambda tmp: _npz(tmp / "data", x_train=np.zeros((4, 32, 32), np.uint8)),
    ),
}

CIFAR_CASES = {
    "cifar binary batch of the wrong size": (
        "data_batch_1.bin is not a CIFAR-10 binary batch",
        lambda folder: [(folder / n).write_bytes(bytes(3000)) for n in CIFAR_BIN_FILES],
    ),
    "cifar python batch that is no pickle": (
        "data_batch_1 is not a CIFAR-10 python-version batch",
        lambda folder: [(folder / n).write_bytes(b"\x80\x02garbage") for n in CIFAR_PY_FILES],
    ),
}


def _call(argv, family, capsys):
    defaults = mi_mnist_dropout.DEFAULTS if family == "mnist" else mi_cifar_dropout.DEFAULTS
    capsys.readouterr()
    code = main(argv, defaults=defaults, family=family)
    return code, capsys.readouterr()


def _assert_one_line(code, out, needle):
    assert code == 2
    assert out.out == "" and out.err.count("\n") == 1 and out.err.startswith("train: error: "), out.err
    assert needle in out.err and "Traceback" not in out.err, out.err


@pytest.mark.parametrize("name", CLI_CASES)
def test_command_line_case(name, tmp_path, capsys):
    extra, needle, setup = CLI_CASES[name]
    if setup:
        setup(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in DIGITS + ["--out", "{tmp}/out"] + extra]
    before = _snapshot(tmp_path)
    _assert_one_line(*_call(argv, "mnist", capsys), needle.replace("{tmp}", str(tmp_path)))
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("name", CIFAR_CASES)
def test_cifar_data_case(name, tmp_path, capsys):
    needle, setup = CIFAR_CASES[name]
    (tmp_path / "data").mkdir()
    setup(tmp_path / "data")
    before = _snapshot(tmp_path)
    argv = ["--epochs", "1", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    _assert_one_line(*_call(argv, "cifar10", capsys), needle)
    assert _snapshot(tmp_path) == before


def test_dropout_kind_the_net_cannot_take(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(NETS, "fc", dataclasses.replace(NETS["fc"], dropouts=("gaussian",)))
    before = _snapshot(tmp_path)
    argv = DIGITS + ["--dropout", "information", "--out", str(tmp_path / "out")]
    _assert_one_line(*_call(argv, "mnist", capsys), "net 'fc' cannot take information dropout; it takes gaussian")
    assert _snapshot(tmp_path) == before


# -- a run folder whose configuration matches, holding damaged state ---------------------------------


def _matching_run(tmp_path, **config):
    run = tmp_path / "run"
    argv = DIGITS + ["--out", str(run)]
    run.mkdir()
    flags = flags_of(parse_args(argv, mi_mnist_dropout.DEFAULTS, family="mnist"))
    layers = [{"name": "dropout", "dim": 32, "dropout": "gaussian", "p": 0.2, "noise_std": 0.5}]
    run_folder.save_json(
        run / run_folder.CONFIG_NAME,
        {"flags": flags, "versions": {"backend": "tensorflow"}, "layers": layers, **config},
    )
    return run, argv


def _link(path, target):
    """``path`` made a link to ``target``, a file of the user's outside the run folder."""
    target.write_text("precious\n")
    path.symlink_to(target)


RESUME_CASES = {
    "checkpoint that is no zip": (
        lambda run: (run / CHECKPOINT_NAME).write_bytes(b"not a checkpoint"),
        "checkpoint.npz is not a readable checkpoint",
    ),
    "checkpoint of another model": (
        lambda run: np.savez(run / CHECKPOINT_NAME, epochs_done=1, model_00000=np.zeros(3)),
        "checkpoint.npz holds 1 model variables that do not fit",
    ),
    "checkpoint without its epoch": (
        lambda run: np.savez(run / CHECKPOINT_NAME, model_00000=np.zeros(3)),
        "checkpoint.npz is not a readable checkpoint",
    ),
    "history without an epoch column": (
        lambda run: (run / run_folder.HISTORY_NAME).write_text("loss\n0.5\n"),
        "history.csv is not a history file",
    ),
    "lock that is a link to a file of the user's": (
        lambda run: _link(run / run_folder.TRAIN_LOCK_NAME, run.parent / "mine.txt"),
        ".train.lock is a link or not a file",
    ),
    "IP folder that is a link out of the run": (
        lambda run: (
            (run.parent / "elsewhere").mkdir() or (run / run_folder.IP_DIR).symlink_to(run.parent / "elsewhere")
        ),
        "IP is a link or a file, not a folder of the run",
    ),
    "history that is a FIFO": (lambda run: os.mkfifo(run / run_folder.HISTORY_NAME), "history.csv is a FIFO"),
    "history with a NaN loss": (
        lambda run: (run / run_folder.HISTORY_NAME).write_text("epoch,loss\n1,nan\n"),
        "column 'loss': not a finite number",
    ),
    "checkpoint with NaN weights": (
        lambda run: np.savez(run / CHECKPOINT_NAME, epochs_done=1, model_00000=np.full(3, np.nan)),
        "model_00000 is not an array of finite numbers",
    ),
    "config whose layer has a string dim": (
        lambda run: (run / run_folder.CONFIG_NAME).write_text(
            json.dumps({**json.loads((run / run_folder.CONFIG_NAME).read_text()), "layers": [{"dim": "32"}]})
        ),
        "config.json: layers[0].name: field required",
    ),
    "damaged IP file": (
        lambda run: (
            run_folder.ip_path(run, "train", "mi_zy").parent.mkdir()
            or run_folder.ip_path(run, "train", "mi_zy").write_text('{"0": ')
        ),
        "IP/train_mi_zy.json",
    ),
}


@pytest.mark.parametrize("name", RESUME_CASES)
def test_damaged_run_state(name, tmp_path, capsys):
    damage, needle = RESUME_CASES[name]
    run, argv = _matching_run(tmp_path)
    damage(run)
    before = _snapshot(tmp_path)
    _assert_one_line(*_call(argv, "mnist", capsys), needle)
    assert _snapshot(tmp_path) == before


def test_run_of_another_backend(tmp_path, capsys):
    run, argv = _matching_run(tmp_path)
    config = run_folder.load_json(run / run_folder.CONFIG_NAME)
    run_folder.save_json(run / run_folder.CONFIG_NAME, {**config, "versions": {"backend": "jax"}})
    before = _snapshot(tmp_path)
    _assert_one_line(
        *_call(argv, "mnist", capsys),
        "trained with the jax backend, this is tensorflow; resume it with KERAS_BACKEND=jax",
    )
    assert _snapshot(tmp_path) == before


def test_folder_with_another_configuration(tmp_path, capsys):
    run, argv = _matching_run(tmp_path)
    before = _snapshot(tmp_path)
    _assert_one_line(*_call(argv + ["--lr", "0.05"], "mnist", capsys), "lr: 0.1 there, 0.05 now")
    assert _snapshot(tmp_path) == before


def test_second_writer_is_refused_naming_the_holder(tmp_path, capsys):
    run, argv = _matching_run(tmp_path)
    with run_lock(run):
        before = _snapshot(tmp_path)
        _assert_one_line(
            *_call(argv, "mnist", capsys), f"being written by another training process (PID {os.getpid()})"
        )
        assert _snapshot(tmp_path) == before


# -- Python API -------------------------------------------------------------------------------------


def _models():
    inputs = keras.Input((4,))
    inner = keras.Sequential([keras.Input((4,)), keras.layers.GaussianDropout(0.1)], name="inner")
    z = keras.layers.GaussianDropout(0.1)(inputs)
    return {
        "no dropout": keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")]),
        "nested": keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inner(inputs))),
        "two outputs": keras.Model(inputs, [keras.layers.Dense(2)(z), keras.layers.Dense(2)(z)]),
    }


X, Y = np.zeros((6, 4), np.float32), np.array([0, 1, 0, 1, 0, 1])
CALLBACK_CASES = {
    "save_every 0": ({"save_every": 0}, "save_every"),
    "save_every a float": ({"save_every": 2.0}, "save_every"),
    "batch_size a bool": ({"batch_size": True}, "batch_size"),
    "negative seed": ({"seed": -1}, "seed"),
    "metrics_subset 0": ({"metrics_subset": 0}, "metrics_subset"),
    "metrics_subset a float": ({"metrics_subset": 2.5}, "metrics_subset"),
    "labels and inputs of other lengths": ({"train": (X, Y[:4])}, "train inputs and labels"),
    "fractional labels": ({"test": (X, Y + 0.5)}, "test labels must be integer"),
    "no inputs": ({"train": (X[:0], Y[:0])}, "train inputs and labels must be non-empty"),
}


@pytest.mark.parametrize("name", CALLBACK_CASES)
def test_callback_arguments(name, tmp_path):
    kwargs, needle = CALLBACK_CASES[name]
    with pytest.raises(ValueError, match=needle) as err:
        RepresentationCallback(tmp_path / "run", **{"train": (X, Y), "test": (X, Y), **kwargs})
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "name, needle",
    [
        ("no dropout", "has no noise layer to analyse; its layers: dense"),
        ("nested", "sits inside a nested model"),
        ("two outputs", "one output"),
    ],
)
def test_callback_on_unusable_models(name, needle, tmp_path):
    callback = RepresentationCallback(tmp_path / "run", (X, Y), (X, Y))
    callback.set_model(_models()[name])
    with pytest.raises(ValueError, match=needle):
        callback.on_train_begin()
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"name": "svhn"}, "unknown dataset 'svhn'"),
        ({"name": "digits", "data_dir": "."}, "data_dir does not apply to 'digits'"),
        ({"name": "digits", "train_subset": 0}, "train_subset"),
        ({"name": "digits", "train_subset": 2.5}, "train_subset"),
        ({"name": "digits", "train_subset": True}, "train_subset"),
        ({"name": "digits", "train_subset": 1348}, "train_subset must be an integer between 1 and 1347"),
    ],
)
def test_load_dataset_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle) as err:
        load_dataset(**kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"kl_weight": 0.1, "alpha_max": "0.5"}, "alpha_max must be a number"),
        ({"kl_weight": 0.1, "beta": float("inf")}, "beta must be a finite number"),
        ({"kl_weight": -0.1}, "kl_weight"),
        ({"kl_weight": 0.1, "prior": "normal"}, "prior must be one of"),
    ],
)
def test_information_dropout_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        InformationDropout(**kwargs)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"n_classes": True}, "n_classes"),
        ({"p": float("nan")}, r"p must be in \(0, 1\)"),
        ({"p": "0.2"}, r"p must be in \(0, 1\)"),
        ({"input_shape": (8, 0, 1)}, "input_shape"),
        ({"normalization": ([float("nan")], [0.2])}, "normalization means must be finite"),
        ({"n_train": 10.0}, "n_train"),
    ],
)
def test_build_model_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle) as err:
        build_model(
            "fc",
            **{"dropout": "gaussian", "p": 0.2, "input_shape": (8, 8, 1), "n_classes": 10, "n_train": 100, **kwargs},
        )
    assert "\n" not in str(err.value)


def test_damaged_checkpoint_and_history_name_the_file(tmp_path):
    inputs = keras.Input((4,))
    z = keras.layers.GaussianDropout(0.2, name="g")(keras.layers.Dense(3, activation="softplus")(inputs))
    small_model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(z))
    small_model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    small_model.optimizer.build(small_model.trainable_variables)
    (tmp_path / "empty.npz").write_bytes(b"")
    np.savez(tmp_path / "short.npz", epochs_done=1, **{f"model_{i:05d}": np.zeros(1) for i in range(2)})
    (tmp_path / "history.csv").write_text("epoch,loss\none,0.5\n")
    before = _snapshot(tmp_path)
    for name, needle in (("empty.npz", "is not a readable checkpoint"), ("short.npz", "holds 2 model variables")):
        with pytest.raises(ValueError, match=f"{name} {needle}"):
            load_checkpoint(tmp_path / name, small_model)
    with pytest.raises(ValueError, match="history.csv is not a history file"):
        HistoryCSV(tmp_path / "history.csv").load()
    assert _snapshot(tmp_path) == before
