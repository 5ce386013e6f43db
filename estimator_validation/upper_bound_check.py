"""The Gaussian upper bound and the mixture estimate of h(Z) against the number of inputs.

Toy problem of Adilova, Geiger & Fischer (ICLR 2023): X ~ N(0, I_dim), f(x) = 2x + 0.5, Z = f(X) * D,
D ~ N(1, s^2 I), s = --noise-std (or --noise-var s^2). For each n (10 ... 10,000, up to --n) and each
of --repeats draws, with --draws noisy draws per input:

* ``gaussian_upper_bound``: h(Z) <= 1/2 log det(2 pi e Sigma_Z), Sigma_Z the Ledoit-Wolf covariance
  of the n x draws noisy points (``gaussian_entropy_upper_bound``); in the population it is
  above the true h(Z) (the Gaussian has the largest entropy for a given covariance) and tends to
  1/2 log det(2 pi e Cov Z), Cov Z in closed form (``gaussian_bound_limit`` in the JSON);
* ``mixture``: the entropy of the mixture of the n conditionals, by the dropout mixture estimator
  (``gaussian_dropout_mi``, field h_z); its mean over draws is below the true h(Z) and rises to it.

The sizes are nested (size n uses the first n inputs of each draw); the truth needs --fdim <= --dim.
Writes upper_bound_check.json and
upper_bound_check.png into --out; ``checks.bound_above_truth`` says, per n, whether the mean bound is
at or above the true h(Z).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from estimator_validation import common, run_time
from estimator_validation.progress import report_progress
from estimator_validation.toy_problem import gaussian_bound_limit
from mi_estimators.dropout_MI import gaussian_dropout_mi
from mi_estimators.upper_bound import gaussian_entropy_upper_bound
from utils.analysis.figure_layout import (
    COLUMN_WIDTH,
    figure_legend,
    new_figure,
    styled,
    title_and_caption,
    unique_entries,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before Keras is first imported

SCRIPT = "upper_bound_check"
SIZES = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
DEFAULTS = {"n": 10000, "draws": 10, "repeats": 5}
QUICK = {"n": 1000, "draws": 5, "repeats": 3}
LOWER = "--n, --draws or --fdim"
"""The flags that reduce the memory and time a run needs."""
MIN_N = 10


CAPTION = "Lines: means over repeats; bands: +-1 std over repeats."


@styled
def figure(doc: dict) -> plt.Figure:
    """The Gaussian bound and the mixture's h(Z) against n, with the true h(Z), from the result ``doc``."""
    s, truth = doc["series"], doc["truth"]["h_z"]
    fig = new_figure(COLUMN_WIDTH, 3.6)
    ax = fig.subplots()
    common.band(ax, s["gaussian_upper_bound_h_z"]["n"], s["gaussian_upper_bound_h_z"], "Gaussian upper bound")
    common.band(ax, s["mixture_h_z"]["n"], s["mixture_h_z"], "mixture estimate")
    ax.axhline(truth, color="black", lw=1.5, ls="--", label="true h(Z)")
    ax.axhline(
        doc["gaussian_bound_limit"],
        color="tab:blue",
        lw=1,
        ls=":",
        label="limit of the bound, 1/2 log det(2 pi e Cov Z)",
    )
    ax.set_xscale("log")
    ax.set_xlabel("number of inputs n")
    ax.set_ylabel("h(Z) [nats]")
    title_and_caption(fig, common.title(doc["args"]), CAPTION)
    figure_legend(fig, *unique_entries([ax]))
    return fig


def _memory(args) -> dict[str, float]:
    """Estimated peak memory (bytes) by part: the toy data and the larger of the two estimators."""
    n, ns, fdim = args.n, args.draws, args.fdim
    estimators = {
        "Gaussian bound": common.gaussian_bound_bytes(n * ns, fdim),
        "mixture": common.mixture_bytes(n, fdim, ns),
    }
    largest = max(estimators, key=estimators.__getitem__)
    return {
        "interpreter": common.BASE_BYTES,
        "toy data": common.toy_bytes(n, args.dim, fdim, ns),
        f"estimator {largest}": estimators[largest],
        "Cov(Z) and its log-determinant": 8.0 * 4 * fdim**2,
    }


def _seconds(args) -> float:
    """Rough seconds of the run: per repeat and size, the Gaussian bound and the mixture estimate."""
    ns, fdim = args.draws, args.fdim
    per_repeat = sum(
        run_time.mixture_seconds(m, fdim, ns) + 1e-8 * m * ns * fdim * (fdim + 10)
        for m in common.size_grid(SIZES, args.n)
    )
    return args.repeats * per_repeat


def _run(args, sizes: list[int]) -> dict[str, np.ndarray]:
    """(repeats, sizes) arrays: the Gaussian bound on h(Z), the mixture's h(Z) and its stderr."""
    out = {key: np.empty((args.repeats, len(sizes))) for key in ("bound", "mix", "mix_se")}
    with report_progress(args.repeats * len(sizes), SCRIPT, "sizes") as bar:
        for rep, data, est_seed in common.toy_repeats(args):
            for j, m in enumerate(sizes):
                bar.set_postfix_str(f"n={m}")
                out["bound"][rep, j] = gaussian_entropy_upper_bound(data.z[: m * args.draws]).h_z
                r = gaussian_dropout_mi(
                    data.f[:m],
                    noise_std=data.noise_std,
                    draws=args.draws,
                    seed=est_seed,
                    max_memory_mb=common.MIXTURE_MEMORY_MB,
                )
                out["mix"][rep, j], out["mix_se"][rep, j] = r.h_z, r.h_z_stderr
                bar.update()
    return out


def _checks(doc: dict, sizes: list[int]) -> dict:
    """Per n, the mean bound minus the true h(Z) and whether it is at or above it."""
    mean_bound = np.asarray(doc["series"]["gaussian_upper_bound_h_z"]["mean"], dtype=np.float64)
    truth = doc["truth"]["h_z"]
    return {
        "n": sizes,
        "bound_minus_truth": [float(v) for v in mean_bound - truth],
        "bound_above_truth": [bool(v) for v in mean_bound >= truth],
    }


def _report(doc: dict, sizes: list[int]) -> None:
    series, truth = doc["series"], doc["truth"]["h_z"]
    common.print_series(
        sizes, {"h(Z) Gaussian bound": series["gaussian_upper_bound_h_z"], "h(Z) mixture": series["mixture_h_z"]}
    )
    print(f"true h(Z): {truth:.4f}; large-n limit of the Gaussian bound: {doc['gaussian_bound_limit']:.4f}")
    below = [n for n, ok in zip(sizes, doc["checks"]["bound_above_truth"]) if not ok]
    if below:
        print(
            f"note: the mean Gaussian bound is below the true h(Z) at n = {below}: at small n it bounds the entropy "
            f"of the n-input mixture (below h(Z)) from a noisy covariance estimate"
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line with sizes, noise level and output folder resolved (CommandError for bad flags)."""
    parser = common.make_parser(
        SCRIPT, __doc__.split("\n\n")[0], defaults=DEFAULTS, quick=QUICK, n_help="largest number of inputs", min_n=MIN_N
    )
    return common.resolve(parser, parser.parse_args(argv), defaults=DEFAULTS, quick=QUICK, need_truth=True)


def _compute(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    sizes = common.size_grid(SIZES, args.n)
    r = _run(args, sizes)
    series = {
        "gaussian_upper_bound_h_z": common.series(sizes, r["bound"]),
        "mixture_h_z": common.series(sizes, r["mix"], r["mix_se"]),
    }
    estimates = {
        f"gaussian_upper_bound_h_z_n{sizes[-1]}": common.summarise(r["bound"][:, -1]),
        f"mixture_h_z_n{sizes[-1]}": common.summarise(r["mix"][:, -1], r["mix_se"][:, -1]),
    }
    doc = common.payload(
        SCRIPT,
        args,
        math.log(args.n),
        estimates,
        series=series,
        gaussian_bound_limit=gaussian_bound_limit(args.dim, args.fdim, args.noise_std),
    )
    doc["checks"] = _checks(doc, sizes)
    doc["elapsed_s"] = round(time.perf_counter() - start, 2)
    _report(doc, sizes)
    return common.write_outputs(args.out, SCRIPT, doc, figure(doc))


main = common.script_main(SCRIPT, parse=parse_args, memory=_memory, seconds=_seconds, lower=LOWER, compute=_compute)


if __name__ == "__main__":
    sys.exit(main())
