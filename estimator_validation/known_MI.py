"""Compare the MI estimators with the true I(X;Z) on the toy problem (Adilova, Geiger & Fischer, ICLR 2023).

X ~ N(0, I_dim), f(x) = 2x + 0.5, Z = f(X) * D, D ~ N(1, s^2 I) with s = --noise-std (or
--noise-var s^2); N = --n inputs with --draws noisy draws each. Estimators:

* ``mixture``: the dropout mixture estimator (``gaussian_dropout_mi``), with its Monte Carlo stderr;
* ``gaussian_upper_bound``: the Ledoit-Wolf Gaussian bound on h(Z) minus the closed-form h(Z|X);
* ``binning_bins_<k>`` / ``binning_size_<s>``: H of the binned noisy points Z (Shwartz-Ziv & Tishby
  form, X uniform over the points), by bin count and bin size; never above log of the number of points;
* ``ksg`` and ``edge``: between X and Z, on one noisy draw per input (N i.i.d. pairs of the joint);
* ``doe_gaussian`` / ``doe_logistic``: Difference of Entropies (McAllester & Stratos 2020), trained on
  70% of the inputs (with all their draws), early-stopped on 10%, evaluated on the other 20%.

With fdim = 1 (and N <= 5000) the exact target of the mixture estimator for the drawn inputs
(``truth_finite_sample``) is also computed by quadrature. Writes known_MI.json and known_MI.png into --out.

Usage: python estimator_validation/known_MI.py --dim 1 --fdim 1
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from estimator_validation import common, run_time
from estimator_validation.doe import doe_mi
from estimator_validation.ground_truth import finite_sample_truth_1d
from estimator_validation.progress import report_progress
from estimator_validation.toy_problem import ToyData
from mi_estimators.binning import binning_mi
from mi_estimators.dropout_MI import gaussian_dropout_mi
from mi_estimators.edge import edge_mi
from mi_estimators.ksg import ksg_mi
from mi_estimators.upper_bound import gaussian_dropout_upper_bound
from utils.analysis.figure_layout import (
    PAGE_WIDTH,
    figure_legend,
    new_figure,
    styled,
    title_and_caption,
    unique_entries,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before Keras is first imported

SCRIPT = "known_MI"
BIN_COUNTS = (2, 5, 10, 15, 20, 50, 100)
BIN_SIZES = (0.9, 0.5, 0.2, 0.1, 0.001)
DOE_FAMILIES = ("gaussian", "logistic")
DEFAULTS = {"n": 1000, "draws": 10, "repeats": 1}
QUICK = {"n": 300, "draws": 5, "repeats": 1}
LOWER = "--n, --draws, --dim or --fdim"
"""The flags that reduce the memory and time a run needs."""
KERAS_START_SECONDS = 8.0
"""Importing Keras and compiling the first DoE model."""
DOE_EPOCHS = {"quick": 60, "default": 300}
"""Most training epochs of a DoE model (early stopping usually ends it sooner)."""
# DoE splits the inputs 70/10/20: at least 2 validation and 4 test inputs
MIN_N = 20
# the exact finite-sample target costs O(N^2) quadrature work: about 10 s at N = 5000
FINITE_TRUTH_MAX_N = 5000
NAMES = (
    "mixture",
    "gaussian_upper_bound",
    *(f"binning_bins_{k}" for k in BIN_COUNTS),
    *(f"binning_size_{s:g}" for s in BIN_SIZES),
    "ksg",
    "edge",
    *(f"doe_{f}" for f in DOE_FAMILIES),
)


def _estimators(data: ToyData, seed: int, quick: bool) -> dict:
    """name -> function returning (value, stderr or None, notes), for every estimator of ``NAMES``."""
    draws = len(data.z) // data.n
    pairs_z = data.z[::draws]  # first noisy draw of each input
    doe_kwargs = {"epochs": DOE_EPOCHS["quick"], "patience": 8} if quick else {}

    def mixture():
        r = gaussian_dropout_mi(
            data.f, noise_std=data.noise_std, draws=draws, seed=seed, max_memory_mb=common.MIXTURE_MEMORY_MB
        )
        return r.mi_xz, r.mi_xz_stderr, {}

    def upper_bound():
        r = gaussian_dropout_upper_bound(data.f, noise_std=data.noise_std, draws=draws, seed=seed)
        return r.mi_xz, None, {}

    def binning(**kw):
        r = binning_mi(data.z, **kw)
        return (
            r.mi_xz,
            None,
            {"value_range": r.params["value_range"], "n_bins": r.params["n_bins"], "bin_size": r.params["bin_size"]},
        )

    def ksg():
        return ksg_mi(data.x, pairs_z, k=3, seed=seed).mi, None, {}

    def edge():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = edge_mi(data.x, pairs_z, seed=seed)
        return r.mi, None, {"warnings": sorted({str(w.message) for w in caught})}

    def doe(family):
        r = doe_mi(data.x[data.index], data.z, family=family, groups=data.index, seed=seed, **doe_kwargs)
        return r.mi, r.mi_stderr, {k: r.params[k] for k in ("epochs_run", "n_test", "n_test_groups")}

    return {
        "mixture": mixture,
        "gaussian_upper_bound": upper_bound,
        **{f"binning_bins_{k}": (lambda k=k: binning(n_bins=k)) for k in BIN_COUNTS},
        **{f"binning_size_{s:g}": (lambda s=s: binning(bin_size=s)) for s in BIN_SIZES},
        "ksg": ksg,
        "edge": edge,
        **{f"doe_{f}": (lambda f=f: doe(f)) for f in DOE_FAMILIES},
    }


CAPTION = "Binning band: +-1 std over repeats; bars: +-1 std over repeats, else the standard error; lines: estimates."
LINES = (
    ("mixture", "mixture (dropout MI)"),
    ("gaussian_upper_bound", "Gaussian upper bound"),
    ("ksg", "KSG"),
    ("edge", "EDGE"),
    ("doe_gaussian", "DoE (Gaussian)"),
    ("doe_logistic", "DoE (logistic)"),
)
"""Estimators drawn as a line on the binning panels and as a point with its error bar on the zoom."""


@styled
def figure(doc: dict) -> plt.Figure:
    """From the result ``doc``: binning against bin count and bin size (every other estimator as a line)
    in the top row; under them a zoom on the non-binning estimators, with error bars."""
    est = doc["estimates"]
    fig = new_figure(PAGE_WIDTH, 6.2)
    # two subfigures: the zoom's estimator names widen its own margin only, not the binning panels'
    rows = fig.add_gridspec(2, 1, height_ratios=(1.2, 1.0))
    top, bottom = fig.add_subfigure(rows[0]), fig.add_subfigure(rows[1])
    axes = top.subplot_mosaic([["bins", "size"]]) | bottom.subplot_mosaic([["zoom"]])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    panels = [
        (axes["bins"], BIN_COUNTS, [f"binning_bins_{k}" for k in BIN_COUNTS], "number of bins"),
        (axes["size"], BIN_SIZES, [f"binning_size_{s:g}" for s in BIN_SIZES], "bin size"),
    ]
    for ax, xs, names, xlabel in panels:
        entry = {"mean": [est[n]["value"] for n in names], "std": [est[n]["std_over_repeats"] for n in names]}
        common.band(ax, xs, entry, "binning of Z", color="tab:olive")
        for (name, label), colour in zip(LINES, colours):
            ax.axhline(est[name]["value"], color=colour, label=label)
        common.reference_lines(ax, doc["truth"]["mi"], doc["log_n"])
        ax.axhline(doc["log_n_points"], color="tab:olive", lw=1, ls=":", label="log(N x noise draws)")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("I(X;Z) [nats]")
    axes["size"].sharey(axes["bins"])
    axes["size"].invert_xaxis()  # finer bins to the right in both panels
    _zoom(axes["zoom"], doc, colours)
    title_and_caption(fig, common.title(doc["args"]), CAPTION)
    figure_legend(fig, *unique_entries([axes["bins"], axes["zoom"]]))
    return fig


def _zoom(ax: plt.Axes, doc: dict, colours: Sequence[str]) -> None:
    """Each non-binning estimator's value +- (std over repeats, else standard error), with the truth."""
    est = doc["estimates"]
    ends = [v for v in (doc["truth"]["mi"],) if v is not None]
    for i, ((name, _), colour) in enumerate(zip(LINES, colours)):
        e = est[name]
        err = e["std_over_repeats"] if e["std_over_repeats"] is not None else e["stderr"]
        ax.errorbar(e["value"], i, xerr=err, fmt="o", ms=4, color=colour, capsize=3)
        ends += [e["value"] - (err or 0.0), e["value"] + (err or 0.0)]
    margin = 0.08 * (max(ends) - min(ends)) + 0.02
    ax.set_xlim(min(ends) - margin, max(ends) + margin)
    ax.set_yticks(range(len(LINES)), [label for _, label in LINES])
    ax.invert_yaxis()
    if doc["truth"]["mi"] is not None:
        ax.axvline(doc["truth"]["mi"], color="black", lw=1.5, ls="--", label="true I(X;Z)")
    if doc.get("truth_finite_sample"):
        ax.axvline(
            doc["truth_finite_sample"]["mi"], color="black", lw=1, ls="-.", label="exact I(X;Z) for the drawn inputs"
        )
    ax.axvline(doc["log_n"], color="grey", lw=1.2, ls=":", label="log N")
    ax.set_xlabel("I(X;Z) [nats]")


def _memory(args) -> dict[str, float]:
    """Estimated peak memory (bytes) by part: the toy data plus the largest estimator (they run in turn).
    Bytes per row or input measured with tracemalloc at d = 1 and 10, rounded up."""
    n, ns, dim, fdim = args.n, args.draws, args.dim, args.fdim
    rows = n * ns
    estimators = {
        "mixture": common.mixture_bytes(n, fdim, ns),
        "Gaussian bound": common.gaussian_bound_bytes(rows, fdim),
        "binning": 8.0 * rows * (4 * fdim + 4),  # bin ids, floor temporaries, row sort
        "KSG": 8.0 * n * (3 * (dim + fdim) + 12),  # jittered copies, joint array, KD-trees
        "EDGE": 8.0 * n * (3 * (dim + fdim) + 5),  # standardised copies, bucket ids
        "DoE": 8.0 * rows * (7 * (dim + fdim) + 2),  # x per draw, float32 copies, splits
        "exact I_N": (64 + 2e-4 * n) * 2**20 if fdim == 1 and n <= FINITE_TRUTH_MAX_N else 0.0,
    }
    largest = max(estimators, key=estimators.__getitem__)
    return {
        "interpreter and Keras": common.BASE_BYTES + common.KERAS_BYTES,
        "toy data": common.toy_bytes(n, dim, fdim, ns),
        f"estimator {largest}": estimators[largest],
    }


def _seconds(args) -> float:
    """Rough seconds of the run: Keras' start-up, then per repeat every estimator of ``NAMES`` in turn
    (constants fitted to the --quick and default runs at dim 1)."""
    n, ns, dim, fdim = args.n, args.draws, args.dim, args.fdim
    rows, joint = n * ns, dim + fdim
    # early stopping typically ends DoE after about 50 epochs (known_MI.json: epochs_run)
    doe_steps = math.ceil(0.7 * rows / 512) * min(60, DOE_EPOCHS["quick" if args.quick else "default"])
    per_repeat = (
        run_time.mixture_seconds(n, fdim, ns)
        + 1e-8 * rows * fdim * (fdim + 10)  # Gaussian bound
        + len(BIN_COUNTS + BIN_SIZES) * 1e-6 * rows * fdim  # binning: sorting the binned rows
        + 2e-6 * n * math.log2(n) * joint  # KSG
        + 12 * 1e-6 * n * joint  # EDGE
        + len(DOE_FAMILIES) * doe_steps * (0.02 + 2e-7 * joint)  # DoE training steps
        + (4e-7 * n * n if fdim == 1 and n <= FINITE_TRUTH_MAX_N else 0.0)
    )
    return KERAS_START_SECONDS + args.repeats * per_repeat


def _run(args) -> tuple[dict, list]:
    """Every estimator on every repeat: (name -> [(value, stderr, notes)] , exact I_N of each repeat)."""
    values: dict[str, list] = {}
    finite_truth = []
    with report_progress(args.repeats * len(NAMES), SCRIPT, "estimates") as bar:
        for _, data, est_seed in common.toy_repeats(args):
            if args.fdim == 1 and args.n <= FINITE_TRUTH_MAX_N:
                finite_truth.append(finite_sample_truth_1d(data.f, args.noise_std))
            estimators = _estimators(data, est_seed, args.quick)
            for name in NAMES:
                bar.set_postfix_str(name)
                values.setdefault(name, []).append(estimators[name]())
                bar.update()
    return values, finite_truth


def _summaries(values: dict) -> dict:
    """The JSON entry of each estimator: value, stderr and spread over repeats, notes and warnings."""
    estimates = {}
    for name, runs in values.items():
        estimates[name] = common.summarise(
            [r[0] for r in runs], [r[1] for r in runs] if runs[0][1] is not None else None
        )
        notes = {k: v for k, v in runs[0][2].items() if k != "warnings"}
        warned = sorted({w for r in runs for w in r[2].get("warnings", [])})
        estimates[name].update(notes | ({"warnings": warned} if warned else {}))
    return estimates


def _finite_truth_entry(finite_truth: list) -> dict[str, Any]:
    entry: dict[str, Any] = {
        key: float(np.mean([t[key] for t in finite_truth])) for key in ("mi", "h_z", "h_z_given_x")
    }
    entry["values"] = [t["mi"] for t in finite_truth]
    entry["note"] = (
        "exact I_N = h(Z_N) - h(Z|X)_N for X uniform over each repeat's drawn inputs (quadrature), "
        "the target of the mixture estimator, averaged over repeats"
    )
    return entry


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line with sizes, noise level and output folder resolved (CommandError for bad flags)."""
    parser = common.make_parser(
        SCRIPT, __doc__.split("\n\n")[0], defaults=DEFAULTS, quick=QUICK, n_help="number of inputs N", min_n=MIN_N
    )
    return common.resolve(parser, parser.parse_args(argv), defaults=DEFAULTS, quick=QUICK)


def _compute(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    values, finite_truth = _run(args)
    estimates = _summaries(values)
    extra: dict[str, Any] = {"log_n_points": math.log(args.n * args.draws)}
    if finite_truth:
        extra["truth_finite_sample"] = _finite_truth_entry(finite_truth)
    doc = common.payload(SCRIPT, args, math.log(args.n), estimates, **extra)
    doc["elapsed_s"] = round(time.perf_counter() - start, 2)
    common.print_table(doc)
    if finite_truth:
        print(f"{'exact I_N (drawn inputs)':<26}{doc['truth_finite_sample']['mi']:>10.4f}")
    for name, entry in estimates.items():
        for message in entry.get("warnings", []):
            print(f"warning ({name}): {message}")
    return common.write_outputs(args.out, SCRIPT, doc, figure(doc))


main = common.script_main(SCRIPT, parse=parse_args, memory=_memory, seconds=_seconds, lower=LOWER, compute=_compute)


if __name__ == "__main__":
    sys.exit(main())
