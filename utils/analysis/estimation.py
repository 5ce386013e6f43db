"""What to estimate in a run folder, and estimating it in this process.

:class:`Request` says what (estimators, splits, epochs, draws, a seeded subset of inputs); :func:`plan`
compares it with the run's ``IP/estimates.json`` and gives one :class:`Job` per layer, split and epoch
with the entries that are missing or stale; :func:`prepare_run` reads and checks every array the jobs
will read before anything is written; :func:`estimate_entry` computes one entry from arrays alone (the
unit of work of a cluster, :mod:`utils.analysis.cluster`); :func:`estimate_run` runs the jobs here,
storing the entries after every epoch (:func:`utils.run_folder.store_estimates`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from mi_estimators.checks import InputError, as_samples, check_float, check_int
from mi_estimators.discrete import discrete_entropy
from mi_estimators.dropout_MI import check_codes, log_noise_stds
from utils import run_folder, run_folder_schema
from utils.analysis.registry import ESTIMATORS, INFINITE_MI, LayerData, plane_entry
from utils.run_folder_schema import EntryKey, LayerSpec, RunConfig

log = logging.getLogger(__name__)
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
    splits: tuple[str, ...] = run_folder.SPLITS
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
        bad = [s for s in self.splits if s not in run_folder.SPLITS]
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

    layer: LayerSpec
    inputs: SplitInputs
    epoch: int
    files: dict[str, Path]
    wanted: dict[str, dict]


def _split_inputs(run_dir: Path, split: str, request: Request) -> SplitInputs:
    labels = run_folder.load_labels(run_dir, split)
    rows = run_folder.seeded_rows(len(labels), request.max_inputs, request.seed)
    return SplitInputs(
        split,
        rows,
        labels[rows],
        discrete_entropy(labels[rows]),
        len(labels),
        run_folder.file_fingerprint(run_folder.labels_path(run_dir, split)),
    )


def _layer_files(run_dir: Path, config: RunConfig, layer: LayerSpec, split: str, epoch: int) -> dict[str, Path]:
    tag = layer["name"] if len(config["layers"]) > 1 else None
    files = {"f": run_folder.representation_path(run_dir, split, epoch, tag)}
    if layer["dropout"] == "information":
        files["alphas"] = run_folder.alpha_path(run_dir, split, epoch, tag)
    return files


def _noise_key(layer: LayerSpec) -> dict[str, Any]:
    return {k: layer.get(k) for k in ("dropout", "p", "noise_std", "alpha_max", "beta")}


def _no_epochs(run_dir: Path, config: RunConfig, split: str, request: Request, available: list[int]) -> InputError:
    """Why no epoch of ``split`` can be estimated: none selected, or the run's representation files are gone."""
    if available:
        return InputError(f"no saved {split} epochs match {request.epochs!r} in {run_dir} (saved: {available})")
    missing = run_folder.missing_epoch_files(run_dir, config, run_folder.expected_epochs(config, 10**9)[:1] or [0])
    return InputError(
        f"no saved {split} epochs in {run_dir}: {run_folder.REPR_DIR}/ lacks the representation files the run's "
        f"config.json implies (e.g. {missing[0].name if missing else run_folder.REPR_DIR})"
        "; only training makes them: move its checkpoint.npz away and run its training command again (the same "
        "flags give the same numbers)"
    )


def plan(run_dir: Path, config: RunConfig, data: Any, request: Request) -> tuple[list[Job], list[str]]:
    """Jobs for what is missing or stale in ``data`` (the run's estimates), and the stale entries' names."""
    jobs, stale = [], []
    for split in request.splits:
        available = run_folder.saved_epochs(run_dir, split)
        chosen = [e for e in available if request.epochs is None or parse_epochs(request.epochs)(e)]
        if not chosen:
            raise _no_epochs(run_dir, config, split, request, available)
        inputs = _split_inputs(run_dir, split, request)
        for layer in config["layers"]:
            for epoch in chosen:
                files = _layer_files(run_dir, config, layer, split, epoch)
                key = {
                    "files": {k: run_folder.file_fingerprint(p) for k, p in files.items()},
                    "labels": inputs.labels_fingerprint,
                    "layer": _noise_key(layer),
                }
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
    array = run_folder.load_npy(
        path, run_folder_schema.ALPHA if path.name.startswith("alpha_") else run_folder_schema.REPRESENTATION
    )
    layer, n_rows = job.layer, job.inputs.n_rows
    if array.ndim < 2 or len(array) != n_rows or int(np.prod(array.shape[1:])) != layer["dim"]:
        raise InputError(
            f"{path} has shape {array.shape}; expected {n_rows} rows (as the labels file) of "
            f"dim {layer['dim']} (layer {layer['name']!r} in config.json)"
        )
    return array[job.inputs.rows].reshape(len(job.inputs.rows), -1)


def job_arrays(job: Job) -> tuple[np.ndarray, np.ndarray | None]:
    """The job's f (inputs, dim) and, for information dropout, its alpha(x): the analysed rows only."""
    alphas = _load_flat(job.files["alphas"], job) if "alphas" in job.files else None
    return _load_flat(job.files["f"], job), alphas


def estimate_entry(
    name: str,
    settings: dict,
    layer: LayerSpec,
    inputs: SplitInputs,
    epoch: int,
    f: np.ndarray,
    alphas: np.ndarray | None,
    request: Request,
) -> dict:
    """One entry of ``estimates.json``: estimator ``name`` on one layer, split and epoch. The unit of work
    of a cluster (:mod:`utils.analysis.cluster`); it reads no file, so a worker needs only its arguments."""
    split = inputs.split
    if layer.get("upstream_noise"):
        return {"skipped": upstream_noise_note(layer), "settings": settings}
    if layer["dropout"] not in ESTIMATORS[name].kinds:
        reason = (
            INFINITE_MI if layer["dropout"] == "bernoulli" else f"{name} does not apply to {layer['dropout']} dropout"
        )
        return {"skipped": reason, "settings": settings}
    spec = ESTIMATORS[name]
    data = LayerData(
        layer,
        f,
        alphas,
        inputs.labels,
        request.draws_of(split),
        request.seed,
        progress=request.progress,
        clip_min=request.clip_min,
    )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = spec.run(data, spec.settings)
    except InputError as err:  # anything else is a bug and keeps its traceback
        raise InputError(f"{name} on {split} epoch {epoch} (layer {layer['name']}): {err}") from None
    return {
        **plane_entry(spec, result, n_inputs=len(f), h_y=inputs.h_y),
        "settings": settings,
        "warnings": sorted({str(w.message) for w in caught}),
    }


def entry_key(name: str, job: Job) -> EntryKey:
    return name, job.layer["name"], job.inputs.split, job.epoch


def run_job(job: Job, request: Request) -> dict[EntryKey, dict]:
    """Compute the wanted entries of one job, in this process."""
    f, alphas = job_arrays(job)
    return {
        entry_key(name, job): estimate_entry(name, settings, job.layer, job.inputs, job.epoch, f, alphas, request)
        for name, settings in job.wanted.items()
    }


def upstream_noise_note(layer: LayerSpec) -> str:
    """Why a layer behind other noise layers gets no estimate."""
    return (
        f"noise layers upstream ({', '.join(layer.get('upstream_noise', []))}) make the input f(x) of "
        f"{layer['name']!r} random, but the estimators take it to be a function of x: they would describe "
        "another channel; analyse the first noise layer (the callback's values are kept)"
    )


NEGATIVE_BOUND = 1.0
"""The callback's H(Y) - cross-entropy below -NEGATIVE_BOUND H(Y) is flagged: a cross-entropy above twice that
of always predicting the label frequencies says the outputs are not the class probabilities it assumes (an
untrained net's is near H(Y): its bound sits a fraction of a nat below 0)."""


def _callback_warnings(config: RunConfig, mi_zy: float | None, h_y: float) -> list[str]:
    found = list(config.get("warnings", []))
    if mi_zy is not None and mi_zy < -NEGATIVE_BOUND * h_y:
        found.append(
            f"the callback's I(Y;Z) lower bound H(Y) - cross-entropy is {mi_zy:.3g} nats, far below 0: are the "
            "model's outputs class probabilities (or was from_logits=True forgotten)?"
        )
    return found


def _callback_entries(run_dir: Path, config: RunConfig, split: str) -> dict:
    """The callback's logged surrogates: mean KL for I(X;Z) (information dropout only: the callback logs 0
    for other layers, which is no estimate), H(Y) - cross-entropy for I(Y;Z), with the set-up's warnings."""
    several = len(config["layers"]) > 1
    h_y = discrete_entropy(run_folder.load_labels(run_dir, split))
    mi_zy = run_folder.load_ip(run_dir, split, "mi_zy")
    out = {}
    for layer in config["layers"]:
        mean_kl = run_folder.load_ip(run_dir, split, "mean_kl", layer["name"] if several else None)
        for epoch in sorted(set(mean_kl) | set(mi_zy)):
            out[(CALLBACK, layer["name"], split, epoch)] = {
                "warnings": _callback_warnings(config, mi_zy.get(epoch), h_y),
                "mi_xz": mean_kl.get(epoch) if layer["dropout"] == "information" else None,
                "mi_zy": mi_zy.get(epoch),
                "h_y": h_y,
                "settings": {},
                "sees": "noisy Z (training loss terms)",
                "params": {"source": "callback: mean KL and H(Y) - cross-entropy", "beta": layer.get("beta")},
            }
    return out


def _check_inputs(jobs: Sequence[Job], request: Request) -> None:
    """Every array the jobs will read, validated as the estimators will (finite, real, not too large;
    the mixture's and the bound's codes as ``check_codes`` takes them), before anything is written: a
    bad file at the last epoch must not leave the earlier epochs estimated and the command failed."""
    largest = max((_array_bytes(path) for job in jobs for path in job.files.values()), default=0)
    memory = _physical_memory()
    if memory and 4 * largest > memory:
        raise InputError(
            f"a saved array of {largest / 2**30:.1f} GiB needs about {4 * largest / 2**30:.0f} GiB of memory to "
            f"estimate (the rows, their flattened copy and the noisy draws), more than this machine's "
            f"{memory / 2**30:.0f} GiB: estimate a subset (--max-inputs) or on a larger machine"
        )
    for job in jobs:
        # additive noise has a density wherever f is: its codes need no clipping
        uses_codes = job.layer["dropout"] != "additive" and any(
            ESTIMATORS[name].clips and job.layer["dropout"] in ESTIMATORS[name].kinds for name in job.wanted
        )
        for key, path in job.files.items():
            values = _load_flat(path, job)
            try:
                if key == "alphas":
                    log_noise_stds(values)
                elif uses_codes:
                    check_codes(values, request.clip_min, allow_negative=job.layer["dropout"] == "gaussian")
                else:
                    as_samples(values, key, min_rows=2)
            except InputError as err:
                raise InputError(f"{path}: {err}") from None


def _array_bytes(path: Path) -> int:
    """The size of the regular file ``path`` (not read)."""
    with run_folder.open_regular(path) as fh:
        return os.fstat(fh.fileno()).st_size


def _physical_memory() -> int:
    """This machine's memory in bytes (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


@dataclass(frozen=True)
class PreparedRun:
    """What :func:`estimate_run` reads, read and checked, with nothing written yet."""

    run_dir: Path
    callback: dict  # the callback's entries
    jobs: list[Job]  # the estimates to compute
    stale: list[str]  # the entries they replace because a file changed
    seconds: float = 0.0  # the predicted time of the jobs in this process (:func:`predicted_seconds`)
    notes: tuple[str, ...] = ()  # what the user should know, said once every check has passed (:func:`announce`)


def check_outputs(run_dir: Path, *, figures: bool) -> None:
    """Every file the estimation (and, with ``figures``, the drawing) of a run writes may be written: no
    link, folder or special file in its place and no link on the way from the run folder; nothing is
    created. ``history.csv``, which the figures read, is checked too."""
    estimates = run_folder.estimates_path(run_dir)
    for path in (estimates, estimates.with_name(f".{run_folder.ESTIMATES_NAME}.lock")):
        run_folder.check_write_target(path, root=run_dir)
    if not figures:
        return
    folder = run_dir / FIGURES_DIR
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise InputError(f"{folder} is not a folder of the run (a link or a file): refusing to draw into it")
    for child in folder.iterdir() if folder.is_dir() else ():
        run_folder.check_write_target(child, root=run_dir)
    history = run_dir / run_folder.HISTORY_NAME
    if history.exists() or history.is_symlink():
        run_folder.load_history(history)


def prepare_run(run_dir: str | Path, request: Request, *, figures: bool = False) -> PreparedRun:
    """Read the run's config, the callback's files and every array its jobs need, check them and the files
    it will write (:func:`check_outputs`), and predict the time: nothing is written."""
    run_dir = _run_folder(run_dir)
    config = run_folder.load_config(run_dir)
    check_outputs(run_dir, figures=figures)
    jobs, stale = plan(run_dir, config, run_folder.load_estimates(run_dir)["estimates"], request)
    callback = {}
    for split in request.splits:
        callback.update(_callback_entries(run_dir, config, split))
    _check_inputs(jobs, request)
    notes = _missing_epochs(run_dir, config)
    return PreparedRun(run_dir, callback, jobs, stale, predicted_seconds(jobs, request), notes)


def _missing_epochs(run_dir: Path, config: RunConfig) -> tuple[str, ...]:
    """A note on the saved epochs that the run's history says it reached but whose files are gone."""
    history = run_dir / run_folder.HISTORY_NAME
    if not history.is_file():
        return ()
    done = max(run_folder.load_history(history), default=0)
    missing = run_folder.missing_epoch_files(run_dir, config, run_folder.expected_epochs(config, done))
    if not missing:
        return ()
    return (
        f"{run_dir}: {len(missing)} representation files of the {done} epochs trained are missing "
        f"({', '.join(p.name for p in missing[:3])}{' ...' if len(missing) > 3 else ''}); those epochs are not "
        "estimated, and only training the run again makes them",
    )


FIGURES_DIR = "figures"
MIXTURE_SECONDS_PER_PAIR = 40e-9
"""Seconds per (noisy point, mixture component) pair of the mixture estimate, and per pair and unit of
``dim`` (:data:`MIXTURE_SECONDS_PER_PAIR_DIM`): the NumPy kernel on one core of a current x86-64 CPU,
measured at N = 4,000 with d = 32 and 128. A rough guide, to announce long work, not a benchmark."""
MIXTURE_SECONDS_PER_PAIR_DIM = 0.3e-9
ANNOUNCE_SECONDS = 60.0
"""Work predicted to take longer is announced (stderr from a command, ``logging`` from the API)."""
MAX_SECONDS = 2 * 24 * 3600.0
"""In-process work predicted to take days is refused with the figure (a typo, or a job for a cluster:
``--workers`` / ``--scheduler``)."""


def predicted_seconds(jobs: Sequence[Job], request: Request) -> float:
    """Predicted time of ``jobs`` in one process: the mixture's (draws x N) noisy points against N components
    dominate, (40 + 0.3 dim) ns per pair, plus its nested N/4 and N/16 subsets; other estimators are linear
    in N and counted at 1 us per input and unit (and draw, for the Gaussian bound)."""
    total = 0.0
    for job in jobs:
        n, dim = len(job.inputs.rows), job.layer["dim"]
        for name in job.wanted:
            if job.layer["dropout"] not in ESTIMATORS[name].kinds:
                continue
            draws = request.draws_of(job.inputs.split)
            if name == "mixture":
                pairs = draws * n * n * (1 + 1 / 16 + 1 / 256)
                total += pairs * (MIXTURE_SECONDS_PER_PAIR + MIXTURE_SECONDS_PER_PAIR_DIM * dim)
            else:  # the others see one noisy draw; the Gaussian bound draws them all
                total += 1e-6 * n * dim * (draws if name == "upper_bound" else 1)
    return total


def duration(seconds: float) -> str:
    """``"40 s"``, ``"12 min"``, ``"3.5 h"``, ``"2.1 days"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def announce(prepared: Sequence[PreparedRun], *, in_process: bool) -> None:
    """The last check and the first words, once every run is checked: refuse in-process work predicted to
    take more than :data:`MAX_SECONDS`, then say the runs' notes and how long the estimation will take
    when that is more than about a minute (``logging`` warnings of ``utils.analysis``: a command prints
    them on stderr)."""
    seconds = sum(p.seconds for p in prepared)
    entries = sum(len(job.wanted) for p in prepared for job in p.jobs)
    if in_process and seconds > MAX_SECONDS:
        raise InputError(
            f"the {entries} estimates would take about {duration(seconds)} in this process; estimate fewer "
            "inputs (--max-inputs), draws (--draws) or epochs (--epochs), or share them out on a cluster "
            "(--workers, --scheduler)"
        )
    for note in (note for p in prepared for note in p.notes):
        log.warning("%s", note)
    if seconds > ANNOUNCE_SECONDS:
        log.warning(
            "%d estimates predicted to take about %s%s",
            entries,
            duration(seconds),
            "" if in_process else " of one worker's time, shared out over the cluster",
        )


def estimate_run(
    run_dir: str | Path, request: Request | None = None, *, prepared: PreparedRun | None = None
) -> dict[str, Any]:
    """Fill the run's ``IP/estimates.json`` with what is missing or stale and return its content. Every
    input is checked first (:func:`prepare_run`, unless ``prepared`` says it was); work predicted to take
    more than a minute is announced, and then reported job by job through ``logging`` (no progress bar)."""
    request = request or Request()
    if prepared is None:
        prepared = prepare_run(run_dir, request)
        announce([prepared], in_process=True)
    data = begin_estimates(prepared)
    bar = tqdm(
        prepared.jobs,
        desc=f"estimating {prepared.run_dir.name}",
        unit="epoch",
        disable=not request.progress or not prepared.jobs,
    )
    start, lines = time.monotonic(), not request.progress and prepared.seconds > ANNOUNCE_SECONDS
    for i, job in enumerate(bar, start=1):
        bar.set_postfix_str(f"{job.inputs.split} epoch {job.epoch}")
        data = run_folder.store_estimates(prepared.run_dir, run_job(job, request))
        if lines:
            elapsed = time.monotonic() - start
            log.info(
                "%s: %d of %d epochs estimated (%s %d), %s elapsed, about %s left",
                prepared.run_dir.name,
                i,
                len(prepared.jobs),
                job.inputs.split,
                job.epoch,
                duration(elapsed),
                duration(elapsed / i * (len(prepared.jobs) - i)),
            )
    return data


def begin_estimates(prepared: PreparedRun) -> dict[str, Any]:
    """Store the callback's entries, say which entries will be recomputed, and return the file's content."""
    if prepared.stale:
        stale = prepared.stale
        print(
            f"{prepared.run_dir}: recomputing {len(stale)} entries whose representation or label files changed "
            f"({', '.join(stale[:5])}{' ...' if len(stale) > 5 else ''})",
            flush=True,
        )
    return run_folder.store_estimates(prepared.run_dir, prepared.callback)


def _run_folder(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise InputError(f"run folder {run_dir} does not exist")
    if not run_dir.is_dir():
        raise InputError(f"{run_dir} is a file, not a run folder")
    return run_dir
