"""Command line, checks, result JSON, table and figure code shared by the four validation scripts.

Every script takes the same options (:func:`make_parser`), checks every flag, the output folder, the
memory it will need and its rough time before computing anything (:func:`resolve`, :func:`check_memory`,
:mod:`estimator_validation.run_time`, :func:`check_out_dir`), writes ``<out>/<script>.json`` and
``<out>/<script>.png`` and prints a short table. Bad input ends with one ``<script>.py: error: ...``
line and exit status 2 (:func:`run_main`). The JSON layout::

    {"script", "args" (noise_std and, for reference, noise_var and the dropout rate p), "truth": {"mi", "h_z",
     "h_z_given_x"} (nats, null where unknown), "truth_note", "log_n", "estimates": {name: {"value", "stderr",
     "std_over_repeats", "values"}}, ...per-script entries such as "series": {name: {"n", "mean", "std"}}}

``value`` is the mean over ``--repeats`` independent draws of the data, ``stderr`` the Monte Carlo
(or held-out) standard error of that mean where the estimator defines one, ``std_over_repeats`` the
sample standard deviation over the draws (null for one repeat), ``values`` the per-draw numbers.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray

from estimator_validation.ground_truth import toy_truth
from estimator_validation.run_time import announce, check_time
from estimator_validation.toy_problem import ToyData, child_seeds, make_toy
from mi_estimators.checks import gaussian_dropout_std
from utils.analysis.figure_layout import save_figure
from utils.cli import CommandError, OneLineParser, float_arg, int_arg, run_command
from utils.run_folder import save_json

TRUTH_NOTE = (
    "truth is the population value for continuous X ~ N(0, I_dim) (numerical integration, "
    "estimator_validation/ground_truth.py). The dropout mixture estimator treats X as uniform over the "
    "N drawn inputs; its target I_N satisfies E[I_N] <= truth and I_N <= log N, and approaches truth "
    "from below as N grows. Where log N is below truth (e.g. dim 10, N = 1000), log N binds."
)
NOISE_STD_DEFAULT = math.sqrt(0.1)
"""The paper's setting: D ~ N(1, 0.1), a noise variance of 0.1."""
NOISE_STD_RANGE = (1e-3, 1e2)
"""Noise standard deviations the scripts accept. Below 1e-3 the ground-truth quadrature nears its grid
limit (``ground_truth.min_noise_std``, 1.7e-4) and the mixture kernel leaves float32 (at 1e-6, 1000
toy inputs: all 5000 points exceed its rounding-error bound; an earlier kernel overflowed there);
above 1e2 nothing changes: the noise term dominates f(x), Z is nearly sigma f(X) eps and I(X;Z) has
reached its limit (0.42 nats per dimension at sigma = 10 or 1e3)."""
NOISE_FLAGS = {"noise_std": ("--noise-std", 1), "noise_var": ("--noise-var", 2), "noise": ("--noise", 2)}
"""Flag of each noise option and the power of the standard deviation it gives."""
GIB = 2.0**30
MEMINFO = Path("/proc/meminfo")
MIXTURE_MEMORY_MB = 256
"""Working-buffer bound passed to the mixture estimator (its ``max_memory_mb``)."""
BASE_BYTES = 300 * 2**20
"""Python, NumPy, SciPy, scikit-learn and matplotlib with a figure (measured: 160 MiB resident)."""
KERAS_BYTES = 1.0 * GIB
"""Keras with TensorFlow and a small DoE model (measured: 810 MiB resident after import)."""


def size_help(text: str, key: str, defaults: dict[str, int], quick: dict[str, int]) -> str:
    return f"{text} (default {defaults[key]}; with --quick {quick[key]})"


def make_parser(
    script: str, description: str, *, defaults: dict[str, int], quick: dict[str, int], n_help: str, min_n: int
) -> argparse.ArgumentParser:
    """Parser with the options common to the validation scripts; sizes left unset are filled by :func:`resolve`."""
    p = OneLineParser(prog=f"{script}.py", description=description)
    p.add_argument("--dim", type=int_arg(1), default=1, help="dimension of the input X ~ N(0, I_dim) (default 1)")
    p.add_argument(
        "--fdim",
        type=int_arg(1),
        default=None,
        help="dimension of f(x) (default --dim: the paper's setting f(x) = 2x + 0.5; otherwise "
        "f(x) = 2Ax + 0.5 with a fixed matrix A of orthonormal rows or columns)",
    )
    noise = p.add_mutually_exclusive_group()
    low, high = NOISE_STD_RANGE
    noise.add_argument(
        "--noise-std",
        type=float_arg(0.0, inclusive=False),
        default=None,
        help=f"standard deviation s of the multiplicative noise D ~ N(1, s^2), {low:g} to {high:g} "
        f"(default sqrt(0.1) = {NOISE_STD_DEFAULT:.4f}, the paper's variance 0.1)",
    )
    noise.add_argument(
        "--noise-var",
        type=float_arg(0.0, inclusive=False),
        default=None,
        help="the noise level as a variance s^2 instead",
    )
    noise.add_argument(
        "--noise",
        type=float_arg(0.0, inclusive=False),
        default=None,
        help="alias of --noise-var: the reference scripts' flag, a variance",
    )
    noise.add_argument(
        "--p",
        type=float_arg(0.0, inclusive=False, maximum=1.0),
        default=None,
        help="the noise level as the rate p of Gaussian dropout instead: s = sqrt(p / (1 - p))",
    )
    p.add_argument("--n", type=int_arg(min_n), default=None, help=size_help(n_help, "n", defaults, quick))
    p.add_argument(
        "--draws", type=int_arg(1), default=None, help=size_help("noisy draws of Z per input", "draws", defaults, quick)
    )
    p.add_argument("--seed", type=int_arg(0), default=0, help="seed of the first repeat (default 0)")
    p.add_argument(
        "--repeats",
        type=int_arg(1),
        default=None,
        help=size_help("independent draws of the data, for the spread of the estimates", "repeats", defaults, quick),
    )
    p.add_argument(
        "--out",
        type=_folder,
        default=None,
        help="output folder (default results/<script>-dim<d>-fdim<f>-noisestd<s>-n<n>[-quick])",
    )
    p.add_argument("--quick", action="store_true", help="small sizes: a run of seconds, for tests")
    return p


def _folder(text: str) -> Path:
    """argparse ``type=`` of ``--out``: a non-empty path (an empty one would silently mean here)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must name a folder, got {text!r}")
    return Path(text)


def resolve(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    *,
    defaults: dict[str, int],
    quick: dict[str, int],
    need_truth: bool = False,
) -> argparse.Namespace:
    """Fill unset sizes from ``defaults`` (or ``quick`` with --quick), the noise level as ``noise_std``
    (and ``noise_var``) and the output folder; :class:`CommandError` for a bad combination.

    ``need_truth``: the script compares against the ground truth, which needs ``fdim <= dim``.
    """
    for key, value in (quick if args.quick else defaults).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.fdim is None:
        args.fdim = args.dim
    if need_truth and args.fdim > args.dim:
        raise CommandError(
            f"--fdim {args.fdim} > --dim {args.dim}: the coordinates of Z are then dependent and "
            f"there is no ground truth, which {parser.prog} compares against (use --fdim <= --dim)"
        )
    args.noise_std, args.noise_var = _noise_level(args)
    args.p = gaussian_dropout_std(noise_std=args.noise_std)[1]  # the matching dropout rate, recorded beside them
    del args.noise
    if args.out is None:
        args.out = Path("results") / (
            f"{parser.prog[:-3]}-dim{args.dim}-fdim{args.fdim}-noisestd{args.noise_std:.4g}"
            f"-n{args.n}" + ("-quick" if args.quick else "")
        )
    return args


def _noise_level(args: argparse.Namespace) -> tuple[float, float]:
    """(standard deviation, variance) of the noise from whichever noise flag was given, within
    :data:`NOISE_STD_RANGE`."""
    if args.p is not None:
        if args.p >= 1:
            raise CommandError(f"--p {args.p:g} is not a dropout rate in (0, 1)")
        args.noise_std = gaussian_dropout_std(p=args.p)[0]
    given = [(key, getattr(args, key)) for key in NOISE_FLAGS if getattr(args, key) is not None]
    if not given:
        return NOISE_STD_DEFAULT, 0.1
    ((key, value),) = given
    flag, power = NOISE_FLAGS[key]
    low, high = NOISE_STD_RANGE
    if not low**power <= value <= high**power:
        what = "standard deviation" if power == 1 else "variance"
        raise CommandError(
            f"{flag} {value:g} is outside the supported noise {what} range {low**power:g} to "
            f"{high**power:g} (noise std {low:g} to {high:g}: below, the ground-truth quadrature "
            f"and the float32 mixture kernel lose accuracy; above, the estimates no longer change)"
        )
    return (value, value * value) if power == 1 else (math.sqrt(value), value)


def check_out_dir(out: Path, script: str) -> None:
    """Create ``out`` and check that ``<script>.json`` and ``<script>.png`` can be written there, before
    any computation.

    :class:`CommandError` naming ``--out`` when it is a file, when an output file's name in it is a
    folder, or when the folder cannot be created or written to (the probe file is removed).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out {out} is a file, not a folder")
    for name in _output_names(script):
        if (out / name).is_dir():
            raise CommandError(f"--out {out}: {out / name} is a folder; the output file cannot replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise CommandError(f"cannot write to --out {out}: {err.strerror or err}") from None


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation: MemAvailable of /proc/meminfo, else free pages
    (``os.sysconf``); None where neither is known."""
    try:
        with open(MEMINFO) as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(parts: dict[str, float], flags: str) -> None:
    """Refuse (:class:`CommandError`, with the figures and the ``flags`` that lower them) a run whose
    estimated peak memory, the sum of ``parts`` (bytes), exceeds what this machine has available."""
    need = float(sum(parts.values()))
    free = available_memory()
    if free is not None and need > free:
        largest = "; ".join(
            f"{name}: {size / GIB:.1f} GiB" for name, size in sorted(parts.items(), key=lambda kv: -kv[1])[:3]
        )
        raise CommandError(
            f"this run needs about {need / GIB:.1f} GiB of memory ({largest}) but "
            f"{free / GIB:.1f} GiB are available; lower {flags}"
        )


def toy_bytes(n: int, dim: int, fdim: int, draws: int) -> float:
    """Bytes of one draw of the toy data (x, f, z, index), of the temporaries that draw it and, when
    fdim != dim, of the projection matrix and its QR factorisation."""
    rows = n * draws
    return 8.0 * (n * (dim + fdim) + rows * (3 * fdim + 1) + (3 * dim * fdim if dim != fdim else 0))


def mixture_bytes(n: int, d: int, draws: int) -> float:
    """Bytes of ``gaussian_dropout_mi`` on n inputs: its working buffers plus copies of the (n, d)
    components and the per-draw terms (measured growth of the resident memory beyond the buffers: 4.9 kB
    per input at d = 64 with one draw, 0.9 kB at d = 8 with 16 draws)."""
    return MIXTURE_MEMORY_MB * 2**20 + 8.0 * n * (12 * d + 4 * draws + 8)


def gaussian_bound_bytes(rows: int, d: int) -> float:
    """Bytes of the Ledoit-Wolf Gaussian bound on ``rows`` noisy points of dimension d, the noise drawn
    inside (measured: 56 bytes per row at d = 1, 330 at d = 10), and of its d x d covariance, shrunk copy
    and log-determinant factorisation (80 GB at d = 100,000)."""
    return 8.0 * rows * (4 * d + 4) + 8.0 * 3 * d * d


def run_main(
    script: str,
    argv: Sequence[str] | None,
    *,
    parse: Callable[[Sequence[str] | None], argparse.Namespace],
    memory: Callable[[argparse.Namespace], dict[str, float]],
    seconds: Callable[[argparse.Namespace], float],
    lower: str,
    compute: Callable[[argparse.Namespace], int],
) -> int:
    """Run a script: ``parse(argv)``, then every check that needs no computation (the memory and the
    rough time, ``lower`` naming the flags that reduce them, and the output folder), then, having said
    the expected time of a long run, ``compute(args)``.

    Bad input (:class:`~mi_estimators.checks.InputError`, :class:`CommandError`) or a ``MemoryError``
    becomes one ``<script>.py: error: ...`` line on stderr and exit status 2, never a traceback; any
    other exception is a bug, reported with its traceback and exit status 1 (:func:`utils.cli.run_command`);
    ``--help`` returns 0."""

    def body() -> int:
        args = parse(argv)
        check_memory(memory(args), lower)
        expected = seconds(args)
        check_time(expected, f"{lower} or --repeats")
        check_out_dir(args.out, script)
        announce(f"{script}.py", expected)
        try:
            return compute(args)
        except MemoryError:
            raise CommandError(f"out of memory; lower {lower}") from None

    try:
        return run_command(f"{script}.py", body)
    except SystemExit as done:  # argparse's --help
        return int(done.code or 0)


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing or not finite (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def summarise(
    values: Sequence[float | None] | NDArray[np.floating],
    stderrs: Sequence[float | None] | NDArray[np.floating] | None = None,
) -> dict[str, Any]:
    """Mean over repeats, the standard error of that mean (sqrt(sum se^2) / R) and the spread."""
    vals = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    stderr = None
    known = [] if stderrs is None else [s for s in stderrs if s is not None]
    if stderrs is not None and len(known) == len(stderrs):  # every repeat reported its error
        stderr = math.sqrt(float(np.sum(np.square(known)))) / len(stderrs)
    spread = float(np.std(vals, ddof=1)) if vals.size > 1 else None
    return {
        "value": finite(vals.mean()),
        "stderr": finite(stderr),
        "std_over_repeats": finite(spread),
        "values": [finite(v) for v in vals],
    }


def series(n: Sequence[int], values: np.ndarray, stderrs: np.ndarray | None = None) -> dict[str, Any]:
    """``{"n", "mean", "std", "values"}`` of a (repeats, len(n)) array (std over repeats, null for one),
    with ``stderrs`` of the same shape also ``"stderr"``: the rms Monte Carlo stderr of one repeat."""
    values = np.asarray(values, dtype=np.float64)
    std = values.std(axis=0, ddof=1) if values.shape[0] > 1 else np.full(values.shape[1], np.nan)
    out = {
        "n": [int(k) for k in n],
        "mean": [finite(v) for v in values.mean(axis=0)],
        "std": [finite(v) for v in std],
        "values": [[finite(v) for v in row] for row in values],
    }
    if stderrs is not None:
        out["stderr"] = [finite(v) for v in np.sqrt((np.asarray(stderrs) ** 2).mean(axis=0))]
    return out


def payload(
    script: str, args: argparse.Namespace, log_n: float, estimates: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    """The JSON document of a validation run (layout in the module docstring)."""
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    return {
        "script": script,
        "args": arguments,
        "truth": toy_truth(args.dim, args.fdim, args.noise_std),
        "truth_note": TRUTH_NOTE,
        "log_n": log_n,
        "estimates": estimates,
        **extra,
    }


def _output_names(script: str) -> tuple[str, str]:
    return f"{script}.json", f"{script}.png"


def write_outputs(out_dir: Path, script: str, document: dict[str, Any], figure: plt.Figure) -> int:
    """Write ``<script>.json`` and ``<script>.png`` into ``out_dir`` (atomically), say so with the
    run's ``elapsed_s``, and return the exit status 0."""
    json_name, png_name = _output_names(script)
    json_path = Path(out_dir) / json_name
    save_json(json_path, document)
    # saved at its printed size: the figure functions keep everything inside the canvas
    (png_path,) = save_figure(figure, Path(out_dir) / Path(png_name).stem, ("png",))
    print(f"wrote {json_path} and {png_path} ({document['elapsed_s']:.1f} s)")
    return 0


class ScriptMain(Protocol):
    """A script's ``main``: the exit status of one run with the command line ``argv`` (None: sys.argv)."""

    def __call__(self, argv: Sequence[str] | None = None) -> int: ...


def script_main(
    script: str,
    *,
    parse: Callable[[Sequence[str] | None], argparse.Namespace],
    memory: Callable[[argparse.Namespace], dict[str, float]],
    seconds: Callable[[argparse.Namespace], float],
    lower: str,
    compute: Callable[[argparse.Namespace], int],
) -> ScriptMain:
    """A script's ``main(argv=None)``: :func:`run_main` with the script's parts."""

    def main(argv: Sequence[str] | None = None) -> int:
        return run_main(script, argv, parse=parse, memory=memory, seconds=seconds, lower=lower, compute=compute)

    main.__doc__ = f"Run {script}.py; exit status 0, or 2 with one ``{script}.py: error: ...`` line for bad input."
    return main


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
    print(
        f"{'truth I(X;Z)':<{width}}{_fmt(truth['mi']):>10}   h(Z) {_fmt(truth['h_z'])}  "
        f"h(Z|X) {_fmt(truth['h_z_given_x'])}"
    )
    print(f"{'log N':<{width}}{_fmt(document['log_n']):>10}")


def reference_lines(
    ax: plt.Axes, truth: float | None, log_n: float | None, *, truth_label: str = "true I(X;Z)"
) -> None:
    """Horizontal lines for the true value and the log N ceiling."""
    if truth is not None:
        ax.axhline(truth, color="black", lw=1.5, ls="--", label=truth_label)
    if log_n is not None:
        ax.axhline(log_n, color="grey", lw=1.2, ls=":", label="log N")


def band(ax: plt.Axes, x: Sequence[float], entry: dict[str, Any], label: str, **style: Any) -> None:
    """Plot a ``series`` entry: its mean with a +-1 std band over repeats where there is one."""
    mean = np.asarray([np.nan if v is None else v for v in entry["mean"]], dtype=np.float64)
    std = np.asarray([np.nan if v is None else v for v in entry["std"]], dtype=np.float64)
    (line,) = ax.plot(x, mean, marker="o", ms=3, label=label, **style)
    if np.isfinite(std).any():
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)


def title(settings: Mapping[str, Any]) -> str:
    """Figure title naming the setting (``settings``: a result's ``args``)."""
    return (
        f"dim {settings['dim']}, fdim {settings['fdim']}, noise std {settings['noise_std']:.4g} "
        f"(variance {settings['noise_var']:.4g}), N {settings['n']}, {settings['draws']} noise draws, "
        f"{settings['repeats']} repeat(s)"
    )


def print_series(n: Sequence[int], columns: dict[str, dict[str, Any]]) -> None:
    """Print ``series`` entries side by side: one row per number of inputs, mean +- std over repeats."""
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


def toy_repeats(args: argparse.Namespace, draws: int | None = None) -> Iterator[tuple[int, ToyData, int]]:
    """``(repeat, toy data, estimator seed)`` for each of ``args.repeats`` repeats, seeded from ``args.seed``;
    ``draws`` overrides ``args.draws`` for the drawn Z."""
    count = args.draws if draws is None else draws
    for rep in range(args.repeats):
        data_seed, est_seed = child_seeds(args.seed + rep, 2)
        yield rep, make_toy(args.dim, args.fdim, args.n, args.noise_std, count, seed=data_seed), est_seed


def size_grid(grid: Sequence[int], n: int) -> list[int]:
    """The numbers of inputs in ``grid`` below ``n``, then ``n`` itself (the largest size of a run)."""
    return [int(s) for s in grid if s < n] + [int(n)]
