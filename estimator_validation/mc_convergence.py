"""Monte Carlo convergence of h(Z|X) and of the mixture estimate of I(X;Z) with the number of inputs.

Toy problem of Adilova, Geiger & Fischer (ICLR 2023): X ~ N(0, I_dim), f(x) = 2x + 0.5, Z = f(X) * D,
D ~ N(1, s^2 I), s = --noise-std (or --noise-var s^2). For each number of inputs n (10 ... 150,000, the
paper's range, up to --n) and each of --repeats independent draws:

* h(Z|X) by Monte Carlo over the n inputs, mean_k sum_i log(sqrt(2 pi e) s |f(x_k)_i|) (the closed form
  given x, averaged over the inputs), against the true h(Z|X);
* I(X;Z) by the dropout mixture estimator (``gaussian_dropout_mi``, --draws noise draws per input),
  for n up to --mi-max-n (the pairwise cost grows as n^2), against the true value and log n: the
  lower (mixture) and upper (leave-one-out) estimates, which bracket the truth in expectation and
  close on it as n grows.

The sizes are nested: size n uses the first n inputs of each repeat's draw. The truth needs
--fdim <= --dim. Writes mc_convergence.json and mc_convergence.png into --out.
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
from estimator_validation.toy_problem import sample_conditional_entropy
from mi_estimators.dropout_MI import gaussian_dropout_mi
from utils.analysis.figure_layout import (
    PAGE_WIDTH,
    figure_legend,
    new_figure,
    styled,
    title_and_caption,
    unique_entries,
)
from utils.cli import int_arg

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before Keras is first imported

SCRIPT = "mc_convergence"
SIZES = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 150000)
DEFAULTS = {"n": 150000, "draws": 10, "repeats": 5, "mi_max_n": 10000}
QUICK = {"n": 2000, "draws": 2, "repeats": 3, "mi_max_n": 500}
LOWER = "--n, --mi-max-n, --draws or --fdim"
"""The flags that reduce the memory and time a run needs."""
MIN_N = 10
SERIES_NOTE = (
    "h_z_given_x: closed form averaged over the n inputs; mixture_h_z_given_x: the same quantity as "
    "returned by gaussian_dropout_mi (a cross-check of the noise convention); mixture_mi.stderr: rms "
    "Monte Carlo stderr of one repeat"
)


CAPTION = "Lines: means over repeats; bands: +-1 std over repeats (each repeat's sizes nested)."


@styled
def figure(doc: dict) -> plt.Figure:
    """h(Z|X) (left) and the mixture's lower and upper I(X;Z) (right) against n, from the result ``doc``."""
    truth, s = doc["truth"], doc["series"]
    fig = new_figure(PAGE_WIDTH, 3.4)
    left, right = fig.subplots(1, 2)
    common.band(left, s["h_z_given_x"]["n"], s["h_z_given_x"], "Monte Carlo h(Z|X)")
    left.axhline(truth["h_z_given_x"], color="black", lw=1.5, ls="--", label="true h(Z|X)")
    left.set_ylabel("h(Z|X) [nats]")
    mi = s["mixture_mi"]
    common.band(right, mi["n"], mi, "lower: mixture estimate of I(X;Z)")
    common.band(right, mi["n"], s["mixture_mi_upper"], "upper: leave-one-out estimate", color="C3")
    common.reference_lines(right, truth["mi"], None)
    right.plot(mi["n"], np.log(mi["n"]), color="grey", lw=1.5, ls=":", label="log n")
    right.set_ylabel("I(X;Z) [nats]")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("number of inputs n")
    title_and_caption(fig, common.title(doc["args"]), CAPTION)
    figure_legend(fig, *unique_entries([left, right]))
    return fig


def _memory(args) -> dict[str, float]:
    """Estimated peak memory (bytes) by part: the inputs (one draw each), the closed form's temporaries
    and the mixture estimate at the largest n."""
    n, fdim = args.n, args.fdim
    return {
        "interpreter": common.BASE_BYTES,
        "toy data": common.toy_bytes(n, args.dim, fdim, 1),
        "h(Z|X) temporaries": 3 * 8 * n * fdim,
        "estimator mixture": common.mixture_bytes(min(n, args.mi_max_n), fdim, args.draws),
    }


def _seconds(args) -> float:
    """Rough seconds of the run: per repeat, the toy data, the closed form at every size and the mixture
    estimate at every size up to --mi-max-n."""
    mi_sizes = common.size_grid(SIZES, min(args.n, args.mi_max_n))
    mixture = sum(run_time.mixture_seconds(m, args.fdim, args.draws) for m in mi_sizes)
    return args.repeats * (mixture + 1e-7 * args.n * (args.dim + args.fdim) * len(SIZES))


def _run(args, sizes: list[int], mi_sizes: list[int]) -> dict[str, np.ndarray]:
    """(repeats, sizes) arrays: the Monte Carlo h(Z|X) and the mixture's I(X;Z), its stderr and h(Z|X)."""
    out = {"h_z_given_x": np.empty((args.repeats, len(sizes)))}
    mixture_keys = ("mi", "mi_se", "up", "up_se", "mixture_h_z_given_x")
    out.update({key: np.empty((args.repeats, len(mi_sizes))) for key in mixture_keys})
    with report_progress(args.repeats * len(mi_sizes), SCRIPT, "mixture estimates") as bar:
        for rep, data, est_seed in common.toy_repeats(args, draws=1):
            out["h_z_given_x"][rep] = [sample_conditional_entropy(data.f[:m], args.noise_std) for m in sizes]
            for j, m in enumerate(mi_sizes):
                bar.set_postfix_str(f"n={m}")
                r = gaussian_dropout_mi(
                    data.f[:m],
                    noise_std=args.noise_std,
                    draws=args.draws,
                    seed=est_seed,
                    max_memory_mb=common.MIXTURE_MEMORY_MB,
                )
                out["mi"][rep, j], out["mi_se"][rep, j] = r.mi_xz, r.mi_xz_stderr
                out["mixture_h_z_given_x"][rep, j] = r.h_z_given_x
                out["up"][rep, j], out["up_se"][rep, j] = r.mi_xz_upper, r.mi_xz_upper_stderr
                bar.update()
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line with sizes, noise level and output folder resolved (CommandError for bad flags)."""
    parser = common.make_parser(
        SCRIPT, __doc__.split("\n\n")[0], defaults=DEFAULTS, quick=QUICK, n_help="largest number of inputs", min_n=MIN_N
    )
    parser.add_argument(
        "--mi-max-n",
        type=int_arg(MIN_N),
        default=None,
        help=common.size_help("largest n for the mixture estimate of I(X;Z)", "mi_max_n", DEFAULTS, QUICK),
    )
    return common.resolve(parser, parser.parse_args(argv), defaults=DEFAULTS, quick=QUICK, need_truth=True)


def _compute(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    sizes = common.size_grid(SIZES, args.n)
    mi_sizes = common.size_grid(SIZES, min(args.n, args.mi_max_n))
    r = _run(args, sizes, mi_sizes)
    series = {
        "h_z_given_x": common.series(sizes, r["h_z_given_x"]),
        "mixture_mi": common.series(mi_sizes, r["mi"], r["mi_se"]),
        "mixture_mi_upper": common.series(mi_sizes, r["up"], r["up_se"]),
        "mixture_h_z_given_x": common.series(mi_sizes, r["mixture_h_z_given_x"]),
    }
    series["mixture_mi"]["log_n"] = [math.log(m) for m in mi_sizes]
    estimates = {
        f"h_z_given_x_mc_n{sizes[-1]}": common.summarise(r["h_z_given_x"][:, -1]),
        f"mixture_n{mi_sizes[-1]}": common.summarise(r["mi"][:, -1], r["mi_se"][:, -1]),
        f"mixture_upper_n{mi_sizes[-1]}": common.summarise(r["up"][:, -1], r["up_se"][:, -1]),
    }
    doc = common.payload(SCRIPT, args, math.log(mi_sizes[-1]), estimates, series=series, series_note=SERIES_NOTE)
    doc["elapsed_s"] = round(time.perf_counter() - start, 2)
    common.print_series(
        sizes,
        {
            "h(Z|X) MC": series["h_z_given_x"],
            "I(X;Z) mixture": series["mixture_mi"],
            "I(X;Z) upper": series["mixture_mi_upper"],
        },
    )
    common.print_table(doc)
    return common.write_outputs(args.out, SCRIPT, doc, figure(doc))


main = common.script_main(SCRIPT, parse=parse_args, memory=_memory, seconds=_seconds, lower=LOWER, compute=_compute)


if __name__ == "__main__":
    sys.exit(main())
