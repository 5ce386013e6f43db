"""Estimate the information plane of a run folder and draw it.

    python -m mi_estimators.information_plane RUN_DIR [--estimators mixture,binning] [--epochs 0-20]

For every analysed dropout layer, split and saved epoch, the selected estimators turn the saved
noise-free representations f(x) into I(X;Z) and I(Y;Z) (Adilova, Geiger & Fischer, ICLR 2023). The
noise level is read from the run's ``config.json``, never from a flag. Results go to
``IP/estimates.json``, merged under a file lock and written atomically after every epoch, so an
interrupted, extended or parallel (``--epochs`` shared out between processes) analysis only computes
what is missing. Layout of that file::

    {"format": 1, "estimates": {estimator: {layer: {split: {"<epoch>": entry}}}}}

with ``entry`` holding ``mi_xz``, ``mi_xz_stderr``, ``mi_zy``, ``mi_zy_stderr``, ``n_samples``,
``log_n`` (the ceiling of I(X;Z)), ``h_y`` (the ceiling of I(Y;Z)), ``settings`` (what decides the
value: an entry whose settings differ from the request is recomputed) and ``params`` (what the
estimator reports), or ``skipped`` with the reason where a value does not exist (Bernoulli dropout).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from mi_estimators.binning import binning_mi
from mi_estimators.discrete import discrete_entropy
from mi_estimators.dropout_MI import estimate_layer_mi
from mi_estimators.edge import edge_mi
from mi_estimators.ksg import ksg_mi_labels
from mi_estimators.results import MIResult
from mi_estimators.upper_bound import gaussian_dropout_upper_bound
from utils import run_folder as rf

ESTIMATES_NAME = "estimates.json"
FORMAT = 1
CALLBACK = "callback"
DEFAULT_ESTIMATORS = ("mixture", "binning")
DEFAULT_NOISE_SAMPLES = {"train": 1, "test": 6}
DEFAULT_BINS = 30
INFINITE_MI = ("I(X;Z) is infinite under Bernoulli dropout (the all-ones mask has positive probability; "
               "Adilova et al. 2023): only binning and the cross-entropy bound are defined")


@dataclass(frozen=True)
class Estimator:
    """How one estimator turns a layer's arrays into an :class:`MIResult`.

    ``noisy`` estimators receive the noise draw count; ``kinds`` are the dropout kinds it applies to.
    """

    describe: str
    run: Callable[..., MIResult]
    kinds: tuple[str, ...] = ("gaussian", "information", "bernoulli")
    noisy: bool = False


def _mixture(layer, f, alphas, labels, *, noise_samples, seed, progress):
    return estimate_layer_mi(layer, f, alphas=alphas, labels=labels, noise_samples=noise_samples, seed=seed,
                             progress=progress)


def _upper_bound(layer, f, alphas, labels, *, noise_samples, seed, progress):
    return gaussian_dropout_upper_bound(f, layer["noise_std"], noise_samples=noise_samples, seed=seed)


def _binning(layer, f, alphas, labels, *, n_bins=DEFAULT_BINS, **_):
    return binning_mi(f, labels, n_bins=n_bins)


def _as_zy(result: MIResult) -> MIResult:
    result.mi_zy, result.mi_zy_stderr = result.mi, result.mi_stderr
    return result


def _edge(layer, f, alphas, labels, *, seed, **_):
    return _as_zy(edge_mi(f, labels, seed=seed, discrete_y=True))


def _ksg(layer, f, alphas, labels, *, seed, **_):
    return _as_zy(ksg_mi_labels(f, labels, seed=seed))


ESTIMATORS: dict[str, Estimator] = {
    "mixture": Estimator("dropout mixture estimator, I(X;Z) and I(Y;Z) (log space for information dropout)",
                         _mixture, kinds=("gaussian", "information"), noisy=True),
    "binning": Estimator(f"Shwartz-Ziv & Tishby binning of f(x), {DEFAULT_BINS} bins over each epoch's range",
                         _binning),
    "upper_bound": Estimator("Gaussian (Ledoit-Wolf) upper bound on I(X;Z)", _upper_bound,
                             kinds=("gaussian",), noisy=True),
    "edge": Estimator("EDGE estimate of I(Y;Z) from f(x)", _edge),
    "ksg": Estimator("KSG (Ross 2014 form for discrete Y) estimate of I(Y;Z) from f(x)", _ksg),
}


def parse_epochs(text: str) -> Callable[[int], bool]:
    """Predicate for an epoch selection such as ``"0-20,30,40-"`` (ranges inclusive, open ends allowed)."""
    parts = []
    for token in filter(None, (t.strip() for t in text.split(","))):
        lo, sep, hi = token.partition("-")
        try:
            parts.append((int(lo) if lo else 0, (int(hi) if hi else None) if sep else int(lo)))
        except ValueError:
            raise ValueError(f"bad epoch selection {token!r}: use e.g. 10, 0-20 or 40-") from None
    if not parts:
        raise ValueError(f"empty epoch selection {text!r}")
    return lambda e: any(lo <= e and (hi is None or e <= hi) for lo, hi in parts)


def estimates_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / rf.IP_DIR / ESTIMATES_NAME


def load_estimates(run_dir: str | Path) -> dict[str, Any]:
    """``IP/estimates.json`` (an empty structure when absent)."""
    path = estimates_path(run_dir)
    if not path.exists():
        return {"format": FORMAT, "estimates": {}}
    data = rf.load_json(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("estimates"), dict):
        raise ValueError(f"{path} is not an estimates file of format {FORMAT}; move it away to recompute")
    return data


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """Serialise read-merge-write of ``estimates.json`` between processes sharing the run folder."""
    lock = Path(run_dir) / rf.IP_DIR / f".{ESTIMATES_NAME}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as fh:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; single-process use is still safe
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _store(run_dir: Path, entries: list[tuple[tuple[str, str, str, str], dict]]) -> dict[str, Any]:
    with _locked(run_dir):
        data = load_estimates(run_dir)
        changed = False
        for (name, layer, split, epoch), entry in entries:
            by_epoch = data["estimates"].setdefault(name, {}).setdefault(layer, {}).setdefault(split, {})
            changed |= by_epoch.get(epoch) != entry
            by_epoch[epoch] = entry
        if changed:
            rf.save_json(estimates_path(run_dir), data)
    return data


def _entry(result: MIResult, settings: dict, n: int, h_y: float) -> dict:
    d = result.to_dict()
    return {"mi_xz": d["mi_xz"], "mi_xz_stderr": d["mi_xz_stderr"], "mi_zy": d["mi_zy"],
            "mi_zy_stderr": d["mi_zy_stderr"], "n_samples": n, "log_n": float(np.log(n)), "h_y": h_y,
            "settings": settings, "params": d["params"]}


def _callback_entries(run_dir: Path, config: dict, split: str, h_y: float) -> list:
    """The callback's logged surrogates: mean KL for I(X;Z), H(Y) - cross-entropy for I(Y;Z)."""
    several = len(config["layers"]) > 1
    mi_zy = rf.load_ip(run_dir, split, "mi_zy")
    out = []
    for layer in config["layers"]:
        mi_xz = rf.load_ip(run_dir, split, "mi_xz", layer["name"] if several else None)
        for epoch in sorted(set(mi_xz) | set(mi_zy)):
            entry = {"mi_xz": mi_xz.get(epoch), "mi_xz_stderr": None, "mi_zy": mi_zy.get(epoch),
                     "mi_zy_stderr": None, "n_samples": None, "log_n": None, "h_y": h_y,
                     "settings": {}, "params": {"source": "callback: mean KL and H(Y) - cross-entropy"}}
            out.append(((CALLBACK, layer["name"], split, str(epoch)), entry))
    return out


def estimate_run(run_dir: str | Path, *, estimators: Sequence[str] = DEFAULT_ESTIMATORS,
                 splits: Sequence[str] = rf.SPLITS, epochs: str | None = None,
                 noise_samples: dict[str, int] | int | None = None, max_samples: int | None = None,
                 seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Fill ``IP/estimates.json`` of ``run_dir`` with what is missing and return its content.

    ``noise_samples``: noise draws per input for the noisy estimators, per split (default: 1 for
    train, 6 for test); ``max_samples``: a seeded subset of inputs (the same for every epoch),
    reported as ``n_samples``; ``epochs``: a selection such as ``"0-20,30"``.
    """
    run_dir = Path(run_dir)
    config = rf.load_config(run_dir)
    unknown = [e for e in estimators if e not in ESTIMATORS]
    if unknown:
        raise ValueError(f"unknown estimator(s) {unknown}; available: {sorted(ESTIMATORS)}")
    if isinstance(noise_samples, int):
        noise_samples = {s: noise_samples for s in rf.SPLITS}
    noise_samples = {**DEFAULT_NOISE_SAMPLES, **(noise_samples or {})}
    if any(v < 1 for v in noise_samples.values()):
        raise ValueError(f"noise samples must be >= 1, got {noise_samples}")
    if max_samples is not None and max_samples < 2:
        raise ValueError(f"--max-samples must be at least 2, got {max_samples}")
    select = parse_epochs(epochs) if epochs else (lambda e: True)
    several = len(config["layers"]) > 1
    tasks, callback = [], []
    for split in splits:
        available = rf.saved_epochs(run_dir, split)
        chosen = [e for e in available if select(e)]
        if not chosen:
            raise ValueError(f"no saved {split} epochs match {epochs!r} in {run_dir} (saved: {available})")
        _, labels = rf.load_inputs_labels(run_dir, split)
        idx = rf.seeded_rows(len(labels), max_samples, seed)
        h_y = discrete_entropy(labels[idx])
        callback += _callback_entries(run_dir, config, split, discrete_entropy(labels))
        tasks += [(layer, split, epoch, labels[idx], idx, h_y, len(labels))
                  for layer in config["layers"] for epoch in chosen]
    data = _store(run_dir, callback)
    done = data["estimates"]
    todo = []
    for layer, split, epoch, labels, idx, h_y, n_rows in tasks:
        wanted = {}
        for name in estimators:
            settings = _settings(name, split, noise_samples, max_samples, seed)
            have = done.get(name, {}).get(layer["name"], {}).get(split, {}).get(str(epoch))
            if have is None or have.get("settings") != settings:
                wanted[name] = settings
        if wanted:
            todo.append((layer, split, epoch, labels, idx, h_y, n_rows, wanted))
    for layer, split, epoch, labels, idx, h_y, n_rows, wanted in tqdm(todo, desc="estimating", unit="epoch",
                                                              disable=not progress or not todo):
        tag = layer["name"] if several else None
        f = _flat(rf.load_representations(run_dir, split, epoch, tag), idx, layer,
                  rf.representation_path(run_dir, split, epoch, tag), n_rows)
        alphas = None if layer["dropout"] != "information" else _flat(
            rf.load_alphas(run_dir, split, epoch, tag), idx, layer, rf.alpha_path(run_dir, split, epoch, tag), n_rows)
        new = []
        for name, settings in wanted.items():
            est = ESTIMATORS[name]
            key = (name, layer["name"], split, str(epoch))
            if layer["dropout"] not in est.kinds:
                reason = INFINITE_MI if layer["dropout"] == "bernoulli" else \
                    f"{name} does not apply to {layer['dropout']} dropout"
                new.append((key, {"skipped": reason, "settings": settings}))
                continue
            try:
                result = est.run(layer, f, alphas, labels, noise_samples=noise_samples[split], seed=seed,
                                 progress=False)
            except ValueError as err:
                raise ValueError(f"{name} on {split} epoch {epoch} (layer {layer['name']}): {err}") from None
            new.append((key, _entry(result, settings, len(idx), h_y)))
        data = _store(run_dir, new)
    return data


def _flat(array: np.ndarray, idx: np.ndarray, layer: dict, path: Path, n_rows: int) -> np.ndarray:
    """Rows ``idx`` of a saved array as (n, dim): conv representations are flattened per input."""
    if array.ndim < 2 or len(array) != n_rows or int(np.prod(array.shape[1:])) != layer["dim"]:
        raise ValueError(f"{path} has shape {array.shape}; expected {n_rows} rows (as the labels file) of "
                         f"dim {layer['dim']} (layer {layer['name']!r} in config.json)")
    return array[idx].reshape(len(idx), -1)


def _settings(name: str, split: str, noise_samples: dict[str, int], max_samples: int | None, seed: int) -> dict:
    settings = {"max_samples": max_samples, "seed": seed}
    if ESTIMATORS[name].noisy:
        settings["noise_samples"] = noise_samples[split]
    if name == "binning":
        settings["n_bins"] = DEFAULT_BINS
    return settings


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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mi_estimators.information_plane", description=__doc__.split("\n\n")[0],
                                epilog="Estimators: " + "; ".join(f"{k}: {v.describe}" for k, v in ESTIMATORS.items()))
    p.add_argument("run_dir", type=Path, help="run folder written by mi_mnist_dropout.py / mi_cifar_dropout.py")
    p.add_argument("--estimators", default=",".join(DEFAULT_ESTIMATORS),
                   help=f"comma-separated, from {sorted(ESTIMATORS)} (default %(default)s); the callback's "
                        "KL / cross-entropy values are always included")
    p.add_argument("--splits", default="train,test", help="comma-separated from train,test (default %(default)s)")
    p.add_argument("--epochs", default=None,
                   help="epoch selection, e.g. 0-20,30 or 40- (default: all saved); the figures then show these "
                        "epochs only and are named information_plane_epochs<selection>.png")
    p.add_argument("--noise-samples", type=int, default=None,
                   help="noise draws per input for the mixture estimator and the upper bound "
                        f"(default: {DEFAULT_NOISE_SAMPLES['train']} for train, {DEFAULT_NOISE_SAMPLES['test']} for test)")
    p.add_argument("--max-samples", type=int, default=None, help="analyse a seeded subset of this many inputs")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws and the subset (default 0)")
    p.add_argument("--no-plots", action="store_true", help="estimate only, draw no figures")
    p.add_argument("--formats", default="png", help="figure formats, comma-separated from png,pdf,svg")
    return p


def analyze(run_dir: str | Path, *, plots: bool = True, formats: Sequence[str] = ("png",),
            epochs: str | None = None, **estimate_kwargs: Any) -> None:
    """:func:`estimate_run`, print the summary table, then draw the figures and print their paths.

    With an ``epochs`` selection the figures show those epochs only, named
    ``information_plane_epochs<selection>``.
    """
    from utils.ip_figures import draw_run_figures  # matplotlib only when drawing

    print(summary_table(estimate_run(run_dir, epochs=epochs, **estimate_kwargs)), flush=True)
    if plots:
        selected = {"epochs": parse_epochs(epochs), "suffix": "_epochs" + epochs} if epochs else {}
        for path in draw_run_figures(run_dir, formats=formats, **selected):
            print(f"figure: {path}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        splits = [s for s in args.splits.split(",") if s]
        bad = [s for s in splits if s not in rf.SPLITS]
        if bad:
            raise ValueError(f"unknown split(s) {bad}; use train and/or test")
        analyze(args.run_dir, plots=not args.no_plots, formats=args.formats.split(","), epochs=args.epochs,
                estimators=[e for e in args.estimators.split(",") if e], splits=splits,
                noise_samples=args.noise_samples, max_samples=args.max_samples, seed=args.seed)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
