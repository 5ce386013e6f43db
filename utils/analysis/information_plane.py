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
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from mi_estimators.checks import InputError, as_samples, check_float, check_int
from mi_estimators.discrete import discrete_entropy
from mi_estimators.dropout_MI import activations, log_noise_stds
from utils import run_folder as rf
from utils.analysis.cluster import dask_client, estimate_on_cluster
from utils.analysis.comparison import write_comparison
from utils.analysis.figures import draw_run_figures
from utils.analysis.registry import ESTIMATORS, INFINITE_MI, LayerData, plane_entry
from utils.cli import CommandError, OneLineParser, float_arg, int_arg, run_command

CALLBACK = "callback"
DEFAULT_ESTIMATORS = ("mixture", "binning", "binning_f")
DEFAULT_DRAWS = {"train": 1, "test": 6}
"""Noise draws per input: one for the (large) training split, whose Monte Carlo error is measured on
pilot draws (mi_estimators.dropout_MI); six for the test split."""


@dataclass(frozen=True)
class Request:
    """What to estimate: estimators, splits, an epoch selection, noise draws per input of each split, and
    a seeded subset of at most ``max_inputs`` inputs of each split."""

    estimators: tuple[str, ...] = DEFAULT_ESTIMATORS
    splits: tuple[str, ...] = rf.SPLITS
    epochs: str | None = None
    draws: tuple[tuple[str, int], ...] = tuple(DEFAULT_DRAWS.items())
    max_inputs: int | None = None
    seed: int = 0
    clip_min: float | None = None
    progress: bool = field(default_factory=sys.stderr.isatty)
    """Progress bars: epochs done, and noisy points done with the time left inside each estimate."""

    def __post_init__(self) -> None:
        if not self.estimators:
            raise InputError(f"no estimator given; choose from {sorted(ESTIMATORS)}")
        unknown = [e for e in self.estimators if e not in ESTIMATORS]
        if unknown:
            raise InputError(f"unknown estimator(s) {unknown}; available: {sorted(ESTIMATORS)}")
        bad = [s for s in self.splits if s not in rf.SPLITS]
        if bad or not self.splits:
            raise InputError(f"unknown split(s) {bad}; use train and/or test")
        for split, count in self.draws:
            check_int(count, f"noise draws per input of the {split} split")
        if self.max_inputs is not None:
            check_int(self.max_inputs, "max_inputs", minimum=2)
        check_int(self.seed, "seed", minimum=0)
        if self.clip_min is not None:
            check_float(self.clip_min, "clip_min")
        if self.epochs is not None:
            parse_epochs(self.epochs)

    def draws_of(self, split: str) -> int:
        """Noise draws per input of ``split``."""
        return dict(self.draws)[split]

    def settings(self, name: str, split: str) -> dict[str, Any]:
        """The request's part of an entry's cache key: ``max_inputs``, the estimator's own settings and,
        for estimators that draw noise, ``seed`` and ``draws`` (noise draws per input)."""
        spec = ESTIMATORS[name]
        settings = {"max_inputs": self.max_inputs, **spec.settings}
        if spec.version > 1:
            settings["version"] = spec.version
        if spec.uses_noise:
            settings.update(seed=self.seed, draws=self.draws_of(split))
        if spec.clips:
            settings["clip_min"] = self.clip_min
        return settings


MAX_WORKERS = 1024
"""Local worker processes beyond this are a typo: a machine with more cores runs a cluster (--scheduler)."""
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


def parse_epochs(text: str) -> Callable[[int], bool]:
    """Predicate for an epoch selection such as ``"0-20,30,40-"`` (ranges inclusive, open ends allowed)."""
    parts = []
    for token in filter(None, (t.strip() for t in text.split(","))):
        lo, sep, hi = token.partition("-")
        try:
            parts.append((int(lo) if lo else 0, (int(hi) if hi else None) if sep else int(lo)))
        except ValueError:
            raise InputError(f"bad epoch selection {token!r}: use e.g. 10, 0-20 or 40-") from None
    if not parts:
        raise InputError(f"empty epoch selection {text!r}")
    return lambda e: any(lo <= e and (hi is None or e <= hi) for lo, hi in parts)


# -- planning: which (estimator, layer, split, epoch) entries are missing or stale ---------------------

@dataclass(frozen=True)
class SplitInputs:
    """The analysed inputs of a split: rows of the saved arrays, their labels and H(Y)."""

    split: str
    rows: np.ndarray
    labels: np.ndarray
    h_y: float
    n_rows: int
    labels_fingerprint: dict


@dataclass(frozen=True)
class Job:
    """One layer, split and epoch, with the entries to (re)compute: ``{estimator: settings}``."""

    layer: dict
    inputs: SplitInputs
    epoch: int
    files: dict[str, Path]
    wanted: dict[str, dict]


def _split_inputs(run_dir: Path, split: str, request: Request) -> SplitInputs:
    _, labels = rf.load_inputs_labels(run_dir, split)
    rows = rf.seeded_rows(len(labels), request.max_inputs, request.seed)
    return SplitInputs(split, rows, labels[rows], discrete_entropy(labels[rows]), len(labels),
                       rf.file_fingerprint(rf.labels_path(run_dir, split)))


def _layer_files(run_dir: Path, config: dict, layer: dict, split: str, epoch: int) -> dict[str, Path]:
    tag = layer["name"] if len(config["layers"]) > 1 else None
    files = {"f": rf.representation_path(run_dir, split, epoch, tag)}
    if layer["dropout"] == "information":
        files["alphas"] = rf.alpha_path(run_dir, split, epoch, tag)
    return files


def _noise_key(layer: dict) -> dict[str, Any]:
    return {k: layer.get(k) for k in ("dropout", "p", "noise_std", "alpha_max", "beta")}


def plan(run_dir: Path, config: dict, data: dict, request: Request) -> tuple[list[Job], list[str]]:
    """Jobs for what is missing or stale in ``data`` (the run's estimates), and the stale entries' names."""
    jobs, stale = [], []
    for split in request.splits:
        available = rf.saved_epochs(run_dir, split)
        chosen = [e for e in available if request.epochs is None or parse_epochs(request.epochs)(e)]
        if not chosen:
            raise InputError(f"no saved {split} epochs match {request.epochs!r} in {run_dir} (saved: {available})")
        inputs = _split_inputs(run_dir, split, request)
        for layer in config["layers"]:
            for epoch in chosen:
                files = _layer_files(run_dir, config, layer, split, epoch)
                key = {"files": {k: rf.file_fingerprint(p) for k, p in files.items()},
                       "labels": inputs.labels_fingerprint, "layer": _noise_key(layer)}
                wanted = {}
                for name in request.estimators:
                    settings = {**request.settings(name, split), **key}
                    have = data.get(name, {}).get(layer["name"], {}).get(split, {}).get(str(epoch))
                    if have is None or have.get("settings") != settings:
                        wanted[name] = settings
                    if have is not None and have.get("settings", {}).get("files") not in (None, key["files"]):
                        stale.append(f"{name}/{layer['name']}/{split}/{epoch}")
                if wanted:
                    jobs.append(Job(layer, inputs, epoch, files, wanted))
    return jobs, stale


# -- running --------------------------------------------------------------------------------------

def _load_flat(path: Path, job: Job) -> np.ndarray:
    """Rows of a saved array as (n, dim), checked against the labels and config.json."""
    array = rf.load_npy(path)
    layer, n_rows = job.layer, job.inputs.n_rows
    if array.ndim < 2 or len(array) != n_rows or int(np.prod(array.shape[1:])) != layer["dim"]:
        raise InputError(f"{path} has shape {array.shape}; expected {n_rows} rows (as the labels file) of "
                         f"dim {layer['dim']} (layer {layer['name']!r} in config.json)")
    return array[job.inputs.rows].reshape(len(job.inputs.rows), -1)


def job_arrays(job: Job) -> tuple[np.ndarray, np.ndarray | None]:
    """The job's f (inputs, dim) and, for information dropout, its alpha(x): the analysed rows only."""
    alphas = _load_flat(job.files["alphas"], job) if "alphas" in job.files else None
    return _load_flat(job.files["f"], job), alphas


EntryKey = tuple[str, str, str, int]
"""(estimator, layer, split, epoch): where an entry lives in ``estimates.json``."""


def estimate_entry(name: str, settings: dict, layer: dict, inputs: SplitInputs, epoch: int, f: np.ndarray,
                   alphas: np.ndarray | None, request: Request) -> dict:
    """One entry of ``estimates.json``: estimator ``name`` on one layer, split and epoch. The unit of work
    of a cluster (:mod:`utils.analysis.cluster`); it reads no file, so a worker needs only its arguments."""
    split = inputs.split
    if layer["dropout"] not in ESTIMATORS[name].kinds:
        reason = INFINITE_MI if layer["dropout"] == "bernoulli" else \
            f"{name} does not apply to {layer['dropout']} dropout"
        return {"skipped": reason, "settings": settings}
    spec = ESTIMATORS[name]
    data = LayerData(layer, f, alphas, inputs.labels, request.draws_of(split), request.seed,
                     progress=request.progress, clip_min=request.clip_min)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = spec.run(data, spec.settings)
    except InputError as err:  # anything else is a bug and keeps its traceback
        raise InputError(f"{name} on {split} epoch {epoch} (layer {layer['name']}): {err}") from None
    return {**plane_entry(spec, result, n_inputs=len(f), h_y=inputs.h_y), "settings": settings,
            "warnings": sorted({str(w.message) for w in caught})}


def entry_key(name: str, job: Job) -> EntryKey:
    return name, job.layer["name"], job.inputs.split, job.epoch


def run_job(job: Job, request: Request) -> dict[EntryKey, dict]:
    """Compute the wanted entries of one job, in this process."""
    f, alphas = job_arrays(job)
    return {entry_key(name, job): estimate_entry(name, settings, job.layer, job.inputs, job.epoch, f, alphas,
                                                 request)
            for name, settings in job.wanted.items()}


def _callback_entries(run_dir: Path, config: dict, split: str) -> dict:
    """The callback's logged surrogates: mean KL for I(X;Z) (information dropout only: the callback logs 0
    for other layers, which is no estimate), H(Y) - cross-entropy for I(Y;Z)."""
    several = len(config["layers"]) > 1
    h_y = discrete_entropy(rf.load_inputs_labels(run_dir, split)[1])
    mi_zy = rf.load_ip(run_dir, split, "mi_zy")
    out = {}
    for layer in config["layers"]:
        mean_kl = rf.load_ip(run_dir, split, "mean_kl", layer["name"] if several else None)
        for epoch in sorted(set(mean_kl) | set(mi_zy)):
            out[(CALLBACK, layer["name"], split, epoch)] = {
                "mi_xz": mean_kl.get(epoch) if layer["dropout"] == "information" else None,
                "mi_zy": mi_zy.get(epoch), "h_y": h_y, "settings": {},
                "sees": "noisy Z (training loss terms)",
                "params": {"source": "callback: mean KL and H(Y) - cross-entropy",
                           "beta": layer.get("beta")}}
    return out


def _check_inputs(jobs: Sequence[Job], request: Request) -> None:
    """Every array the jobs will read, validated as the estimators will (finite, real, not too large;
    the mixture's and the bound's codes as ``activations`` takes them), before anything is written: a
    bad file at the last epoch must not leave the earlier epochs estimated and the command failed."""
    for job in jobs:
        uses_codes = any(ESTIMATORS[name].clips and job.layer["dropout"] in ESTIMATORS[name].kinds
                         for name in job.wanted)
        for key, path in job.files.items():
            values = _load_flat(path, job)
            try:
                if key == "alphas":
                    log_noise_stds(values)
                elif uses_codes:
                    activations(values, request.clip_min, allow_negative=job.layer["dropout"] == "gaussian")
                else:
                    as_samples(values, key, min_rows=2)
            except InputError as err:
                raise InputError(f"{path}: {err}") from None


@dataclass(frozen=True)
class PreparedRun:
    """What :func:`estimate_run` reads, read and checked, with nothing written yet."""

    run_dir: Path
    callback: dict          # the callback's entries
    jobs: list[Job]         # the estimates to compute
    stale: list[str]        # the entries they replace because a file changed


def prepare_run(run_dir: str | Path, request: Request) -> PreparedRun:
    """Read the run's config, the callback's files and every array its jobs need, and check them."""
    run_dir = _run_folder(run_dir)
    config = rf.load_config(run_dir)
    callback = {}
    for split in request.splits:
        callback.update(_callback_entries(run_dir, config, split))
    jobs, stale = plan(run_dir, config, rf.load_estimates(run_dir)["estimates"], request)
    _check_inputs(jobs, request)
    return PreparedRun(run_dir, callback, jobs, stale)


def estimate_run(run_dir: str | Path, request: Request | None = None, *,
                 prepared: PreparedRun | None = None) -> dict[str, Any]:
    """Fill the run's ``IP/estimates.json`` with what is missing or stale and return its content. Every
    input is checked first (:func:`prepare_run`, unless ``prepared`` says it was)."""
    request = request or Request()
    prepared = prepared or prepare_run(run_dir, request)
    data = begin_estimates(prepared)
    bar = tqdm(prepared.jobs, desc=f"estimating {prepared.run_dir.name}", unit="epoch",
               disable=not request.progress or not prepared.jobs)
    for job in bar:
        bar.set_postfix_str(f"{job.inputs.split} epoch {job.epoch}")
        data = rf.store_estimates(prepared.run_dir, run_job(job, request))
    return data


def begin_estimates(prepared: PreparedRun) -> dict[str, Any]:
    """Store the callback's entries, say which entries will be recomputed, and return the file's content."""
    if prepared.stale:
        stale = prepared.stale
        print(f"{prepared.run_dir}: recomputing {len(stale)} entries whose representation or label files changed "
              f"({', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''})", flush=True)
    return rf.store_estimates(prepared.run_dir, prepared.callback)


def _run_folder(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise InputError(f"run folder {run_dir} does not exist")
    if not run_dir.is_dir():
        raise InputError(f"{run_dir} is a file, not a run folder")
    return run_dir


def summary_table(data: dict[str, Any]) -> str:
    """One line per estimator, layer and split: first and last epoch's (I(X;Z), I(Y;Z))."""
    rows = [f"{'estimator':<12} {'layer':<14} {'split':<6} {'epochs':>7}  {'first (I_XZ, I_YZ)':>20}  "
            f"{'last (I_XZ, I_YZ)':>20}"]

    def fmt(entry: dict) -> str:
        if "skipped" in entry:
            return f"{'n/a (see file)':>20}"
        xz, zy = (f"{entry[k]:.3f}" if entry.get(k) is not None else "-" for k in ("mi_xz", "mi_zy"))
        return f"{'(' + xz + ', ' + zy + ')':>20}"

    for name, layers in sorted(data["estimates"].items()):
        for layer, splits in layers.items():
            for split, by_epoch in splits.items():
                epochs = sorted(by_epoch, key=int)
                rows.append(f"{name:<12} {layer:<14} {split:<6} {len(epochs):>7}  {fmt(by_epoch[epochs[0]])}  "
                            f"{fmt(by_epoch[epochs[-1]])}")
    return "\n".join(rows)


def analyze(run_dir: str | Path, *, plots: bool = True, formats: Sequence[str] = ("png",),
            request: Request | None = None) -> list[Path]:
    """:func:`estimate_run`, print the summary table, draw the run's figures and print their paths."""
    request = request or Request()
    return report_run(run_dir, estimate_run(run_dir, request), request, plots=plots, formats=formats)


def report_run(run_dir: str | Path, data: dict[str, Any], request: Request, *, plots: bool = True,
               formats: Sequence[str] = ("png",)) -> list[Path]:
    """Print the summary table of a run's estimates, draw its figures and print their paths."""
    print(summary_table(data), flush=True)
    if not plots:
        return []
    selected = {"epochs": parse_epochs(request.epochs), "suffix": "_epochs" + request.epochs} \
        if request.epochs else {}
    written = draw_run_figures(run_dir, formats=formats, estimates=data, **selected)
    for path in written:
        print(f"figure: {path}", flush=True)
    return written


def comparison_dir(runs: Sequence[Path], out: Path | None) -> Path | None:
    """Where a comparison of runs goes: ``out``, or with several runs ``<the deepest folder holding them>/comparison``."""
    if out is not None or len(runs) == 1:
        return out
    # The deepest folder holding every run (not the current folder, which may be anywhere).
    return Path(os.path.commonpath([Path(run).absolute().parent for run in runs])) / "comparison"


def analyze_runs(runs: Sequence[str | Path], *, out: str | Path | None = None, request: Request | None = None,
                 plots: bool = True, formats: Sequence[str] = ("png",), client: Any = None) -> list[Path]:
    """Estimate every run (in this process, or with a ``dask.distributed.Client`` on its cluster:
    :mod:`utils.analysis.cluster`), print and draw each, then (several runs, or ``out``) write the
    comparison table and the seed-aggregated planes (:func:`utils.analysis.comparison.write_comparison`);
    returns the written paths."""
    runs = _distinct_runs(runs)
    if out is not None and not str(out).strip():
        raise InputError("out must name a folder, got an empty string")
    request = request or Request()
    prepared = [prepare_run(run, request) for run in runs]  # every run's inputs, before the first estimate
    if client is None:
        estimated = [estimate_run(run, request, prepared=ready) for run, ready in zip(runs, prepared)]
    else:
        estimated = estimate_on_cluster(client, prepared, request)
    written = []
    for run, data in zip(runs, estimated):
        written += report_run(run, data, request, plots=plots, formats=formats)
    folder = comparison_dir(runs, None if out is None else Path(out))
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
        raise InputError("no run folders given: name at least one (a comparison of nothing would only "
                         "overwrite an earlier one)")
    paths, seen = [Path(r) for r in runs], {}
    for path in paths:
        key = path.resolve()
        if key in seen:
            raise InputError(f"run folder {path} is given twice (also as {seen[key]}): each run counts once")
        seen[key] = path
    return paths


def notebook_runs(root: str | Path, default: Sequence[str]) -> list[Path]:
    """The run folders a notebook draws: the ``RUN_DIR`` environment variable (folders separated by
    ``os.pathsep``) or ``default``; relative paths are taken from the repository ``root``, so the README's
    command works from there although a notebook runs in ``notebooks/``."""
    chosen = os.environ.get("RUN_DIR")
    paths = chosen.split(os.pathsep) if chosen else list(default)
    return [Path(root) / p for p in paths if p]


def _parser() -> OneLineParser:
    p = OneLineParser(prog="python -m utils.analysis.information_plane", description=__doc__.split("\n\n")[0],
                      epilog="Estimators: " + "; ".join(f"{k}: {v.describe}" for k, v in ESTIMATORS.items()))
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                   help="run folders written by mi_mnist_dropout.py / mi_cifar_dropout.py")
    p.add_argument("--estimators", default=",".join(DEFAULT_ESTIMATORS),
                   help=f"comma-separated, from {sorted(ESTIMATORS)} (default %(default)s); the callback's "
                        "KL / cross-entropy values are always included")
    p.add_argument("--splits", default="train,test", help="comma-separated from train,test (default %(default)s)")
    p.add_argument("--epochs", default=None,
                   help="epoch selection, e.g. 0-20,30 or 40- (default: all saved); the figures then show these "
                        "epochs only and are named information_plane_epochs<selection>.png")
    p.add_argument("--draws", type=draws_arg, default=tuple(DEFAULT_DRAWS.items()),
                   help="noise draws per input, for both splits (6) or per split (train=2,test=6); default "
                        + ",".join(f"{k}={v}" for k, v in DEFAULT_DRAWS.items()))
    p.add_argument("--max-inputs", type=int_arg(2), default=None,
                   help="analyse a seeded subset of this many inputs of each split (the same for every epoch)")
    p.add_argument("--seed", type=int_arg(0), default=0, help="seed of the noise draws and the subset (default 0)")
    p.add_argument("--clip-min", type=float_arg(0.0, inclusive=False), default=None,
                   help="raise |f| below this to it before the mixture estimate and the upper bound (softplus codes "
                        "that underflowed to exactly 0 in float32 make the density degenerate; the count clipped is "
                        "stored with each entry). Default: refuse exactly-zero codes")
    p.add_argument("--out", type=_folder_arg, default=None,
                   help="write estimates.csv and the seed-aggregated planes of all runs here (default with "
                        "several runs: <the deepest folder holding them>/comparison)")
    p.add_argument("--no-plots", action="store_true", help="estimate only, draw no figures")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=sys.stderr.isatty(),
                   help="progress bars: epochs done, and noisy points done with the time left inside each estimate "
                        "(default: on in a terminal)")
    cluster = p.add_mutually_exclusive_group()
    cluster.add_argument("--workers", type=int_arg(1, MAX_WORKERS), default=None, metavar="N",
                         help="estimate on a local Dask cluster of N worker processes, one thread each (one task "
                              "per run, layer, split, epoch and estimator; the results are identical)")
    cluster.add_argument("--scheduler", default=None, metavar="ADDRESS",
                         help="estimate on the Dask cluster whose scheduler is at ADDRESS, e.g. tcp://host:8786 "
                              "(workers need the toolkit installed, not the run folders)")
    p.add_argument("--formats", default="png", help="figure formats, comma-separated from png,pdf,svg")
    return p


def _request(args: Any) -> Request:
    def items(text: str) -> tuple[str, ...]:
        return tuple(t for t in text.split(",") if t)
    return Request(estimators=items(args.estimators), splits=items(args.splits), epochs=args.epochs,
                   draws=args.draws, max_inputs=args.max_inputs, seed=args.seed,
                   clip_min=args.clip_min, progress=args.progress)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code: 0, 2 with one ``error:`` line for bad input, 1 with the
    traceback for a bug (:func:`utils.cli.run_command`)."""
    def body() -> None:
        args = _parser().parse_args(argv)
        request = _request(args)
        formats = tuple(f for f in args.formats.split(",") if f)
        bad = [f for f in formats if f not in ("png", "pdf", "svg")]
        if bad:
            raise CommandError(f"--formats: unknown figure format(s) {bad}; use png, pdf or svg")
        with dask_client(args.scheduler, args.workers) as client:
            analyze_runs(args.runs, out=args.out, request=request, plots=not args.no_plots, formats=formats,
                         client=client)

    return run_command("information_plane", body)


if __name__ == "__main__":
    sys.exit(main())
