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
each point's own component out, against the kernel without the bracket (target <= 15%). All of these
run the dense kernel path alone (:func:`dense_only`).

The pruned path (:mod:`mi_estimators.mixture.prune`): "prune_speedup_10k" and "prune_speedup_60k" are
the dense-to-pruned time ratios of the estimator (1 draw per input, ``nested=False``) on the late real
codes, 10,000 of them and 60,000 made by tiling them (:func:`tiled`: six copies, each entry times
exp(0.1 e)); "prune_pairs_fraction_*" the fraction of point-component pairs computed, and
"prune_max_abs_diff" (also per size) the largest difference from the dense path, over the estimates and
every point's log p(z) (:func:`prune_compare`). ``--quick`` uses 4,096 and 12,288 inputs instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from benchmarks.machine import cpu_name
from estimator_validation.common import available_memory
from estimator_validation.run_time import announce, check_time, mixture_seconds
from mi_estimators import mixture
from mi_estimators.dropout_MI import gaussian_dropout_mi
from mi_estimators.mixture import prune as pruning
from mi_estimators.results import MIResult
from utils.cli import CommandError, OneLineParser, float_arg, int_arg, run_command

NOISE_STD = 0.5  # Gaussian dropout rate p = 0.2, the paper's setting
DATA = Path(__file__).resolve().parent / "data"
REAL = {"real_early": "fmnist_fc_train_epoch2.npy", "real_late": "fmnist_fc_train_epoch100.npy"}
PROG = "bench_estimators.py"
TILE_SEED, TILE_SPREAD = 5, 0.1


@contextlib.contextmanager
def dense_only() -> Iterator[None]:
    """The estimators on the dense kernel path alone (``prune="never"`` for every mixture they build):
    the dense ratios measure that path whatever the pilot would pick."""
    saved = pruning.MIN_COMPONENTS
    pruning.MIN_COMPONENTS = sys.maxsize
    try:
        yield
    finally:
        pruning.MIN_COMPONENTS = saved


def tiled(f: np.ndarray, n: int, seed: int = TILE_SEED) -> np.ndarray:
    """``n`` codes from copies of ``f``, each copy's entries multiplied by exp(0.1 e), e ~ N(0, 1): a
    stand-in for n real codes of the same epoch (only 10,000 are stored)."""
    rng = np.random.default_rng(seed)
    copies = -(-n // len(f))
    return np.concatenate([f * np.exp(TILE_SPREAD * rng.standard_normal(f.shape)) for _ in range(copies)])[:n]


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
    times: dict[str, list[float]] = {"estimator": [], "bare": [], "fused": []}
    problems = pair_problems(n, draws, labels)
    results: list[MIResult] = []

    def bare(fused: bool) -> None:
        for m, c in problems:
            bare_cost(m, c, d, args.max_memory_mb, fused=fused)

    jobs: dict[str, Callable[[], Any]] = {
        "estimator": lambda: results.append(
            gaussian_dropout_mi(
                f, NOISE_STD, labels, draws=draws, seed=0, nested=False, max_memory_mb=args.max_memory_mb
            )
        ),
        "bare": lambda: bare(False),
        "fused": lambda: bare(True),
    }
    with dense_only():
        for _ in range(args.repeats):
            for key, job in jobs.items():
                start = clock()
                job()
                times[key].append(clock() - start)
    result = results[-1]
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
    memory = 0.75 * args.max_memory_mb
    jobs = {
        "lower alone": lambda: mix.log_density(points, shift_hint=exact, max_memory_mb=memory, prune="never"),
        "bracket": lambda: mix.log_density(points, leave_out=own, max_memory_mb=memory, prune="never"),
    }
    times: dict[str, list[float]] = {key: [] for key in jobs}
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


def prune_compare(f: np.ndarray, args: argparse.Namespace, repeats: int) -> dict:
    """The estimator on codes ``f`` (1 draw per input, as a study runs it; ``nested=False``) with the
    kernel's pruned path (the pilot's choice) against the dense path alone, in ``repeats`` paired rounds:
    the median dense-to-pruned time ratio, the largest difference of the estimates (lower, upper), and,
    from one kernel call on the same kind of points, the fraction of pairs computed and the largest
    per-point difference of log p(z) from the dense path."""
    clock = time.process_time if args.threads == 1 else time.perf_counter
    n, d = f.shape
    times: dict[str, list[float]] = {"dense": [], "pruned": []}
    results: dict[str, MIResult] = {}
    for _ in range(repeats):
        for key in times:
            with dense_only() if key == "dense" else contextlib.nullcontext():
                start = clock()
                results[key] = gaussian_dropout_mi(
                    f, NOISE_STD, draws=1, seed=0, nested=False, max_memory_mb=args.max_memory_mb
                )
                times[key].append(clock() - start)
    speedup = paired_ratio(times["dense"], times["pruned"])
    diff = max(abs(getattr(results["dense"], k) - getattr(results["pruned"], k)) for k in ("mi_xz", "mi_xz_upper"))
    own = np.arange(n)
    points = f * (1 + NOISE_STD * np.random.default_rng(3).standard_normal(f.shape))
    mix = mixture.prepare_mixture(f, NOISE_STD * np.abs(f))
    memory = 0.75 * args.max_memory_mb
    pruned, info = mix.log_density(points, leave_out=own, max_memory_mb=memory)
    dense, _ = mix.log_density(points, leave_out=own, max_memory_mb=memory, prune="never")
    point_diff = float(np.abs(pruned - dense).max())
    runs = "; ".join(f"{key} " + ", ".join(f"{t:.2f}" for t in val) for key, val in times.items())
    print(
        f"{n} inputs x 1 draw, pruned ({info['path']} path, {info['pairs_fraction']:.2%} of the pairs) against "
        f"dense: {speedup:.2f} times faster (median over rounds; runs, s: {runs}); estimates differ by "
        f"{diff:.1e} nats, log p(z) by {point_diff:.1e} at most (bound {info['max_error_bound']:.1e})",
        flush=True,
    )
    return {
        "speedup": round(speedup, 2),
        "max_abs_diff": float(f"{max(diff, point_diff):.3g}"),
        "pairs_fraction": round(info["pairs_fraction"], 4),
    }


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


def prune_sizes(args: argparse.Namespace) -> tuple[int, int]:
    """Inputs of the two pruning problems (``prune_*_10k``, ``prune_*_60k``; smaller with ``--quick``)."""
    return (4096, 12_288) if args.quick else (10_000, 60_000)


def expected_seconds(args: argparse.Namespace) -> float:
    """Rough seconds: every problem timed ``--repeats`` times as the estimator, the bare and the fused cost
    (each about one unnested mixture estimate), and the pruning problems' dense runs."""
    n, r, r_real = sizes(args)
    problems = [(32, r), (128, r)] + [(32, r_real)] * (2 * len(REAL))
    dense = args.repeats * 3 * sum(mixture_seconds(n, d, draws, nested=False) for d, draws in problems)
    small, large = prune_sizes(args)
    pruning_runs = (args.repeats + 1) * mixture_seconds(small, 32, 1, nested=False)
    pruning_runs += (min(args.repeats, 3) + 1) * mixture_seconds(large, 32, 1, nested=False)
    return dense + 1.3 * pruning_runs


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
        late = np.load(DATA / REAL["real_late"]).astype(np.float64)
        for key, size in zip(("10k", "60k"), prune_sizes(args)):
            print(f"pruned, late codes, {size:,} inputs{'' if size <= len(late) else ' (tiled)'}: ", end="")
            codes = late[:size] if size <= len(late) else tiled(late, size)
            res = prune_compare(codes, args, args.repeats if size <= len(late) else min(args.repeats, 3))
            summary[f"prune_speedup_{key}"] = res["speedup"]
            summary[f"prune_pairs_fraction_{key}"] = res["pairs_fraction"]
            summary[f"prune_max_abs_diff_{key}"] = res["max_abs_diff"]
        summary["prune_max_abs_diff"] = max(summary["prune_max_abs_diff_10k"], summary["prune_max_abs_diff_60k"])
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
