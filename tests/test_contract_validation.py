"""The command lines of the validation scripts and benchmarks, fuzzed with Hypothesis: every argument
list ends with exit status 0 and output, or exit status 2 and exactly one ``<script>.py: error:`` line
on stderr, never a traceback; work beyond the time limit is refused before it starts.

The scripts run in-process through their ``main(argv)``. The time limit is lowered to a few seconds
here, so that an accepted run is a quick one and a larger one exercises the refusal.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from estimator_validation import known_MI, mc_convergence, run_time, upper_bound_check

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"known_MI": known_MI, "mc_convergence": mc_convergence, "upper_bound_check": upper_bound_check}
SIZE_FLAGS = [
    "--dim",
    "--fdim",
    "--n",
    "--draws",
    "--repeats",
    "--seed",
    "--noise-std",
    "--noise-var",
    "--noise",
    "--mi-max-n",
]
PLAIN = st.sampled_from(["1", "2", "3", "20", "50", "0.3", "0.1"])
ODD = st.one_of(
    st.integers(-3, 40).map(str),
    st.sampled_from(["1e3", "10000000000", "2147483648", "nan", "inf", "-inf", "1e-9", "", " ", "abc", "0x10"]),
    st.text(max_size=3),
)
JUNK = st.one_of(st.sampled_from([*SIZE_FLAGS, "--quick", "--bogus", "-x"]), ODD)


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """Flag-value pairs (mostly plausible values, so that some runs are accepted), perhaps --quick, and
    sometimes loose tokens in between."""
    argv = ["--quick"] if draw(st.integers(0, 3)) else []
    for flag, value in draw(st.lists(st.tuples(st.sampled_from(SIZE_FLAGS), PLAIN | ODD), max_size=3)):
        argv += [flag, value]
    position = draw(st.integers(0, len(argv)))
    return argv[:position] + draw(st.lists(JUNK, max_size=2)) + argv[position:]


TIME_LIMIT = 2.0


def _load(name: str):
    """A module of benchmarks/ (not a package) by its path."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _run(main, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def assert_contract(prog: str, code: int, out: str, err: str) -> None:
    """Exit 0 with output, or exit 2 with exactly one ``<prog>: error:`` line; never a traceback."""
    assert "Traceback" not in err, err
    if code == 0:
        assert out.strip(), "exit 0 without output"
        return
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err


@pytest.fixture
def short_limit(monkeypatch):
    monkeypatch.setattr(run_time, "MAX_SECONDS", TIME_LIMIT)


@pytest.mark.parametrize("script", SCRIPTS)
@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(argv=command_lines())
def test_generated_command_lines(script, argv, short_limit):
    with tempfile.TemporaryDirectory() as out:
        code, stdout, stderr = _run(SCRIPTS[script].main, [*argv, "--out", out])
    assert_contract(f"{script}.py", code, stdout, stderr)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dim", "100000"], "GiB of memory"),  # the Gaussian bound's 100,000 x 100,000 covariance
        (["--dim", "100000", "--quick"], "228.0 GiB"),
        (["--repeats", "100000000"], "this run would take about"),
    ],
)
def test_known_mi_refuses_runaway_work(argv, message, tmp_path, monkeypatch):
    monkeypatch.setattr("estimator_validation.common.available_memory", lambda: 24 * 2**30)
    code, out, err = _run(known_MI.main, [*argv, "--out", str(tmp_path / "out")])
    assert_contract("known_MI.py", code, out, err)
    assert code == 2 and message in err and not (tmp_path / "out").exists()


def test_a_year_of_repeats_is_refused_with_its_hours(tmp_path):
    code, out, err = _run(upper_bound_check.main, ["--repeats", "100000000", "--out", str(tmp_path)])
    assert code == 2 and out == ""
    hours = float(err.split("about ")[1].split(" h")[0].replace(",", ""))
    assert hours > 1e5 and "lower --n, --draws or --fdim or --repeats" in err


def test_progress_is_one_line_per_unit_when_piped_and_a_long_run_says_its_time(tmp_path, monkeypatch):
    monkeypatch.setattr(run_time, "LONG_SECONDS", 0.0)
    code, out, err = _run(upper_bound_check.main, ["--quick", "--n", "50", "--repeats", "2", "--out", str(tmp_path)])
    lines = err.splitlines()
    assert code == 0 and lines[0].startswith("upper_bound_check.py: expected time about ")
    sizes = [10, 20, 50]
    assert [ln.split(" (")[0] for ln in lines[1:]] == [f"upper_bound_check: {k}/6 sizes" for k in range(1, 7)]
    assert [ln.split("(n=")[1].split(")")[0] for ln in lines[1:]] == [str(m) for m in sizes * 2]


def test_durations_read_as_words():
    assert [run_time.duration(s) for s in (40, 720, 12600, 7.2e6)] == ["40 s", "12 min", "3.5 h", "2,000 h"]
    assert run_time.mixture_seconds(1000, 1, 10) == pytest.approx(1e7 * (1e-8 + 5e-11))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--repeats", "100000000"], "this run would take about"),
        (["--max-memory-mb", "-3"], "argument --max-memory-mb: must be a finite number >= 1"),
        (["--max-memory-mb", "1e12"], "more than the"),
        (["--threads", "0"], "argument --threads"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_benchmark_refuses_before_timing(argv, message):
    code, out, err = _run(_load("bench_estimators").main, argv)
    assert_contract("bench_estimators.py", code, out, err)
    assert code == 2 and message in err and out == ""


def test_benchmark_bare_cost_does_the_estimators_pairs_with_labels_too():
    bench = _load("bench_estimators")
    assert bench.pair_problems(100, 2, None) == [(200, 100)]
    labels = np.repeat([0, 1, 3], [50, 30, 20])  # class 2 empty: no pass
    problems = bench.pair_problems(100, 2, labels)
    assert problems == [(200, 100), (100, 50), (60, 30), (40, 20)]
    assert sum(m * n for m, n in problems) == 200 * 100 + 2 * (50**2 + 30**2 + 20**2)  # 1.38 x M N


def test_gpu_check_names_its_failed_steps():
    gpu_check = _load("gpu_check")
    report = {
        "environment": {"python": "3"},
        "training": {"ok": True},
        "d32": {"ok": False, "error": "x"},
        "d128": {"spot_ok": False, "seconds": 1.0},
    }
    assert gpu_check.failed_steps(report) == ["d32", "d128"]
    assert gpu_check.failed_steps({"d32": {"spot_ok": True}, "environment": {}}) == []


def test_benchmark_ratio_is_the_median_of_paired_rounds():
    """One lucky run of the bare cost (0.70 s) would give 1.43 as the ratio of the fastest runs of each
    side; the rounds' own ratios are 1.25, 1.57 and 1.26, whose median is 1.26."""
    bench = _load("bench_estimators")
    assert bench.paired_ratio([1.0, 1.1, 1.2], [0.8, 0.7, 0.95]) == pytest.approx(1.2 / 0.95)
    with pytest.raises(ValueError):
        bench.paired_ratio([1.0, 1.1], [0.8])
