"""Estimation on a real Dask cluster on the loopback address: a local cluster (``--workers 2``), an
existing scheduler and workers started as docs/cluster.md says (``--scheduler``) whose worker is killed
mid-run, a client that resumes, and the one-line errors for a scheduler that lacks the toolkit or an
address that does not speak Dask. Every
result must be byte-identical to the in-process path's with one BLAS thread (each worker task's setting:
a float32 product's rounding depends on how BLAS splits it between threads)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from tests.test_information_plane import _train
from utils import run_folder
from utils.analysis import cluster, information_plane
from utils.analysis.estimation import CALLBACK

distributed = pytest.importorskip("distributed")

KINDS = ("gaussian", "information")
OUTPUTS = [
    *(f"{kind}/IP/estimates.json" for kind in KINDS),
    "comparison/estimates.csv",
    "comparison/aggregate.csv",
    "comparison/compression.csv",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cluster") / "trained"
    for kind in KINDS:
        _train(root / kind, "--dropout", kind)
    return root


def _copy(trained: Path, to: Path) -> list[str]:
    shutil.copytree(trained, to)
    return [str(to / kind) for kind in KINDS]


def _outputs(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in OUTPUTS}


@pytest.fixture(scope="module")
def reference(trained, tmp_path_factory) -> dict[str, bytes]:
    """The in-process result, with one BLAS thread as on every worker."""
    root = tmp_path_factory.mktemp("cluster") / "in_process"
    with threadpool_limits(limits=1):
        information_plane.analyze_runs(
            _copy(trained, root), request=information_plane.Request(progress=False), plots=False
        )
    return _outputs(root)


def _estimate(runs: list[str], *flags: str) -> int:
    return information_plane.main([*runs, "--no-plots", "--no-progress", *flags])


def test_local_cluster_gives_the_in_process_result(trained, reference, tmp_path):
    runs = _copy(trained, tmp_path / "runs")
    assert _estimate(runs, "--workers", "2") == 0
    assert _outputs(tmp_path / "runs") == reference


DASK = Path(sys.executable).with_name("dask")
BLOCK_TOOLKIT = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('utils', 'mi_estimators'):\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
    "sys.meta_path.insert(0, Block())\n"
    "from distributed.cli.dask_scheduler import main\n"
    "main()\n"
)
"""A scheduler whose Python cannot import the toolkit, as in an environment where it was not installed."""


class Cluster:
    """Processes started as docs/cluster.md says, from a folder outside the repository and without
    PYTHONPATH: ``dask scheduler`` and ``dask worker --nthreads 1`` (one with its nanny, one without, so
    that its BLAS uses every core unless the task pins it)."""

    def __init__(self, where: Path, scheduler_cmd: list[str]) -> None:
        self.where = where
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.endswith("_NUM_THREADS")}
        self.processes: list[subprocess.Popen] = []
        info = where / "scheduler.json"
        self._start(
            "scheduler",
            [*scheduler_cmd, "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(info)],
        )
        deadline = time.monotonic() + 60
        while not info.exists() or not info.read_text().strip():
            assert time.monotonic() < deadline, (where / "scheduler.log").read_text()
            time.sleep(0.1)
        self.address = json.loads(info.read_text())["address"]

    def _start(self, name: str, cmd: list[str]) -> None:
        log = (self.where / f"{name}.log").open("w")
        self.processes.append(subprocess.Popen(cmd, cwd=self.where, env=self.env, stdout=log, stderr=subprocess.STDOUT))

    def add_workers(self) -> None:
        for name, nanny in (("worker-nanny", "--nanny"), ("worker-no-nanny", "--no-nanny")):
            self._start(
                name,
                [
                    str(DASK),
                    "worker",
                    self.address,
                    "--nthreads",
                    "1",
                    nanny,
                    "--no-dashboard",
                    "--local-directory",
                    str(self.where),
                ],
            )
        with distributed.Client(self.address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def loopback_cluster(tmp_path_factory):
    """A scheduler and two one-thread workers on 127.0.0.1, as a user would start them."""
    started = Cluster(tmp_path_factory.mktemp("dask"), [str(DASK), "scheduler"])
    try:
        started.add_workers()
        yield started
    finally:
        started.stop()


def test_a_killed_worker_changes_nothing(trained, reference, tmp_path, monkeypatch, loopback_cluster):
    """SIGKILL one worker when the first task's result is stored: its tasks run again elsewhere."""
    with distributed.Client(loopback_cluster.address) as watcher:
        pids = watcher.run(os.getpid)
    killed = []
    store = run_folder.store_estimates

    def store_and_kill(run_dir, entries):
        if not killed and any(name != CALLBACK for name, *_ in entries):
            address, pid = sorted(pids.items())[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(address)
        return store(run_dir, entries)

    monkeypatch.setattr(run_folder, "store_estimates", store_and_kill)
    runs = _copy(trained, tmp_path / "runs")
    assert _estimate(runs, "--scheduler", loopback_cluster.address) == 0
    assert killed
    assert _outputs(tmp_path / "runs") == reference


def test_a_stopped_client_resumes(trained, reference, tmp_path, monkeypatch, loopback_cluster):
    """Half the entries stored before (as by a client stopped midway): the cluster computes only the
    rest, and the files are the same."""
    runs = _copy(trained, tmp_path / "runs")
    with threadpool_limits(limits=1):
        for run in runs:
            information_plane.estimate_run(run, information_plane.Request(progress=False, epochs="0-1"))
    submitted = []
    submit = distributed.Client.submit

    def count(self, fn, *args, **kwargs):
        submitted.append(args[:5])
        return submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(distributed.Client, "submit", count)
    assert _estimate(runs, "--scheduler", loopback_cluster.address) == 0
    every = (
        len(KINDS) * len(run_folder.SPLITS) * 4 * len(information_plane.DEFAULT_ESTIMATORS)
    )  # runs, splits, epochs 0-3, estimators
    assert len(submitted) == every // 2 and all(epoch >= 2 for *_, epoch in submitted)
    assert _outputs(tmp_path / "runs") == reference


def test_threads_flag_limits_the_in_process_estimation(trained, reference, tmp_path, monkeypatch, capsys):
    seen = []
    original = information_plane.estimate_run

    def recording(*args, **kwargs):
        seen.extend(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")
        return original(*args, **kwargs)

    monkeypatch.setattr(information_plane, "estimate_run", recording)
    root = tmp_path / "runs"
    assert _estimate(_copy(trained, root), "--threads", "1") == 0
    assert seen and set(seen) == {1}
    assert _outputs(root) == reference
    assert _estimate(_copy(trained, tmp_path / "again"), "--threads", "1", "--workers", "2") == 2
    assert "--threads sets the in-process estimation's threads" in capsys.readouterr().err
    assert _estimate(_copy(trained, tmp_path / "zero"), "--threads", "0") == 2


def test_cluster_flags_are_checked(trained, tmp_path, capsys, monkeypatch):
    runs = _copy(trained, tmp_path / "runs")
    assert _estimate(runs, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1") == 2
    assert "not allowed with" in capsys.readouterr().err
    assert _estimate(runs, "--workers", "0") == 2
    capsys.readouterr()
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 2)
    assert _estimate(runs, "--scheduler", "tcp://127.0.0.1:1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'" in err[0]
    assert not run_folder.estimates_path(runs[0]).exists()


def test_a_scheduler_without_the_toolkit_is_one_line(trained, tmp_path, capsys, tmp_path_factory):
    started = Cluster(tmp_path_factory.mktemp("dask"), [sys.executable, "-c", BLOCK_TOOLKIT])
    try:
        runs = _copy(trained, tmp_path / "runs")
        before = {p: p.read_bytes() for p in Path(tmp_path / "runs").rglob("*") if p.is_file()}
        assert _estimate(runs, "--scheduler", started.address) == 2
    finally:
        started.stop()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert f"the scheduler at {started.address}" in err[0] and "No module named 'utils" in err[0], err[0]
    assert "pip install -e ." in err[0]
    assert {p: p.read_bytes() for p in Path(tmp_path / "runs").rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("answer", [b"", b"SSH-2.0-OpenSSH_9.2\r\n"], ids=["silent", "another protocol"])
def test_a_port_that_does_not_speak_dask_is_one_line(trained, tmp_path, capsys, monkeypatch, answer):
    """The connect timeout covers the handshake: a listener that never answers, or answers in another
    protocol, gives one line within it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted = []

    def serve():
        while True:
            try:
                peer, _ = listener.accept()
            except OSError:
                return
            accepted.append(peer)
            peer.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 3)
    runs = _copy(trained, tmp_path / "runs")
    began = time.monotonic()
    try:
        assert _estimate(runs, "--scheduler", f"tcp://127.0.0.1:{listener.getsockname()[1]}") == 2
    finally:
        listener.close()
    assert time.monotonic() - began < 3 + 10
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach the Dask scheduler at 'tcp://127.0.0.1:" in err[0], err
    assert not run_folder.estimates_path(runs[0]).exists()


@pytest.mark.parametrize("address", ["ucx://127.0.0.1:1", "nosuch://127.0.0.1:1"])
def test_an_unusable_scheme_is_one_line(trained, tmp_path, capsys, address):
    runs = _copy(trained, tmp_path / "runs")
    assert _estimate(runs, "--scheduler", address) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot reach the Dask scheduler at {address!r}" in err[0], err
