"""Throughput of the estimation on a local Dask cluster: tasks per second with 1 and with 2 workers, and
the efficiency of 2 against 1 (speed-up / 2).

    python benchmarks/bench_cluster.py [RUN ...] [--max-inputs N] [--epochs SEL] [--estimators mixture]

Each measurement estimates the same runs from scratch, in shadow copies of the run folders (their
``config.json``, ``history.csv``, callback files and a link to the representations; never their
``IP/estimates.json``), through the command's own path (:func:`utils.analysis.cluster.estimate_on_cluster`).
The local cluster is started before the clock starts. Without RUN, a digits run (no download) is trained
into a temporary folder first: its tasks are short (about 0.1 s), so the figure is a floor that shows the
per-task overhead; MNIST-size tasks (seconds to minutes each) come closer to the ideal.
Every worker has one thread, so 2 workers need 2 free cores: stop other work for the measurement.

The last line printed is JSON: {"cpu", "cores", "tasks", "tasks_per_s_1", "tasks_per_s_2",
"efficiency_2_vs_1"}.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.machine import cpu_name
from utils import run_folder
from utils.analysis import estimation
from utils.analysis.cluster import dask_client, estimate_on_cluster
from utils.cli import OneLineParser, int_arg, run_command

PROG = "bench_cluster.py"
DIGITS = [
    "--dataset",
    "digits",
    "--epochs",
    "24",
    "--save-every",
    "1",
    "--batch-size",
    "16",
    "--lr",
    "0.01",
    "--no-analyze",
]


def shadow(run: Path, into: Path) -> Path:
    """A copy of the run folder that shares its representations and has no estimates."""
    copy = into / run.name
    copy.mkdir(parents=True)
    for name in (run_folder.CONFIG_NAME, run_folder.HISTORY_NAME):
        if (run / name).exists():
            shutil.copy2(run / name, copy / name)
    (copy / run_folder.IP_DIR).mkdir()
    for path in (run / run_folder.IP_DIR).glob("*.json"):
        if path.name != run_folder.ESTIMATES_NAME:
            shutil.copy2(path, copy / run_folder.IP_DIR / path.name)
    (copy / run_folder.REPR_DIR).symlink_to((run / run_folder.REPR_DIR).resolve())
    return copy


def measure(runs: Sequence[Path], workers: int, request: estimation.Request, scratch: Path) -> tuple[int, float]:
    """(tasks, seconds) of estimating ``runs`` from scratch on a local cluster of ``workers``."""
    copies = [shadow(run, scratch / f"workers{workers}") for run in runs]
    prepared = [estimation.prepare_run(copy, request) for copy in copies]
    tasks = sum(len(job.wanted) for run in prepared for job in run.jobs)
    with dask_client(workers=workers) as client:
        if client is None:  # dask_client gives None only when no workers are asked for
            raise RuntimeError("no local cluster was started")
        client.wait_for_workers(workers)
        client.run(lambda: None)  # every worker imported and ready before the clock starts
        start = time.perf_counter()
        estimate_on_cluster(client, prepared, request)
        return tasks, time.perf_counter() - start


def train_digits(into: Path) -> Path:
    """The default workload: a digits run of the training script, trained into ``into``."""
    run = into / "digits-fc-gaussian-p0.2-seed0"
    script = Path(__file__).resolve().parents[1] / "mi_mnist_dropout.py"
    subprocess.run([sys.executable, str(script), *DIGITS, "--out", str(run)], check=True, stdout=subprocess.DEVNULL)
    return run


def _parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, metavar="RUN", help="run folders (default: a digits run)")
    parser.add_argument("--max-inputs", type=int_arg(2), default=None, help="seeded subset of each split")
    parser.add_argument("--epochs", default=None, help="epoch selection, e.g. 0-20 (default: all saved)")
    parser.add_argument("--estimators", default=",".join(estimation.DEFAULT_ESTIMATORS), help="comma-separated")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def body() -> None:
        args = _parser().parse_args(argv)
        request = estimation.Request(
            estimators=tuple(e for e in args.estimators.split(",") if e),
            epochs=args.epochs,
            max_inputs=args.max_inputs,
            progress=False,
        )
        with tempfile.TemporaryDirectory(prefix="bench_cluster_") as tmp:
            scratch = Path(tmp)
            runs = args.runs or [train_digits(scratch / "trained")]
            results = {}
            for workers in (1, 2):
                tasks, seconds = measure(runs, workers, request, scratch)
                results[workers] = tasks / seconds
                print(
                    f"{workers} worker{'s' if workers > 1 else ''}: {tasks} tasks in {seconds:.1f} s, "
                    f"{tasks / seconds:.2f} tasks/s",
                    flush=True,
                )
        summary = {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "tasks": tasks,
            "tasks_per_s_1": round(results[1], 3),
            "tasks_per_s_2": round(results[2], 3),
            "efficiency_2_vs_1": round(results[2] / (2 * results[1]), 3),
        }
        print(f"efficiency of 2 workers against 1: {summary['efficiency_2_vs_1']:.0%} on {summary['cpu']}")
        print(json.dumps(summary))

    return run_command(PROG, body)


if __name__ == "__main__":
    sys.exit(main())
