"""Estimation on a real Dask cluster on the loopback address: a local cluster (``--workers 2``), an
existing scheduler (``--scheduler``) whose worker is killed mid-run, and a client that resumes. Every
result must be byte-identical to the in-process path's with one BLAS thread (each worker task's setting:
a float32 product's rounding depends on how BLAS splits it between threads)."""

import os
import shutil
import signal
from pathlib import Path

import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from tests.test_information_plane import _train
from utils import run_folder as rf
from utils.analysis import cluster
from utils.analysis import information_plane as ip
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
        ip.analyze_runs(_copy(trained, root), request=ip.Request(progress=False), plots=False)
    return _outputs(root)


def _estimate(runs: list[str], *flags: str) -> int:
    return ip.main([*runs, "--no-plots", "--no-progress", *flags])


def test_local_cluster_gives_the_in_process_result(trained, reference, tmp_path):
    runs = _copy(trained, tmp_path / "runs")
    assert _estimate(runs, "--workers", "2") == 0
    assert _outputs(tmp_path / "runs") == reference


@pytest.fixture
def loopback_cluster():
    """A scheduler and two worker processes (one thread each) on 127.0.0.1, as a user would start them."""
    with (
        cluster.pinned_threads(),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as lc,
    ):
        yield lc


def test_a_killed_worker_changes_nothing(trained, reference, tmp_path, monkeypatch, loopback_cluster):
    """SIGKILL one worker when the first task's result is stored: its tasks run again elsewhere."""
    with distributed.Client(loopback_cluster) as watcher:
        pids = watcher.run(os.getpid)
    killed = []
    store = rf.store_estimates

    def store_and_kill(run_dir, entries):
        if not killed and any(name != CALLBACK for name, *_ in entries):
            address, pid = sorted(pids.items())[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(address)
        return store(run_dir, entries)

    monkeypatch.setattr(rf, "store_estimates", store_and_kill)
    runs = _copy(trained, tmp_path / "runs")
    assert _estimate(runs, "--scheduler", loopback_cluster.scheduler_address) == 0
    assert killed
    assert _outputs(tmp_path / "runs") == reference


def test_a_stopped_client_resumes(trained, reference, tmp_path, monkeypatch, loopback_cluster):
    """Half the entries stored before (as by a client stopped midway): the cluster computes only the
    rest, and the files are the same."""
    runs = _copy(trained, tmp_path / "runs")
    with threadpool_limits(limits=1):
        for run in runs:
            ip.estimate_run(run, ip.Request(progress=False, epochs="0-1"))
    submitted = []
    submit = distributed.Client.submit

    def count(self, fn, *args, **kwargs):
        submitted.append(args[:5])
        return submit(self, fn, *args, **kwargs)

    monkeypatch.setattr(distributed.Client, "submit", count)
    assert _estimate(runs, "--scheduler", loopback_cluster.scheduler_address) == 0
    every = len(KINDS) * len(rf.SPLITS) * 4 * len(ip.DEFAULT_ESTIMATORS)  # runs, splits, epochs 0-3, estimators
    assert len(submitted) == every // 2 and all(epoch >= 2 for *_, epoch in submitted)
    assert _outputs(tmp_path / "runs") == reference


def test_threads_flag_limits_the_in_process_estimation(trained, reference, tmp_path, monkeypatch, capsys):
    seen = []
    original = ip.estimate_run

    def recording(*args, **kwargs):
        seen.extend(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")
        return original(*args, **kwargs)

    monkeypatch.setattr(ip, "estimate_run", recording)
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
    assert not rf.estimates_path(runs[0]).exists()
