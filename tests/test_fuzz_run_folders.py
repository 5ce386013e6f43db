"""Fuzzing whole run folders: a valid run folder, made once by a small training run and estimated, is mutated
(files deleted, truncated or replaced; JSON values and keys changed, NaN and infinities; arrays of another
dtype or shape; links out of the folder, to /dev/zero and dangling; FIFOs; folders in place of files;
copies), and the estimation, the comparison and the training resume run in-process on it.

The contract: exit 0 with a readable result, or exit 2 with one ``error:`` line, no traceback and no file
changed (in the run folder, and outside it where a link points), within a time limit; never another exit
code. Hypothesis keeps no example database (tests/conftest.py)."""

import json
import math
import os
import shutil
import signal
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import mi_mnist_dropout
from mi_estimators.checks import InputError
from utils import run_folder
from utils import run_folder_schema as schema
from utils.analysis import information_plane
from utils.train_command import main as train_main

TRAIN = [
    "--dataset",
    "digits",
    "--epochs",
    "2",
    "--save-every",
    "1",
    "--train-subset",
    "100",
    "--repr-subset",
    "40",
    "--metrics-subset",
    "40",
    "--batch-size",
    "20",
    "--lr",
    "0.01",
    "--no-analyze",
]
ESTIMATE = ["--no-plots", "--estimators", "binning,mixture", "--max-inputs", "30", "--draws", "1", "--threads", "1"]
SECONDS = 60
"""Time limit of one command: a hang (a FIFO read, a lock never released) fails the example."""
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A trained and estimated run folder, never changed: every example works on a copy."""
    run = tmp_path_factory.mktemp("fuzz") / "run"
    assert train_main(TRAIN + ["--out", str(run)], defaults=mi_mnist_dropout.DEFAULTS, family="mnist") == 0
    assert information_plane.main([str(run), *ESTIMATE]) == 0
    return run


@contextmanager
def _time_limit(seconds):
    def expire(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _snapshot(root):
    """Every path under ``root`` (not following links) with what it is: bytes, link target or kind."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if name == run_folder.TRAIN_LOCK_NAME:
                continue  # the lock's own bookkeeping (its holder's PID), not data
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                out[str(path.relative_to(root))] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                try:
                    out[str(path.relative_to(root))] = (path.read_bytes(), info.st_mtime_ns, info.st_mode)
                except PermissionError:
                    out[str(path.relative_to(root))] = ("unreadable", info.st_mtime_ns, info.st_mode)
            else:
                out[str(path.relative_to(root))] = (stat.S_IFMT(info.st_mode),)
    return out


def _json_paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _json_paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _json_paths(item, (*path, i))


BAD_VALUES = [
    None,
    "1.5",
    "",
    True,
    -1,
    0,
    10**30,
    1e308,
    -1e-300,
    float("nan"),
    float("inf"),
    [],
    {},
    [1, 2],
    {"a": 1},
]
BAD_KEYS = ["01", "-1", "x", "1.0", "", "a/b", "train", "9999"]


def _mutate_json(data, draw):
    """One change inside parsed JSON: a value replaced, a key removed or a key added."""
    paths = [p for p in _json_paths(data) if p]
    if not paths:
        return draw(st.sampled_from(BAD_VALUES))
    path = draw(st.sampled_from(paths))
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    action = draw(st.sampled_from(["replace", "delete", "add"]))
    if action == "replace" or isinstance(parent, list):
        parent[path[-1]] = draw(st.sampled_from(BAD_VALUES))
    elif action == "delete":
        del parent[path[-1]]
    else:
        parent[draw(st.sampled_from(BAD_KEYS))] = parent[path[-1]]
    return data


def _mutate(run, outside, draw):
    """Apply one mutation to the run folder copy; returns a description for the failure message."""
    files = sorted(p for p in run.rglob("*") if p.is_file() and p.name != run_folder.TRAIN_LOCK_NAME)
    target = draw(
        st.sampled_from([*files, run / run_folder.REPR_DIR, run / run_folder.IP_DIR, run / run_folder.TRAIN_LOCK_NAME])
    )
    kinds = [
        "delete",
        "truncate",
        "garbage",
        "symlink_out",
        "symlink_zero",
        "dangling",
        "fifo",
        "folder",
        "swap",
        "chmod",
    ]
    if target.suffix == ".json":
        kinds += ["json"] * 6
    if target.suffix == ".npy":
        kinds += ["npy"] * 4
    if target.suffix == ".csv":
        kinds += ["csv"] * 2
    kind = draw(st.sampled_from(kinds))
    if target.is_dir() and kind not in ("delete", "symlink_out", "symlink_zero", "dangling", "fifo", "chmod"):
        kind = "delete"
    if kind == "chmod":  # binds only users other than root; the snapshot records the mode either way
        if target.exists():
            os.chmod(target, draw(st.sampled_from([0o000, 0o444, 0o555])))
        return f"chmod {target.relative_to(run)}"
    if kind == "swap":  # another file of the folder in its place: valid bytes in the wrong place
        other = draw(st.sampled_from(files))
        if target.is_file():
            target.write_bytes(other.read_bytes())
        return f"swap {target.relative_to(run)} <- {other.relative_to(run)}"
    if kind == "json":
        data = json.loads(target.read_text())
        target.write_text(json.dumps(_mutate_json(data, draw)))
        return f"json {target.name}"
    if kind == "npy":
        array = np.load(target)
        change = draw(st.sampled_from(["float_labels", "dtype", "rows", "columns", "ndim", "nan", "negative"]))
        if change == "float_labels":
            array = array.astype(np.float64) + 0.5
        elif change == "dtype":
            array = array.astype(draw(st.sampled_from([np.int64, np.complex64, np.bool_, np.float16])))
        elif change == "rows":
            array = array[: max(0, len(array) - draw(st.integers(1, 5)))]
        elif change == "columns":
            array = array.reshape(len(array), -1)[:, :-1] if array.ndim > 1 else array[:, None]
        elif change == "ndim":
            array = array.reshape(-1)
        elif change == "nan":
            array = array.astype(np.float64)
            array.flat[draw(st.integers(0, array.size - 1))] = draw(st.sampled_from([np.nan, np.inf]))
        else:
            array = -np.abs(array) - 1
        np.save(target, array, allow_pickle=False)
        return f"npy {change} {target.name}"
    if kind == "csv":
        lines = target.read_text().splitlines()
        row = draw(st.integers(0, len(lines) - 1))
        cells = lines[row].split(",")
        cells[draw(st.integers(0, len(cells) - 1))] = draw(st.sampled_from(["", "x", "nan", "inf", "-1", "0", "1e999"]))
        lines[row] = ",".join(cells)
        target.write_text("\n".join(lines) + "\n")
        return f"csv {target.name}"
    if kind == "truncate":
        if target.exists():
            size = target.stat().st_size
            target.write_bytes(target.read_bytes()[: draw(st.integers(0, max(0, size - 1)))])
        return f"truncate {target.name}"
    if kind == "garbage":
        target.write_bytes(draw(st.binary(max_size=64)))
        return f"garbage {target.name}"
    _remove(target)
    if kind == "symlink_out":
        target.symlink_to(outside)
    elif kind == "symlink_zero":
        target.symlink_to("/dev/zero")
    elif kind == "dangling":
        target.symlink_to(run / "nowhere")
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    return f"{kind} {target.relative_to(run)}"


def _remove(path):
    if path.is_symlink() or path.is_file() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _check(code, err, before, after, what):
    event(f"exit {code}")
    assert code in (0, 2), f"{what}: exit {code}\n{err}"
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, f"{what}: {err}"
        assert after == before, f"{what}: exit 2 but files changed"


def _valid_result(run):
    """After exit 0 the run's JSON files hold what their schemas say: checked here without the readers, so a
    reader that lets a damaged file through fails the example."""
    config = json.loads((run / run_folder.CONFIG_NAME).read_text())
    schema.validate(config, schema.RunConfig, "config.json")
    estimates = json.loads(run_folder.estimates_path(run).read_text())
    schema.validate(estimates, schema.EstimatesFile, "estimates.json")
    names = {layer["name"] for layer in config["layers"]}
    for name, layers in estimates["estimates"].items():
        assert set(layers) <= names, f"estimates of unknown layers {set(layers) - names}"
        for splits in layers.values():
            for by_epoch in splits.values():
                for entry in by_epoch.values():
                    if name != "callback" and "skipped" not in entry:
                        assert entry.get("n_inputs") is not None and entry.get("log_n") is not None
    for path in (run / run_folder.IP_DIR).glob("*_*.json"):
        if path.name != run_folder.ESTIMATES_NAME:
            schema.validate(json.loads(path.read_text()), schema.IPValues, path.name)


@contextmanager
def _work(pristine):
    """A copy of the pristine run (``cp -a``-like) and a file outside it that links may point to."""
    root = Path(tempfile.mkdtemp(prefix="fuzz-"))
    try:
        run = Path(shutil.copytree(pristine, root / "run", symlinks=True))
        outside = root / "outside.txt"
        outside.write_text("a file of the user's, outside the run folder\n")
        yield root, run, outside
    finally:
        for dirpath, dirnames, _ in os.walk(root):  # a folder made unreadable by a mutation, readable again
            for name in dirnames:
                path = Path(dirpath) / name
                if not path.is_symlink():
                    path.chmod(0o755)
        shutil.rmtree(root, ignore_errors=True)


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_estimation_of_mutated_run_folders(pristine, capsys, data):
    with _work(pristine) as (root, run, outside):
        what = _mutate(run, outside, data.draw)
        before = _snapshot(root)
        capsys.readouterr()
        draws_figures = data.draw(st.integers(0, 4)) == 0  # a fifth of the examples draws the figures too
        argv = [str(run), *(ESTIMATE[1:] if draws_figures else ESTIMATE)]  # ESTIMATE[0] is --no-plots
        with _time_limit(SECONDS):
            code = information_plane.main(argv)
        _check(code, capsys.readouterr().err, before, _snapshot(root), what)
        if code == 0:
            _valid_result(run)


def _same_identity(run: Path, other: Path) -> bool:
    """Whether the two folders hold one run, as the comparison must see it; a mutation that deletes a part of
    the defining config (``flags``, ``seed``) makes another, valid run, which may be compared with the copy."""
    try:
        with _time_limit(SECONDS):
            return run_folder.run_identity(run) == run_folder.run_identity(other)
    except (InputError, OSError):
        return True  # an unreadable run must be refused anyway


@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_comparison_of_mutated_run_folders(pristine, capsys, data):
    with _work(pristine) as (root, run, outside):
        other = Path(shutil.copytree(pristine, root / "copy", symlinks=True))  # the same run, copied
        runs = [run, other] if data.draw(st.booleans()) else [run]
        what = _mutate(run, outside, data.draw)
        out = root / "compare"
        out_kind = data.draw(st.sampled_from(["new", "file", "devnull", "link", "link_inside"]))
        if out_kind == "file":
            out.write_text("not a folder\n")
        elif out_kind == "devnull":
            out = Path(os.devnull)
        elif out_kind == "link":
            out.symlink_to(outside)
        elif out_kind == "link_inside":
            out.mkdir()
            (out / "estimates.csv").symlink_to(outside)
        before = _snapshot(root)
        capsys.readouterr()
        with _time_limit(SECONDS):
            code = information_plane.main([*map(str, runs), "--out", str(out), *ESTIMATE])
        err = capsys.readouterr().err
        _check(code, err, before, _snapshot(root), f"{what}, out {out_kind}, {len(runs)} runs")
        if len(runs) == 2 and _same_identity(run, other):
            assert code == 2, f"{what}: a run and its copy were compared as two runs"
        if code == 0:
            assert out_kind == "new" and (out / "estimates.csv").is_file()


@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_training_resume_of_mutated_run_folders(pristine, capsys, data):
    with _work(pristine) as (root, run, outside):
        what = _mutate(run, outside, data.draw)
        before = _snapshot(root)
        capsys.readouterr()
        with _time_limit(4 * SECONDS):
            code = train_main(TRAIN + ["--out", str(run)], defaults=mi_mnist_dropout.DEFAULTS, family="mnist")
        _check(code, capsys.readouterr().err, before, _snapshot(root), what)
        assert outside.read_text().startswith("a file of the user's"), f"{what}: a file outside the run changed"
        if code == 0:  # a finished or resumed run: its files of every epoch are there and read
            config = run_folder.load_config(run)
            assert not run_folder.missing_epoch_files(run, config, run_folder.expected_epochs(config, 2))
            assert math.isfinite(float(run_folder.load_history(run / run_folder.HISTORY_NAME)[2]["loss"]))
