"""Estimate the information planes of run folders and draw them.

    python -m utils.analysis.information_plane RUN [RUN ...] [--estimators mixture,binning] [--epochs 0-20]
        [--draws train=1,test=6] [--max-inputs N] [--out DIR] [--workers N | --scheduler ADDRESS]

For every analysed dropout layer, split and saved epoch of each run, the selected estimators
(:mod:`utils.analysis.registry`) turn the saved noise-free representations f(x) into I(X;Z) and
I(Y;Z) (Adilova, Geiger & Fischer, ICLR 2023). The noise level is read from the run's ``config.json``,
never from a flag. Results go to the run's ``IP/estimates.json`` (``utils.run_folder``), merged under a
file lock and written after every epoch, so an interrupted, extended or parallel (``--epochs`` shared
out between processes) analysis computes only what is missing. An entry is recomputed when its
settings change or when a file it was computed from changed (size and content hash). With several
runs, or with ``--out``, the estimates of all runs also go to ``DIR/estimates.csv`` (one row per run,
layer, split, epoch and estimator) with seed-aggregated planes (:mod:`utils.analysis.comparison`).
With ``--workers`` or ``--scheduler`` the estimates are computed on a Dask cluster, one task per entry,
and stored by this process as they arrive (:mod:`utils.analysis.cluster`); the entries are the same.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from threadpoolctl import threadpool_limits

from mi_estimators.checks import InputError
from utils import run_folder
from utils.analysis.cluster import dask_client, estimate_on_cluster
from utils.analysis.comparison import check_comparison_out, write_comparison
from utils.analysis.estimation import (
    DEFAULT_DRAWS,
    DEFAULT_ESTIMATORS,
    PreparedRun,
    Request,
    announce,
    estimate_run,
    parse_epochs,
    prepare_run,
)
from utils.analysis.figure_layout import FORMATS, formats_arg
from utils.analysis.registry import ESTIMATORS
from utils.analysis.run_figures import draw_run_figures, layer_panels
from utils.analysis.run_groups import check_distinct_runs
from utils.cli import (
    CommandError,
    OneLineParser,
    float_arg,
    int_arg,
    is_user_error,
    log_to_stderr,
    run_command,
    user_message,
)

MAX_WORKERS = 1024
"""Local worker processes beyond this are a typo: a machine with more cores runs a cluster (--scheduler)."""
MAX_THREADS = 1024
"""BLAS threads beyond this are a typo (--threads)."""
MAX_DRAWS = 1000
"""Noise draws per input beyond this cost 1,000 times the default estimate for an error already far
below the input-sampling error: a typo, refused before any work."""


def draws_arg(text: str) -> tuple[tuple[str, int], ...]:
    """``--draws``: ``6`` (both splits) or ``train=2,test=6``; a split left out keeps its default."""
    draws = dict(DEFAULT_DRAWS)
    parse = int_arg(1, MAX_DRAWS)
    if "=" not in text:
        return tuple((split, parse(text)) for split in draws)
    for part in filter(None, text.split(",")):
        split, sep, count = part.partition("=")
        if not sep or split.strip() not in draws:
            raise argparse.ArgumentTypeError(f"bad --draws part {part!r}: use e.g. 6 or train=2,test=6")
        draws[split.strip()] = parse(count)
    return tuple(draws.items())


def summary_table(data: dict[str, Any]) -> str:
    """One line per estimator, layer and split: first and last epoch's (I(X;Z), I(Y;Z)); a skipped estimate
    is followed by a line with the reason it states in ``IP/estimates.json``."""
    rows = [
        f"{'estimator':<12} {'layer':<14} {'split':<6} {'epochs':>7}  {'first (I_XZ, I_YZ)':>20}  "
        f"{'last (I_XZ, I_YZ)':>20}"
    ]

    def fmt(entry: dict) -> str:
        if "skipped" in entry:
            return f"{'skipped':>20}"
        xz, zy = (f"{entry[k]:.3f}" if entry.get(k) is not None else "-" for k in ("mi_xz", "mi_zy"))
        return f"{'(' + xz + ', ' + zy + ')':>20}"

    for name, layers in sorted(data["estimates"].items()):
        for layer, splits in layers.items():
            for split, by_epoch in splits.items():
                epochs = sorted(by_epoch, key=int)
                rows.append(
                    f"{name:<12} {layer:<14} {split:<6} {len(epochs):>7}  {fmt(by_epoch[epochs[0]])}  "
                    f"{fmt(by_epoch[epochs[-1]])}"
                )
                reasons = dict.fromkeys(e["skipped"] for e in by_epoch.values() if "skipped" in e)
                rows += [f"{'':<12} skipped: {reason}" for reason in reasons]
    return "\n".join(rows)


def analyze(
    run_dir: str | Path, *, plots: bool = True, formats: Sequence[str] = ("png",), request: Request | None = None
) -> list[Path]:
    """:func:`estimate_run`, print the summary table, draw the run's figures and print their paths."""
    return analyze_runs([run_dir], request=request, plots=plots, formats=formats)


def report_run(
    run_dir: str | Path,
    data: dict[str, Any],
    request: Request,
    *,
    plots: bool = True,
    formats: Sequence[str] = ("png",),
) -> list[Path]:
    """Print the summary table of a run's estimates, draw its figures and print their paths."""
    print(summary_table(data), flush=True)
    if not plots:
        return []
    selection = parse_epochs(request.epochs) if request.epochs else None
    if not _drawable(Path(run_dir), data, selection):
        print(f"no figure: the estimates of {run_dir} chosen give no information plane to draw", flush=True)
        return []
    if request.epochs:
        written = draw_run_figures(
            run_dir,
            formats=formats,
            estimates=data,
            epochs=parse_epochs(request.epochs),
            suffix="_epochs" + request.epochs,
        )
    else:
        written = draw_run_figures(run_dir, formats=formats, estimates=data)
    for path in written:
        print(f"figure: {path}", flush=True)
    return written


def _drawable(run_dir: Path, data: dict[str, Any], epochs: Any) -> bool:
    """Whether :func:`draw_run_figures` would draw anything (it refuses to draw nothing): a training history,
    a plane of some layer, or mixture entries with their convergence subsets."""
    if (run_dir / run_folder.HISTORY_NAME).is_file():
        return True
    estimates = data["estimates"]
    for layer in run_folder.load_config(run_dir)["layers"]:
        if layer_panels(estimates, layer, epochs=epochs):
            return True
        splits = estimates.get("mixture", {}).get(layer["name"], {}).values()
        if any(entry.get("convergence") for by_epoch in splits for entry in by_epoch.values()):
            return True
    return False


def comparison_dir(runs: Sequence[Path], out: Path | None) -> Path | None:
    """Where a comparison of runs goes: ``out``, or with several runs
    ``<the deepest folder holding them>/comparison``."""
    if out is not None or len(runs) == 1:
        return out
    # The deepest folder holding every run (not the current folder, which may be anywhere).
    return Path(os.path.commonpath([Path(run).absolute().parent for run in runs])) / "comparison"


def analyze_runs(
    runs: Sequence[str | Path],
    *,
    out: str | Path | None = None,
    request: Request | None = None,
    plots: bool = True,
    formats: Sequence[str] = ("png",),
    client: Any = None,
) -> list[Path]:
    """Estimate every run (in this process, or with a ``dask.distributed.Client`` on its cluster:
    :mod:`utils.analysis.cluster`), print and draw each, then (several runs, or ``out``) write the
    comparison table and the seed-aggregated planes (:func:`utils.analysis.comparison.write_comparison`);
    returns the written paths.

    Plan, check, then write: every run's inputs, every file that will be written (estimates, figures, the
    comparison) and the predicted time are checked before the first byte is written, so a command that
    fails at that stage changes nothing."""
    runs = _distinct_runs(runs)
    if out is not None and not str(out).strip():
        raise InputError("out must name a folder, got an empty string")
    bad = [f for f in formats if f not in FORMATS]
    if isinstance(formats, str) or bad or not formats:
        raise InputError(f"unknown figure format(s) {bad or formats!r}; use {', '.join(FORMATS)}")
    request = request or Request()
    folder = comparison_dir(runs, None if out is None else Path(out))
    if folder is not None:
        check_comparison_out(folder, plots=plots)
    prepared = [prepare_run(run, request, figures=plots) for run in runs]
    same_runs(prepared)
    announce(prepared, in_process=client is None)
    if client is None:
        estimated = [estimate_run(run, request, prepared=ready) for run, ready in zip(runs, prepared)]
    else:
        estimated = estimate_on_cluster(client, prepared, request)
    written = []
    for run, data in zip(runs, estimated):
        written += report_run(run, data, request, plots=plots, formats=formats)
    if folder is not None:
        for path in write_comparison(runs, folder, plots=plots, formats=formats):
            print(f"comparison: {path}", flush=True)
            written.append(path)
    return written


def _folder_arg(text: str) -> Path:
    """argparse ``type=`` for ``--out``: a non-empty folder name."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder, got an empty string")
    return Path(text)


def _distinct_runs(runs: Sequence[str | Path]) -> list[Path]:
    """The run folders as paths: at least one, none given twice (a run counted twice would be two seeds
    with no spread between them)."""
    if isinstance(runs, (str, Path)) or not runs:
        raise InputError(
            "no run folders given: name at least one (a comparison of nothing would only overwrite an earlier one)"
        )
    paths = [Path(r) for r in runs]
    seen: dict[Path, Path] = {}
    for path in paths:
        key = path.resolve()
        if key in seen:
            raise InputError(f"run folder {path} is given twice (also as {seen[key]}): each run counts once")
        seen[key] = path
    return paths


def same_runs(prepared: Sequence[PreparedRun]) -> None:
    """InputError when two of the runs are one run (:func:`utils.analysis.run_groups.check_distinct_runs`)."""
    check_distinct_runs([ready.run_dir for ready in prepared])


def notebook_runs(root: str | Path, default: Sequence[str]) -> list[Path]:
    """The run folders a notebook draws: the ``RUN_DIR`` environment variable (folders separated by
    ``os.pathsep``), or those of ``default`` that exist; relative paths are taken from the repository
    ``root``, so the README's command works from there although a notebook runs in ``notebooks/``. A
    folder of ``RUN_DIR`` that does not exist, or no default folder at all, is an :class:`InputError` that
    names them and says how to make or choose one, before any work."""
    chosen = os.environ.get("RUN_DIR")
    paths = [Path(root) / p for p in (chosen.split(os.pathsep) if chosen else default) if p]
    if not paths:
        raise InputError("RUN_DIR names no run folder")
    if not chosen and any(p.is_dir() for p in paths):
        paths = [p for p in paths if p.is_dir()]
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        source = "RUN_DIR" if chosen else "the notebook's default (RUN_DIR is not set)"
        raise InputError(
            f"{source}: no run folder {', '.join(missing)}. Train one with mi_mnist_dropout.py or "
            f"mi_cifar_dropout.py (--out <folder>), or set RUN_DIR to run folders separated by "
            f"{os.pathsep!r}, relative to the repository root"
        )
    return paths


def draw_in_notebook(root: str | Path, default: Sequence[str], **options: Any) -> None:
    """What the notebooks run: :func:`analyze_runs` of :func:`notebook_runs` (``options`` go to it), every PNG
    shown in the cell, the announcements of long work on stderr. Bad input (an InputError, a missing or
    unreadable file) is shown as its one ``error:`` line in the cell's output, not as a traceback."""
    try:
        with log_to_stderr("information_plane"):
            written = analyze_runs(notebook_runs(root, default), **options)
    except Exception as err:  # noqa: BLE001 - the user's errors become one line, bugs keep their traceback
        if not is_user_error(err):
            raise
        print(f"error: {user_message(err)}", file=sys.stderr, flush=True)
        return
    from IPython.display import Image, display  # a notebook's kernel has IPython

    for path in written:
        if path.suffix == ".png":
            display(Image(filename=str(path)))


def _parser() -> OneLineParser:
    p = OneLineParser(
        prog="python -m utils.analysis.information_plane",
        description=__doc__.split("\n\n")[0],
        epilog="Estimators: " + "; ".join(f"{k}: {v.describe}" for k, v in ESTIMATORS.items()),
    )
    p.add_argument(
        "runs",
        nargs="+",
        type=Path,
        metavar="RUN",
        help="run folders written by mi_mnist_dropout.py / mi_cifar_dropout.py",
    )
    p.add_argument(
        "--estimators",
        default=",".join(DEFAULT_ESTIMATORS),
        help=f"comma-separated, from {sorted(ESTIMATORS)} (default %(default)s); the callback's "
        "KL / cross-entropy values are always included",
    )
    p.add_argument("--splits", default="train,test", help="comma-separated from train,test (default %(default)s)")
    p.add_argument(
        "--epochs",
        default=None,
        help="epoch selection, e.g. 0-20,30 or 40- (default: all saved); the figures then show these "
        "epochs only and are named information_plane_epochs<selection>.png",
    )
    p.add_argument(
        "--draws",
        type=draws_arg,
        default=tuple(DEFAULT_DRAWS.items()),
        help="noise draws per input, for both splits (6) or per split (train=2,test=6); default "
        + ",".join(f"{k}={v}" for k, v in DEFAULT_DRAWS.items()),
    )
    p.add_argument(
        "--max-inputs",
        type=int_arg(2),
        default=None,
        help="analyse a seeded subset of this many inputs of each split (the same for every epoch)",
    )
    p.add_argument("--seed", type=int_arg(0), default=0, help="seed of the noise draws and the subset (default 0)")
    p.add_argument(
        "--clip-min",
        type=float_arg(0.0, inclusive=False),
        default=None,
        help="raise |f| below this to it before the mixture estimate and the upper bound (softplus codes "
        "that underflowed to exactly 0 in float32 make the density degenerate; the count clipped is "
        "stored with each entry). Default: refuse exactly-zero codes",
    )
    p.add_argument(
        "--out",
        type=_folder_arg,
        default=None,
        help="write estimates.csv and the seed-aggregated planes of all runs here (default with "
        "several runs: <the deepest folder holding them>/comparison)",
    )
    p.add_argument("--no-plots", action="store_true", help="estimate only, draw no figures")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=sys.stderr.isatty(),
        help="progress bars: epochs done, and noisy points done with the time left inside each estimate "
        "(default: on in a terminal)",
    )
    cluster = p.add_mutually_exclusive_group()
    cluster.add_argument(
        "--workers",
        type=int_arg(1, MAX_WORKERS),
        default=None,
        metavar="N",
        help="estimate on a local Dask cluster of N worker processes, one thread each (one task "
        "per run, layer, split, epoch and estimator; the results are identical)",
    )
    cluster.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="estimate on the Dask cluster whose scheduler is at ADDRESS, e.g. tcp://host:8786 "
        "(workers need the toolkit installed, not the run folders)",
    )
    p.add_argument(
        "--threads",
        type=int_arg(1, MAX_THREADS),
        default=None,
        metavar="N",
        help="BLAS threads of the in-process estimation (default: the BLAS library's, all cores). "
        "Use 1 when other jobs share the cores (training, other estimations): waiting BLAS "
        "threads spin, and an oversubscribed estimate can run several times slower",
    )
    p.add_argument(
        "--formats", type=formats_arg, default=("png",), help="figure formats, comma-separated from png,pdf,svg"
    )
    return p


def _request(args: Any) -> Request:
    def items(text: str) -> tuple[str, ...]:
        return tuple(t for t in text.split(",") if t)

    return Request(
        estimators=items(args.estimators),
        splits=items(args.splits),
        epochs=args.epochs,
        draws=args.draws,
        max_inputs=args.max_inputs,
        seed=args.seed,
        clip_min=args.clip_min,
        progress=args.progress,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code: 0, 2 with one ``error:`` line for bad input, 1 with the
    traceback for a bug (:func:`utils.cli.run_command`)."""

    def body() -> None:
        args = _parser().parse_args(argv)
        request = _request(args)
        formats = args.formats
        if args.threads is not None and (args.workers is not None or args.scheduler is not None):
            raise CommandError("--threads sets the in-process estimation's threads; Dask workers run one each")
        with threadpool_limits(args.threads), dask_client(args.scheduler, args.workers) as client:
            analyze_runs(
                args.runs, out=args.out, request=request, plots=not args.no_plots, formats=formats, client=client
            )

    with log_to_stderr("information_plane"):
        return run_command("information_plane", body)


if __name__ == "__main__":
    sys.exit(main())
