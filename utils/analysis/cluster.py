"""Estimation on a Dask cluster: one task per (run, layer, split, epoch, estimator) entry.

    python -m utils.analysis.information_plane RUN [RUN ...] --workers 2          # a local cluster
    python -m utils.analysis.information_plane RUN [RUN ...] --scheduler tcp://HOST:8786

A task (:func:`estimate_pinned`, around :func:`utils.analysis.estimation.estimate_entry`) carries its
arrays, reads no file and runs with one BLAS/OpenMP thread, so that any worker, started by hand or by
Dask's nanny, gives the same entry: byte-identical to the in-process path's with one BLAS thread. The
client is the only writer; it stores every entry in the run's ``IP/estimates.json`` as it arrives
(:func:`utils.run_folder.store_estimates`), so a stopped command computes only what is missing when
started again. Tasks are submitted in a window of ``TASKS_PER_THREAD`` per worker thread, so that the
client and the scheduler hold no more tasks' arrays than that. How to start a cluster, and why the
entries do not depend on the scheduling: ``docs/cluster.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Hashable, Iterator, Sequence

from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from mi_estimators.checks import InputError
from utils import run_folder
from utils.analysis.estimation import PreparedRun, Request, begin_estimates, entry_key, estimate_entry, job_arrays

if TYPE_CHECKING:  # Dask is imported only where a cluster is asked for
    from distributed import Client


PINNED_THREADS = {
    name: "1"
    for name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    )
}
"""Set in every worker process before it starts: one thread per task, whatever the machine."""
TASKS_PER_THREAD = 3
"""Tasks in flight per worker thread: enough to keep every worker busy while the client stores results."""
CONNECT_TIMEOUT_S = 30


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise InputError("--scheduler and --workers need Dask: pip install 'dask[distributed]'") from None
    return distributed


@contextlib.contextmanager
def pinned_threads() -> Iterator[None]:
    """Dask's configuration for the worker processes started in the block: one thread per task."""
    import dask

    with dask.config.set({"distributed.nanny.pre-spawn-environ": PINNED_THREADS}):
        yield


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None) -> Iterator[Client | None]:
    """A client of the cluster at ``scheduler``, of a local cluster of ``workers`` processes (one thread
    each) started and stopped here, or ``None`` (in-process estimation) when neither is given."""
    if scheduler is not None and workers is not None:
        raise InputError("give --scheduler (an existing cluster) or --workers (a local one), not both")
    if scheduler is None and workers is None:
        yield None
        return
    distributed = _distributed()
    if scheduler is None:
        with (
            pinned_threads(),
            distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
            ) as local,
            distributed.Client(local) as client,
        ):
            yield client
        return
    _handshake(distributed, scheduler)
    with distributed.Client(scheduler, timeout=CONNECT_TIMEOUT_S) as client:
        _check_toolkit(client, scheduler)
        yield client


def _handshake(distributed: Any, scheduler: str) -> None:
    """Ask the scheduler who it is, in a loop of its own and within CONNECT_TIMEOUT_S: a port where
    something else answers, or nothing does, would otherwise hang the client or end in an unrelated
    exception (Dask's connect timeout does not cover the handshake)."""

    async def identity() -> dict[str, Any]:
        async with distributed.rpc(scheduler, timeout=CONNECT_TIMEOUT_S) as remote:
            return await remote.identity()

    why = None
    try:
        answer = asyncio.run(asyncio.wait_for(identity(), CONNECT_TIMEOUT_S))
    except (asyncio.TimeoutError, TimeoutError):
        why = f"no Dask answer within {CONNECT_TIMEOUT_S} s"
    except Exception as err:  # every failure of the client's comm stack is the address's problem
        why = f"{type(err).__name__}: {err}"
    else:
        if not isinstance(answer, dict) or answer.get("type") != "Scheduler":
            why = f"it answers as {answer.get('type') if isinstance(answer, dict) else answer!r}, not as a scheduler"
    if why is not None:
        raise InputError(f"cannot reach the Dask scheduler at {scheduler!r}: {why}")


def _toolkit_missing() -> str | None:
    """Runs in a scheduler or worker process (sent by value, so it needs nothing of the toolkit there):
    None where the toolkit imports, else the import error."""
    import importlib

    try:
        importlib.import_module("utils.analysis.estimation")
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None


def _check_toolkit(client: Client, scheduler: str) -> None:
    """The scheduler unpickles the tasks as well as the workers: both must import the toolkit."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        missing = {f"the scheduler at {scheduler}": client.run_on_scheduler(_toolkit_missing)}
        missing.update({f"the worker at {address}": why for address, why in client.run(_toolkit_missing).items()})
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    bad = {who: why for who, why in missing.items() if why is not None}
    if bad:
        who, why = next(iter(bad.items()))
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise InputError(
            f"{who}{more} cannot import this toolkit ({why}): start every Dask scheduler and worker from "
            "the environment where `pip install -e .` installed it (see docs/cluster.md)"
        )


def estimate_pinned(*args: Any) -> dict[str, Any]:
    """A Dask task: :func:`~utils.analysis.estimation.estimate_entry` with one BLAS/OpenMP thread, whatever
    the worker was started with, so that its entry is the in-process one with one thread."""
    with threadpool_limits(limits=1):
        return estimate_entry(*args)


def _threads(client: Client) -> int:
    return max(1, sum(client.nthreads().values()))


def estimate_on_cluster(client: Client, prepared: Sequence[PreparedRun], request: Request) -> list[dict[str, Any]]:
    """Compute the jobs of every prepared run on the cluster, store each entry as it arrives and return
    each run's ``estimates.json`` content (in the order of ``prepared``)."""
    distributed = _distributed()
    import dask

    data = [begin_estimates(run) for run in prepared]
    on_worker = replace(request, progress=False)  # a worker's bars would go to its log only
    total = sum(len(job.wanted) for run in prepared for job in run.jobs)
    window = TASKS_PER_THREAD * _threads(client)
    pending = distributed.as_completed()
    where: dict[Hashable, tuple[int, tuple]] = {}
    bar = tqdm(total=total, desc="estimates on the cluster", unit="estimate", disable=not request.progress)

    def store(futures: Sequence[Any]) -> None:
        finished: dict[int, dict] = {}
        for future in futures:
            index, key = where.pop(future.key)
            finished.setdefault(index, {})[key] = future.result()  # re-raises the task's error here
        for index, entries in finished.items():
            data[index] = run_folder.store_estimates(prepared[index].run_dir, entries)
        bar.update(len(futures))

    # The arrays travel inside the tasks by design (see the module's docstring): no warning about it.
    with bar, dask.config.set({"distributed.admin.large-graph-warning-threshold": "4GiB"}):
        try:
            for index, run in enumerate(prepared):
                for job in run.jobs:
                    f, alphas = job_arrays(job)
                    for name, settings in job.wanted.items():
                        future = client.submit(
                            estimate_pinned,
                            name,
                            settings,
                            job.layer,
                            job.inputs,
                            job.epoch,
                            f,
                            alphas,
                            on_worker,
                            pure=False,
                        )
                        where[future.key] = (index, entry_key(name, job))
                        pending.add(future)
                        while pending.count() >= window:
                            store([next(pending)])
            for batch in pending.batches():
                store(batch)
        finally:
            for future in list(pending.futures):  # after an error: nothing left running for this client
                future.cancel()
    return data
