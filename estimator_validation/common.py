"""Command line, result JSON, table and figure code shared by the three validation scripts.

Every script takes the same options (:func:`make_parser`), writes ``<out>/<script>.json`` and
``<out>/<script>.png`` and prints a short table. The JSON layout::

    {"script", "args", "truth": {"mi", "h_z", "h_z_given_x"} (nats, null where unknown),
     "truth_note", "log_n", "estimates": {name: {"value", "stderr", "std_over_repeats", "values"}},
     ...per-script entries such as "series": {name: {"n": [...], "mean": [...], "std": [...]}}}

``value`` is the mean over ``--repeats`` independent draws of the data, ``stderr`` the Monte Carlo
(or held-out) standard error of that mean where the estimator defines one, ``std_over_repeats`` the
sample standard deviation over the draws (null for one repeat), ``values`` the per-draw numbers.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib

if "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from estimator_validation.ground_truth import toy_truth  # noqa: E402
from estimator_validation.toy_problem import ToyData, child_seeds, make_toy  # noqa: E402
from utils.plotting import save_figure  # noqa: E402
from utils.run_folder import save_json  # noqa: E402

TRUTH_NOTE = (
    "truth is the population value for continuous X ~ N(0, I_dim) (numerical integration, "
    "estimator_validation/ground_truth.py). The dropout mixture estimator treats X as uniform over the "
    "N drawn inputs; its target I_N satisfies E[I_N] <= truth and I_N <= log N, and approaches truth "
    "from below as N grows. Where log N is below truth (e.g. dim 10, N = 1000), log N binds."
)
NOISE_HELP = ("variance v of the multiplicative noise D ~ N(1, v) (default 0.1); the estimators get its "
              "standard deviation sqrt(v) as noise_std")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (exit status 2, no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def size_help(text: str, key: str, defaults: dict[str, int], quick: dict[str, int]) -> str:
    return f"{text} (default {defaults[key]}; with --quick {quick[key]})"


def make_parser(script: str, description: str, *, defaults: dict[str, int], quick: dict[str, int],
                n_help: str) -> argparse.ArgumentParser:
    """Parser with the options common to the validation scripts; sizes left unset are filled by :func:`resolve`."""
    p = _Parser(prog=f"{script}.py", description=description)
    p.add_argument("--dim", type=int, default=1, help="dimension of the input X ~ N(0, I_dim) (default 1)")
    p.add_argument("--fdim", type=int, default=None,
                   help="dimension of f(x) (default --dim: the paper's setting f(x) = 2x + 0.5; otherwise "
                        "f(x) = 2Ax + 0.5 with a fixed matrix A of orthonormal rows or columns)")
    p.add_argument("--noise", type=float, default=0.1, help=NOISE_HELP)
    p.add_argument("--n", type=int, default=None, help=size_help(n_help, "n", defaults, quick))
    p.add_argument("--noise-samples", type=int, default=None,
                   help=size_help("noisy draws of Z per input", "noise_samples", defaults, quick))
    p.add_argument("--seed", type=int, default=0, help="seed of the first repeat (default 0)")
    p.add_argument("--repeats", type=int, default=None,
                   help=size_help("independent draws of the data, for the spread of the estimates", "repeats",
                                   defaults, quick))
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default results/<script>-dim<d>-fdim<f>-noise<v>-n<n>[-quick])")
    p.add_argument("--quick", action="store_true", help="small sizes: a run of seconds, for tests")
    return p


def resolve(parser: argparse.ArgumentParser, args: argparse.Namespace, *, defaults: dict[str, int],
            quick: dict[str, int], min_n: int) -> argparse.Namespace:
    """Fill unset sizes from ``defaults`` (or ``quick`` with --quick) and reject bad values (exit 2)."""
    for key, value in (quick if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.fdim is None:
        args.fdim = args.dim
    if args.dim < 1 or args.fdim < 1:
        parser.error(f"--dim and --fdim must be >= 1 (got {args.dim} and {args.fdim})")
    if not (math.isfinite(args.noise) and args.noise > 0):
        parser.error(f"--noise is a variance and must be > 0 (got {args.noise})")
    if args.n < min_n:
        parser.error(f"--n must be >= {min_n} for the estimators of this script (got {args.n})")
    if args.noise_samples < 1:
        parser.error(f"--noise-samples must be >= 1 (got {args.noise_samples})")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1 (got {args.repeats})")
    if args.out is None:
        args.out = Path("results") / (f"{parser.prog[:-3]}-dim{args.dim}-fdim{args.fdim}-noise{args.noise:g}-n{args.n}"
                                      + ("-quick" if args.quick else ""))
    return args


def run(main: Callable[[], int], prog: str) -> None:
    """Run ``main``; a ValueError (the estimators' bad-input error) becomes a one-line message, exit 2."""
    try:
        code = main()
    except ValueError as err:
        sys.stderr.write(f"{prog}: error: {err}\n")
        code = 2
    sys.exit(code)


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing or not finite (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def summarise(values: Sequence[float], stderrs: Sequence[float | None] | None = None) -> dict[str, Any]:
    """Mean over repeats, the standard error of that mean (sqrt(sum se^2) / R) and the spread."""
    vals = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    stderr = None
    if stderrs is not None and all(s is not None for s in stderrs):
        stderr = math.sqrt(float(np.sum(np.square(stderrs)))) / len(stderrs)
    spread = float(np.std(vals, ddof=1)) if vals.size > 1 else None
    return {"value": finite(vals.mean()), "stderr": finite(stderr), "std_over_repeats": finite(spread),
            "values": [finite(v) for v in vals]}


def series(n: Sequence[int], values: np.ndarray) -> dict[str, Any]:
    """``{"n", "mean", "std", "values"}`` of a (repeats, len(n)) array (std over repeats, null for one)."""
    values = np.asarray(values, dtype=np.float64)
    std = values.std(axis=0, ddof=1) if values.shape[0] > 1 else np.full(values.shape[1], np.nan)
    return {"n": [int(k) for k in n], "mean": [finite(v) for v in values.mean(axis=0)],
            "std": [finite(v) for v in std], "values": [[finite(v) for v in row] for row in values]}


def payload(script: str, args: argparse.Namespace, log_n: float, estimates: dict[str, Any],
            **extra: Any) -> dict[str, Any]:
    """The JSON document of a validation run (layout in the module docstring)."""
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return {"script": script, "args": arguments, "truth": toy_truth(args.dim, args.fdim, args.noise),
            "truth_note": TRUTH_NOTE, "log_n": log_n, "estimates": estimates, **extra}


def write_outputs(out_dir: Path, script: str, document: dict[str, Any], figure: plt.Figure) -> tuple[Path, Path]:
    """Write ``<script>.json`` (atomically) and ``<script>.png`` into ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{script}.json"
    save_json(json_path, document)
    (png_path,) = save_figure(figure, out_dir / script, ("png",), dpi=130, bbox_inches="tight")
    return json_path, png_path


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_table(document: dict[str, Any], names: Sequence[str] | None = None) -> None:
    """Print estimates (value, standard error, spread over repeats), the truth and log N."""
    estimates = document["estimates"]
    names = list(estimates) if names is None else names
    width = max(len(n) for n in [*names, "truth I(X;Z)"]) + 2
    print(f"{'estimate (nats)':<{width}}{'value':>10}{'stderr':>10}{'std/rep':>10}")
    for name in names:
        e = estimates[name]
        print(f"{name:<{width}}{_fmt(e['value']):>10}{_fmt(e['stderr']):>10}{_fmt(e['std_over_repeats']):>10}")
    truth = document["truth"]
    print(f"{'truth I(X;Z)':<{width}}{_fmt(truth['mi']):>10}   h(Z) {_fmt(truth['h_z'])}  "
          f"h(Z|X) {_fmt(truth['h_z_given_x'])}")
    print(f"{'log N':<{width}}{_fmt(document['log_n']):>10}")


def reference_lines(ax: plt.Axes, truth: float | None, log_n: float | None, *, truth_label: str = "true I(X;Z)") -> None:
    """Horizontal lines for the true value and the log N ceiling."""
    if truth is not None:
        ax.axhline(truth, color="black", lw=2, ls="--", label=truth_label)
    if log_n is not None:
        ax.axhline(log_n, color="grey", lw=1.5, ls=":", label="log N")


def band(ax: plt.Axes, x: Sequence[float], entry: dict[str, Any], label: str, **style: Any) -> None:
    """Plot a ``series`` entry: its mean with a +-1 std band over repeats where there is one."""
    mean = np.asarray([np.nan if v is None else v for v in entry["mean"]], dtype=np.float64)
    std = np.asarray([np.nan if v is None else v for v in entry["std"]], dtype=np.float64)
    (line,) = ax.plot(x, mean, marker="o", ms=3, label=label, **style)
    if np.isfinite(std).any():
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)


def title(args: argparse.Namespace) -> str:
    """Figure title naming the setting."""
    return (f"dim {args.dim}, fdim {args.fdim}, noise variance {args.noise:g}, N {args.n}, "
            f"{args.noise_samples} noise draws, {args.repeats} repeat(s)")


def print_series(n: Sequence[int], columns: dict[str, dict[str, Any]]) -> None:
    """Print ``series`` entries side by side: one row per sample size, mean +- std over repeats."""
    header = f"{'n':>8}" + "".join(f"{name:>24}" for name in columns)
    print(header)
    for i, k in enumerate(n):
        cells = []
        for entry in columns.values():
            idx = entry["n"].index(k) if k in entry["n"] else None
            if idx is None or entry["mean"][idx] is None:
                cells.append(f"{'':>24}")
            else:
                std = entry["std"][idx]
                cells.append(f"{entry['mean'][idx]:>14.4f}" + (f" +- {std:<6.4f}" if std is not None else " " * 10))
        print(f"{k:>8}" + "".join(cells))


def toy_repeats(args: argparse.Namespace, noise_samples: int | None = None) -> Iterator[tuple[int, ToyData, int]]:
    """``(repeat, toy data, estimator seed)`` for each of ``args.repeats`` repeats, seeded from ``args.seed``;
    ``noise_samples`` overrides ``args.noise_samples`` for the drawn Z."""
    for rep in range(args.repeats):
        data_seed, est_seed = child_seeds(args.seed + rep, 2)
        draws = args.noise_samples if noise_samples is None else noise_samples
        yield rep, make_toy(args.dim, args.fdim, args.n, args.noise, draws, seed=data_seed), est_seed


def size_grid(grid: Sequence[int], n: int) -> list[int]:
    """The sample sizes of ``grid`` below ``n``, then ``n`` itself (the largest size of a run)."""
    return [int(s) for s in grid if s < n] + [int(n)]
