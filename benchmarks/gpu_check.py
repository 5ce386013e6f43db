"""Device check: JAX training, and the mixture kernel's keras backend on 60,000 x 60,000 pairs.

Steps, each reported in one JSON line at the end (a failing step is reported and the rest go on; the
exit status is 1 when any step failed, with ``"ok": false`` and the failed steps in the JSON):

1. ``training`` (with ``--data-dir``): ``KERAS_BACKEND=jax python mi_mnist_dropout.py`` trains the
   ``fc`` net on Fashion-MNIST for ``--epochs`` epochs (exit code, seconds, test accuracy, the last
   lines of its output when it fails).
2. ``d32``, ``d128``: N softplus codes (``bench_estimators.representations``), one draw each of
   Gaussian dropout noise (std 0.5), every point against every component with the keras backend
   (on whatever accelerator Keras' backend sees), timed twice (the first call compiles), and a
   float64 spot check: ``--spot`` points evaluated directly in float64 differences, whose largest
   error must stay within the kernel's atol (1e-3 nats) and its reported bound.

    KERAS_BACKEND=jax python -m benchmarks.gpu_check [--quick] [--data-dir DIR] [--out DIR]

``--quick``: 3,000 codes and one training epoch on 2,000 inputs, for checking the script on a CPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_estimators import NOISE_STD, representations
from mi_estimators.checks import LOG_2PI
from mi_estimators.mixture import direct_log_density, prepare_mixture
from utils.cli import int_arg

ROOT = Path(__file__).resolve().parents[1]

ATOL = 1e-3


def train(data_dir: str, out: Path, epochs: int, subset: int, timeout: int) -> dict:
    """Train ``fc`` on Fashion-MNIST under KERAS_BACKEND=jax; exit code, seconds, accuracy or output tail."""
    run = out / "fmnist-fc-jax"
    cmd = [
        sys.executable,
        "mi_mnist_dropout.py",
        "--dataset",
        "fashion_mnist",
        "--data-dir",
        data_dir,
        "--net",
        "fc",
        "--dropout",
        "gaussian",
        "--p",
        "0.2",
        "--epochs",
        str(epochs),
        "--repr-subset",
        str(subset),
        "--save-every",
        "1",
        "--no-analyze",
        "--seed",
        "0",
        "--out",
        str(run),
    ]
    start = time.perf_counter()
    try:
        done = subprocess.run(
            cmd, cwd=ROOT, env=dict(os.environ, KERAS_BACKEND="jax"), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "seconds": round(time.perf_counter() - start, 1), "error": f"timed out after {timeout} s"}
    result = {
        "ok": done.returncode == 0,
        "returncode": done.returncode,
        "seconds": round(time.perf_counter() - start, 1),
        "command": " ".join(cmd[1:]),
    }
    history = run / "history.csv"
    if done.returncode == 0 and history.exists():
        with open(history) as fh:
            last = list(csv.DictReader(fh))[-1]
        result["last_epoch"] = {k: v for k, v in last.items() if "acc" in k or "loss" in k}
        result["representations"] = len(list((run / "representations").glob("*.npy")))
    elif done.returncode != 0:
        result["error"] = (done.stdout + done.stderr).strip().splitlines()[-12:]
    return result


def kernel_check(n: int, d: int, spot: int, max_memory_mb: float) -> dict:
    """Keras-backend kernel on n x n pairs at dimension d: timings, diagnostics, float64 spot check."""
    f = representations(n, d)
    rng = np.random.default_rng(d)
    eps = rng.standard_normal(f.shape)
    z = f * (1 + NOISE_STD * eps)
    s = NOISE_STD * f
    hint = (-np.log(s).sum(axis=1) - 0.5 * d * LOG_2PI - 0.5 * (eps**2).sum(axis=1))[:, None]
    mix = prepare_mixture(f, s)
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        out, info = mix.log_density(z, backend="keras", max_memory_mb=max_memory_mb, shift_hint=hint)
        seconds.append(time.perf_counter() - start)
    rows = rng.choice(n, size=min(spot, n), replace=False)
    start = time.perf_counter()
    err = float(np.abs(out[rows, 0] - direct_log_density(z[rows], f, s)).max())
    return {
        "pairs": n * n,
        "seconds_first": round(seconds[0], 3),
        "seconds": round(min(seconds), 3),
        "pairs_per_s": round(n * n / min(seconds), 1),
        "float64_rows": info["float64_rows"],
        "exact_pairs": info["exact_pairs"],
        "max_error_bound": info["max_error_bound"],
        "spot_points": len(rows),
        "spot_max_error": err,
        "spot_seconds": round(time.perf_counter() - start, 1),
        "spot_ok": bool(err <= min(ATOL, info["max_error_bound"] + 1e-9)),
    }


def environment() -> dict[str, str | list[str] | None]:
    """What this machine runs: Keras and its backend, JAX devices, Python."""
    env: dict[str, str | list[str] | None] = {
        "python": platform.python_version(),
        "keras_backend_env": os.environ.get("KERAS_BACKEND"),
    }
    try:
        import keras

        env.update(keras=keras.__version__, keras_backend=keras.backend.backend())
    except ImportError as err:
        env["keras"] = f"MISSING ({err})"
    try:
        import jax

        env.update(jax=jax.__version__, devices=[str(x) for x in jax.devices()])
    except Exception as err:  # a broken accelerator set-up is a finding to report, not a crash
        env["jax"] = f"unavailable ({err})"
    return env


def failed_steps(report: dict) -> list[str]:
    """The steps of ``report`` that failed: an ``ok`` or ``spot_ok`` that is false."""
    return [
        name
        for name, step in report.items()
        if isinstance(step, dict) and (step.get("ok") is False or step.get("spot_ok") is False)
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the check, print its JSON line; exit status 0, or 1 when a step failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3,000 codes, one epoch on 2,000 inputs (CPU check)")
    parser.add_argument("--data-dir", help="Fashion-MNIST idx files; the training step is skipped without it")
    parser.add_argument("--out", default="gpu_check_runs", help="folder for the training run (default: %(default)s)")
    parser.add_argument("--n", type=int_arg(), help="codes = components = points (default 60,000; quick 3,000)")
    parser.add_argument("--spot", type=int_arg(), default=300, help="points checked in float64 (default 300)")
    parser.add_argument("--epochs", type=int_arg(), help="training epochs (default 3; quick 1)")
    parser.add_argument("--max-memory-mb", type=float, default=16384, help="kernel working memory (default 16384)")
    args = parser.parse_args(argv)
    n = args.n or (3000 if args.quick else 60_000)
    report: dict[str, Any] = {"environment": environment()}
    if args.data_dir:
        report["training"] = train(
            args.data_dir,
            Path(args.out),
            args.epochs or (1 if args.quick else 3),
            2000 if args.quick else 10_000,
            120 if args.quick else 240,
        )
    for d in (32, 128):
        try:
            report[f"d{d}"] = kernel_check(n, d, args.spot, args.max_memory_mb)
        except Exception as err:  # report and go on to the next size
            report[f"d{d}"] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        print(f"d={d}: {json.dumps(report[f'd{d}'])}", file=sys.stderr, flush=True)
    failed = failed_steps(report)
    report.update(ok=not failed, failed=failed)
    print(json.dumps(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
