"""Speed of the Gaussian dropout mixture estimator against the bare BLAS cost of the same work.

For N inputs x R noise draws (M = N R noisy points) against N components in d dimensions, the work per
(point, component) pair is two matrix products, z^2 . (1/s^2) and z . (mu/s^2), and one exp. The
*bare* cost does exactly that with the estimator's chunk sizes, on benign values: the two products
into two buffers and one exp pass. The estimator computes the two products as one stacked product
(inner dimension 2d + 2, which also folds in the constants and the running shift) and adds its
bookkeeping: the hits (pairs evaluated exactly), the sums, the error bound, any float64 redo, noise
and closed forms. Because the stacked product is itself cheaper than the two separate ones, a
stricter reference is also timed: the stacked product plus the exp ("fused"). Ratio = estimator
time / bare time (target <= 1.5); ``fused_ratio`` is estimator / fused. Each of ``--repeats`` rounds
times the three back to back in one process, and a ratio is the median over the rounds of that round's
ratio (:func:`paired_ratio`): on a shared host a slow spell slows both sides of a round alike, while
the fastest of each side taken separately can pair one lucky run with an ordinary one (full runs of
that kind spread by 0.2 in a ratio here). ``--threads 1`` runs everything on one thread and times CPU
seconds, which shared cores disturb less.

Problems: synthetic softplus codes at d = 32 and 128 (N = 10,000 x 6 draws), and the real
Fashion-MNIST ``fc`` codes of benchmarks/data (d = 32, N = 10,000 x 2 draws) after epoch 2 (early:
overlapping codes, many tiny units) and epoch 100 (late), without and with the labels as groups
(the information plane's call). The estimator runs with ``nested=False`` so that it evaluates
exactly the M x N pairs of the bare cost; with labels, the bare cost also does the 1/G more pairs of
each class's points against that class (:func:`pair_problems`).

    python benchmarks/bench_estimators.py [--quick] [--repeats 5] [--threads 1]

The expected time is said before a long run and a run of more than a day is refused (one ``error:``
line, exit status 2, like any bad flag).

The last line printed is JSON: {"d32_pairs_per_s", "d32_ratio", "d32_fused_ratio", "d128_...",
"real_early_ratio", "real_early_float64_fraction", "real_early_labels_ratio",
"real_early_labels_float64_fraction", "real_early_upper_cost", "real_late_..." (the same five),
"clock", "cpu"}: "cpu" names the CPU's model and its widest vector instruction set.
``*_upper_cost`` is the relative extra time of the upper (leave-one-out) estimate: the kernel leaving
each point's own component out, against the kernel without the bracket (target <= 15%).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.machine import cpu_name
from estimator_validation.common import available_memory
from estimator_validation.workload import announce, check_time, mixture_seconds
from mi_estimators import mixture
from mi_estimators.dropout_MI import gaussian_dropout_mi
from utils.cli import CommandError, OneLineParser, float_arg, int_arg, run_command

NOISE_STD = 0.5  # Gaussian dropout rate p = 0.2, the paper's setting
DATA = Path(__file__).resolve().parent / "data"
REAL = {"real_early": "fmnist_fc_train_epoch2.npy", "real_late": "fmnist_fc_train_epoch100.npy"}
PROG = "bench_estimators.py"


def representations(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Softplus units of a random linear layer on random inputs: correlated, positive, some near 0."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 64))
    w = rng.standard_normal((64, d)) / 4.0
    return np.logaddexp(0.0, x @ w)


def bare_cost(m: int, n: int, d: int, max_memory_mb: float, *, fused: bool) -> None:
    """The products and one exp over all M x N pairs, in the estimator's chunks.

    ``fused=False``: z^2 . (1/s^2) and z . (mu/s^2) as two products; ``fused=True``: one stacked product.
    """
    k = 2 * d + 2
    n_rows, n_cols = mixture.chunk_plan(m, n, k, 4, d, 1, 0.75 * max_memory_mb / 2)
    rng = np.random.default_rng(1)
    a = rng.uniform(-0.1, 0.1, (n_rows, k)).astype(np.float32)
    b = rng.uniform(-0.1, 0.1, (n, k)).astype(np.float32)
    parts = (
        [(a, b)]
        if fused
        else [
            (np.ascontiguousarray(a[:, :d]), np.ascontiguousarray(b[:, :d])),
            (np.ascontiguousarray(a[:, d : 2 * d]), np.ascontiguousarray(b[:, d : 2 * d])),
        ]
    )
    bufs = [np.empty(n_rows * n_cols, dtype=np.float32) for _ in parts]
    for r0 in range(0, m, n_rows):
        rows = min(n_rows, m - r0)
        for c0 in range(0, n, n_cols):
            cols = min(n_cols, n - c0)
            prods = [buf[: rows * cols].reshape(rows, cols) for buf in bufs]
            for (pa, pb), prod in zip(parts, prods):
                np.matmul(pa[:rows], pb[c0 : c0 + cols].T, out=prod)
            np.exp(prods[0], out=prods[0])


def pair_problems(n: int, draws: int, labels: np.ndarray | None) -> list[tuple[int, int]]:
    """(points, components) of the estimator's passes: every point against all N components and, with
    labels (I(Y;Z)), each class's points against that class's components, 1 + 1/G times the pairs
    (``Mixture.log_density_own_group``). The bare and fused costs do the same pairs."""
    own = [] if labels is None else [(draws * int(c), int(c)) for c in np.bincount(labels) if c]
    return [(n * draws, n)] + own


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """The median over rounds of numerator / denominator, timed in the same round."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def compare(f: np.ndarray, draws: int, labels: np.ndarray | None, args: argparse.Namespace) -> dict:
    """``args.repeats`` rounds of the estimator, the bare and the fused cost back to back; the median
    of each round's ratios (:func:`paired_ratio`)."""
    clock = time.process_time if args.threads == 1 else time.perf_counter
    n, d = f.shape
    times = {"estimator": [], "bare": [], "fused": []}
    problems = pair_problems(n, draws, labels)
    jobs = {
        "estimator": lambda: gaussian_dropout_mi(
            f, NOISE_STD, labels, draws=draws, seed=0, nested=False, max_memory_mb=args.max_memory_mb
        ),
        "bare": lambda: [bare_cost(m, c, d, args.max_memory_mb, fused=False) for m, c in problems],
        "fused": lambda: [bare_cost(m, c, d, args.max_memory_mb, fused=True) for m, c in problems],
    }
    for _ in range(args.repeats):
        for key, job in jobs.items():
            start = clock()
            out = job()
            times[key].append(clock() - start)
            if key == "estimator":
                result = out
    best = {key: min(val) for key, val in times.items()}
    ratio, fused = paired_ratio(times["estimator"], times["bare"]), paired_ratio(times["estimator"], times["fused"])
    pairs = sum(m * c for m, c in problems)
    runs = "; ".join(f"{key} " + ", ".join(f"{t:.2f}" for t in val) for key, val in times.items())
    f64 = result.params["kernel_float64_points"] / (n * draws)
    print(
        f"{n} inputs x {draws} draws = {pairs:.3g} pairs{'' if labels is None else ', label groups'}: "
        f"estimator {best['estimator']:.2f} s at best ({pairs / best['estimator']:.3g} pairs/s), bare two "
        f"products + exp {best['bare']:.2f} s, fused product + exp {best['fused']:.2f} s; ratio {ratio:.2f}, "
        f"fused ratio {fused:.2f} (medians over rounds; runs, s: {runs}); I(X;Z) = {result.mi_xz:.3f} +- "
        f"{result.mi_xz_stderr:.3f} nats (log N = {result.log_n:.3f}), float64 points {f64:.2%}",
        flush=True,
    )
    return {
        "pairs_per_s": round(pairs / best["estimator"], 1),
        "ratio": round(ratio, 3),
        "fused_ratio": round(fused, 3),
        "float64_fraction": round(f64, 4),
    }


def upper_cost(f: np.ndarray, draws: int, args: argparse.Namespace) -> float:
    """Extra time of the bracket: the kernel leaving each point's own component out (which gives the
    upper estimate, the lower one then adding that component back exactly) against the kernel summing
    every component from the own one's exact value as starting shift (the lower estimate alone), both
    on the same points, in ``args.repeats`` rounds; returns the relative extra cost (:func:`paired_ratio` - 1)."""
    clock = time.process_time if args.threads == 1 else time.perf_counter
    n, d = f.shape
    stds = NOISE_STD * f
    own = np.repeat(np.arange(n), draws)
    eps = np.random.default_rng(2).standard_normal((len(own), d))
    points = f[own] + stds[own] * eps
    exact = (-np.log(stds[own]).sum(axis=1) - 0.5 * d * np.log(2 * np.pi) - 0.5 * (eps**2).sum(axis=1))[:, None]
    mix = mixture.prepare_mixture(f, stds)
    jobs = {
        "lower alone": lambda: mix.log_density(points, shift_hint=exact, max_memory_mb=0.75 * args.max_memory_mb),
        "bracket": lambda: mix.log_density(points, leave_out=own, max_memory_mb=0.75 * args.max_memory_mb),
    }
    times = {key: [] for key in jobs}
    for _ in range(args.repeats):
        for key, job in jobs.items():
            start = clock()
            job()
            times[key].append(clock() - start)
    cost = paired_ratio(times["bracket"], times["lower alone"]) - 1.0
    print(
        f"  upper estimate: kernel {min(times['bracket']):.2f} s at best with the own component left out "
        f"against {min(times['lower alone']):.2f} s without: {cost:+.1%} (median over rounds)",
        flush=True,
    )
    return round(cost, 3)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (:class:`CommandError` for a bad flag)."""
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="2,000 inputs x 2 draws instead of 10,000 x 6 (synthetic) and x 2 (real)"
    )
    parser.add_argument(
        "--repeats",
        type=int_arg(),
        default=5,
        help="rounds, each timing every job once (ratios are medians over rounds; default 5)",
    )
    parser.add_argument(
        "--max-memory-mb",
        type=float_arg(1.0),
        default=256,
        help="working memory of the estimator and of the bare cost, MiB (default 256)",
    )
    parser.add_argument(
        "--threads", type=int_arg(), default=None, help="BLAS threads (default: all); 1 also switches to CPU time"
    )
    return parser.parse_args(argv)


def sizes(args: argparse.Namespace) -> tuple[int, int, int]:
    """Inputs, draws per input of the synthetic problems and draws per input of the real ones."""
    return (2000, 2, 2) if args.quick else (10_000, 6, 2)


def expected_seconds(args: argparse.Namespace) -> float:
    """Rough seconds: every problem timed ``--repeats`` times as the estimator, the bare and the fused cost
    (each about one unnested mixture estimate)."""
    n, r, r_real = sizes(args)
    problems = [(32, r), (128, r)] + [(32, r_real)] * (2 * len(REAL))
    return args.repeats * 3 * sum(mixture_seconds(n, d, draws, nested=False) for d, draws in problems)


def check_work(args: argparse.Namespace) -> float:
    """Refuse a run longer than a day or buffers beyond the available memory; the expected seconds."""
    free = available_memory()
    if free is not None and 2 * args.max_memory_mb * 2**20 > free:
        raise CommandError(
            f"--max-memory-mb {args.max_memory_mb:g}: the estimator and the bare cost use up to twice "
            f"that, more than the {free / 2**20:,.0f} MiB available"
        )
    seconds = expected_seconds(args)
    check_time(seconds, "--repeats or use --quick")
    return seconds


def benchmark(args: argparse.Namespace) -> dict:
    """Time every problem, print a line each and the JSON summary last; return the summary."""
    n, r, r_real = sizes(args)
    summary = {}
    with threadpool_limits(args.threads):
        for d in (32, 128):
            print(f"synthetic d={d}: ", end="")
            res = compare(representations(n, d), r, None, args)
            summary.update({f"d{d}_{key}": res[key] for key in ("pairs_per_s", "ratio", "fused_ratio")})
        labels = np.load(DATA / "fmnist_fc_train_labels.npy")[:n]
        for name, path in REAL.items():
            f = np.load(DATA / path).astype(np.float64)[:n]
            for suffix, groups in (("", None), ("_labels", labels)):
                print(f"{name}{suffix}: ", end="")
                res = compare(f, r_real, groups, args)
                summary[f"{name}{suffix}_ratio"] = res["ratio"]
                summary[f"{name}{suffix}_float64_fraction"] = res["float64_fraction"]
            summary[f"{name}_upper_cost"] = upper_cost(f, r_real, args)
    summary["clock"] = "cpu" if args.threads == 1 else "wall"
    summary["cpu"] = cpu_name()
    print(json.dumps(summary))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit status 0, or 2 with one ``error:`` line for a bad flag."""

    def body() -> int:
        args = parse_args(argv)
        announce(PROG, check_work(args))
        benchmark(args)
        return 0

    try:
        return run_command(PROG, body)
    except SystemExit as done:  # argparse's --help
        return int(done.code or 0)


if __name__ == "__main__":
    sys.exit(main())
