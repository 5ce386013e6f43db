"""The validation scripts: --quick runs checked through their JSON, and bad input.

The scripts run in-process through their ``main(argv)`` (a fresh interpreter would only add the
imports); one bad-input case per script runs as a real process, to check the command line as a user
meets it (exit status, one line on stderr, no traceback).
"""

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from estimator_validation import common, error_calibration, known_MI, mc_convergence, upper_bound_check
from utils.analysis.figure_layout import COLUMN_WIDTH, PAGE_WIDTH, layout_problems

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "known_MI": known_MI,
    "mc_convergence": mc_convergence,
    "upper_bound_check": upper_bound_check,
    "error_calibration": error_calibration,
}


def _run_json(tmp_path_factory, script: str, *args: str) -> dict:
    out = tmp_path_factory.mktemp(script)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = SCRIPTS[script].main(["--quick", "--out", str(out), *args])
    assert code == 0
    assert (out / f"{script}.png").stat().st_size > 0
    assert any(word in stdout.getvalue() for word in ("truth I(X;Z)", "true h(Z)", "within 2 / 3 errors"))
    return json.loads((out / f"{script}.json").read_text())


@pytest.fixture(scope="module")
def known_mi(tmp_path_factory):
    # noise variance 0.4 (the reference scripts' --noise): the Gaussian bound is 0.1 nats above h(Z),
    # well clear of its sampling error
    return _run_json(tmp_path_factory, "known_MI", "--dim", "1", "--noise", "0.4", "--draws", "10")


def test_known_mi_json(known_mi):
    doc, est = known_mi, known_mi["estimates"]
    assert doc["script"] == "known_MI" and doc["args"]["fdim"] == 1
    assert doc["args"]["noise_var"] == 0.4 and doc["args"]["noise_std"] == pytest.approx(math.sqrt(0.4))
    assert "noise" not in doc["args"]
    truth, exact = doc["truth"], doc["truth_finite_sample"]
    assert truth["mi"] == pytest.approx(truth["h_z"] - truth["h_z_given_x"])
    assert doc["log_n"] == pytest.approx(math.log(doc["args"]["n"]))
    assert exact["mi"] <= doc["log_n"]  # N = 300: log N = 5.7 does not bind on a truth of 1.1
    # the mixture estimates exactly I_N of the drawn inputs; its error is Monte Carlo only
    mix = est["mixture"]
    assert abs(mix["value"] - exact["mi"]) < 4 * mix["stderr"]
    assert abs(mix["value"] - truth["mi"]) < 0.25  # and I_N is within sampling error of the population value
    # the Gaussian bound holds for the mixture of the drawn inputs (same h(Z|X) subtracted)
    assert est["gaussian_upper_bound"]["value"] >= exact["mi"]
    # binning counts distinct bins of the N x draws noisy points
    log_points = math.log(doc["args"]["n"] * doc["args"]["draws"])
    assert doc["log_n_points"] == pytest.approx(log_points)
    binning = {k: v for k, v in est.items() if k.startswith("binning_")}
    assert len(binning) == 12
    assert all(0 <= v["value"] <= log_points + 1e-9 for v in binning.values())
    assert all(len(v["value_range"]) == 2 for v in binning.values())
    # a grid that refines another (same start, width divided by an integer) cannot lower H(T_b)
    for chain in (
        ["bins_2", "bins_10", "bins_20", "bins_100"],
        ["bins_5", "bins_50", "bins_100"],
        ["size_0.5", "size_0.1"],
        ["size_0.2", "size_0.1", "size_0.001"],
    ):
        values = [est[f"binning_{c}"]["value"] for c in chain]
        assert values == sorted(values), chain
    for family in ("gaussian", "logistic"):
        doe = est[f"doe_{family}"]
        assert doe["value"] <= truth["mi"] + 4 * doe["stderr"]
        assert doe["value"] > 0.5 * truth["mi"]  # trained, not stuck at the initial value 0
    for name in ("ksg", "edge"):
        assert math.isfinite(est[name]["value"]) and est[name]["stderr"] is None
    assert all(e["std_over_repeats"] is None and len(e["values"]) == 1 for e in est.values())


def test_known_mi_keeps_the_backends_native_start_up_messages_off_the_terminal(tmp_path):
    # a fresh process: TensorFlow writes its start-up lines (oneDNN, cuInit) before it reads its log level
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "estimator_validation" / "known_MI.py"),
            "--quick",
            "--n",
            "60",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert done.returncode == 0, done.stderr
    assert "doe_gaussian" in done.stdout
    native = [line for line in done.stderr.splitlines() if line.startswith(("I0000", "E0000", "W0000", "WARNING: All"))]
    assert not native, native


def test_known_mi_repeats_and_unknown_truth(tmp_path_factory):
    doc = _run_json(tmp_path_factory, "known_MI", "--dim", "1", "--fdim", "2", "--n", "60", "--repeats", "2")
    assert doc["truth"] == {"mi": None, "h_z": None, "h_z_given_x": None}
    assert "truth_finite_sample" not in doc
    assert doc["args"]["noise_std"] == pytest.approx(math.sqrt(0.1)) and doc["args"]["noise_var"] == 0.1
    mix = doc["estimates"]["mixture"]
    assert len(mix["values"]) == 2 and mix["std_over_repeats"] > 0
    assert mix["value"] == pytest.approx(sum(mix["values"]) / 2)
    _assert_page_layout(known_MI.figure(doc))  # no truth lines, bands and bars from the two repeats


@pytest.fixture(scope="module")
def mc_convergence_doc(tmp_path_factory):
    return _run_json(tmp_path_factory, "mc_convergence", "--dim", "2")


def test_mc_convergence_json(mc_convergence_doc):
    doc = mc_convergence_doc
    s, truth, reps = doc["series"], doc["truth"], doc["args"]["repeats"]
    assert truth["h_z_given_x"] == pytest.approx(2 * 0.35653891831235, abs=1e-9)
    h_z_given_x = s["h_z_given_x"]
    sizes = h_z_given_x["n"]
    assert sizes[0] == 10 and sizes[-1] == doc["args"]["n"] and len(h_z_given_x["values"]) == reps
    # the MC mean of sum_i log|f_i| has sd 1.111 sqrt(dim / n) (1.111: sd of log|2x + 0.5|, x ~ N(0, 1))
    assert abs(h_z_given_x["mean"][-1] - truth["h_z_given_x"]) < 4 * 1.111 * math.sqrt(2 / (sizes[-1] * reps))
    # the estimator's h(Z|X) is the same closed form: the noise convention (variance vs std) agrees
    mixture_h_z_given_x = s["mixture_h_z_given_x"]
    for n, value in zip(mixture_h_z_given_x["n"], mixture_h_z_given_x["mean"]):
        assert value == pytest.approx(h_z_given_x["mean"][sizes.index(n)], abs=1e-6)
    mi = s["mixture_mi"]
    assert mi["n"][-1] == doc["args"]["mi_max_n"]
    for n, value, se in zip(mi["n"], mi["mean"], mi["stderr"]):
        assert value <= math.log(n) + 4 * se


@pytest.fixture(scope="module")
def upper_bound_check_doc(tmp_path_factory):
    return _run_json(tmp_path_factory, "upper_bound_check", "--noise-std", str(math.sqrt(0.4)))


def test_upper_bound_check_json(upper_bound_check_doc):
    doc = upper_bound_check_doc
    s, truth = doc["series"], doc["truth"]["h_z"]
    assert doc["args"]["noise_var"] == pytest.approx(0.4)
    bound, mix = s["gaussian_upper_bound_h_z"], s["mixture_h_z"]
    assert bound["n"] == [10, 20, 50, 100, 200, 500, 1000] == doc["checks"]["n"]
    assert bound["mean"][-1] >= truth and doc["checks"]["bound_above_truth"][-1]
    assert doc["gaussian_bound_limit"] > truth
    # h of the mixture of n inputs is below h(Z) on average and close to it at n = 1000
    spread = mix["std"][-1] / math.sqrt(doc["args"]["repeats"])
    assert truth - 0.1 < mix["mean"][-1] < truth + 4 * spread + 4 * mix["stderr"][-1]


@pytest.fixture(scope="module")
def error_calibration_doc(tmp_path_factory):
    return _run_json(tmp_path_factory, "error_calibration", "--n", "400", "--repeats", "6")


def test_error_calibration_json(error_calibration_doc):
    doc = error_calibration_doc
    redrawn, fixed = doc["inputs_redrawn"], doc["inputs_fixed"]
    assert redrawn["target"] == pytest.approx(1.7908, abs=1e-4) and len(redrawn["values"]) == 6
    assert fixed["target"] == pytest.approx(doc["i_n"]["value"]) and doc["i_n"]["n"] == 400
    # six seeds cannot measure coverage finely, but a missing error term would show up as a large spread
    upper_redrawn, upper_fixed = doc["upper_inputs_redrawn"], doc["upper_inputs_fixed"]
    assert upper_fixed["target"] == pytest.approx(doc["i_n"]["upper"]) and doc["i_n"]["upper"] > doc["i_n"]["value"]
    for part in (redrawn, fixed, upper_redrawn, upper_fixed):
        assert part["within_3"] >= 4 / 6 and 0.3 < part["robust_spread_over_error"] < 3
    assert doc["truth_below_upper"] >= 5 / 6


def _assert_page_layout(fig) -> None:
    """Drawn at a journal's column or page width, with nothing cut, covered or squeezed."""
    assert fig.get_figwidth() in (COLUMN_WIDTH, PAGE_WIDTH)
    assert layout_problems(fig) == []
    assert fig.legends or fig.axes[0].get_title()  # a figure legend, or titled panels that need none
    plt.close(fig)


@pytest.mark.parametrize(
    "script, result",
    [
        ("known_MI", "known_mi"),
        ("mc_convergence", "mc_convergence_doc"),
        ("upper_bound_check", "upper_bound_check_doc"),
        ("error_calibration", "error_calibration_doc"),
    ],
)
def test_figure_layout(script, result, request):
    # the figure of a --quick result, as write_outputs saves it: fonts at print size, legend under the panels
    fig = SCRIPTS[script].figure(request.getfixturevalue(result))
    assert not any(ax.get_legend() for ax in fig.axes)  # one figure legend, never one over a panel's data
    _assert_page_layout(fig)


# -- bad input: one `<script>.py: error: ...` line naming the culprit, exit 2, nothing written --------


def _file(tmp_path: Path) -> Path:
    path = tmp_path / "a_file"
    path.write_text("keep me\n")
    return path


def _unwritable(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # root ignores permission bits; /proc refuses new folders to everyone
        return Path("/proc/no-such-folder/out")
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder / "out"


def _json_is_a_folder(tmp_path: Path) -> Path:
    (tmp_path / "holder" / "known_MI.json").mkdir(parents=True)
    return tmp_path / "holder"


OUT_CASES = {
    "file": (_file, "--out"),
    "file_parent": (lambda t: _file(t) / "sub", "--out"),
    "unwritable": (_unwritable, "--out"),
    "json_is_a_folder": (_json_is_a_folder, "known_MI.json"),
}

BAD = [
    ("known_MI", ["--n", "19"], "argument --n: must be an integer >= 20"),
    ("known_MI", ["--n", "1e3"], "argument --n: must be an integer"),
    ("known_MI", ["--n"], "argument --n: expected one argument"),
    ("known_MI", ["--noise", "-1"], "argument --noise:"),
    ("known_MI", ["--noise", "1e-12"], "--noise 1e-12 is outside the supported noise variance range"),
    ("known_MI", ["--noise-std", "1e3"], "--noise-std 1000 is outside the supported noise standard deviation"),
    ("known_MI", ["--noise-std", "nan"], "argument --noise-std:"),
    ("known_MI", ["--noise-std", "abc"], "argument --noise-std: must be a number"),
    ("known_MI", ["--noise-std", "0.3", "--noise-var", "0.1"], "--noise-var: not allowed with argument --noise-std"),
    ("known_MI", ["--noise", "0.1", "--noise-var", "0.1"], "--noise-var: not allowed with argument --noise"),
    ("known_MI", ["--p", "0.2", "--noise-std", "0.5"], "--noise-std: not allowed with argument --p"),
    ("known_MI", ["--p", "1"], "--p 1 is not a dropout rate in (0, 1)"),
    ("known_MI", ["--p", "0"], "argument --p: must be a finite number > 0"),
    ("known_MI", ["--seed", "-1"], "argument --seed: must be an integer >= 0"),
    ("known_MI", ["--seed", "1.5"], "argument --seed: must be an integer"),
    ("known_MI", ["--dim", "0"], "argument --dim: must be an integer >= 1"),
    ("known_MI", ["--dim", "x"], "argument --dim: must be an integer"),
    ("known_MI", ["--fdim", "-3"], "argument --fdim: must be an integer >= 1"),
    ("known_MI", ["--draws", "0"], "argument --draws: must be an integer >= 1"),
    ("known_MI", ["--repeats", "0"], "argument --repeats: must be an integer >= 1"),
    ("known_MI", ["--bogus"], "unrecognized arguments: --bogus"),
    ("known_MI", ["--out", ""], "argument --out: must name a folder"),
    ("known_MI", ["--n", "100000000"], "GiB of memory"),  # a run that would exhaust the memory
    ("known_MI", ["--n", str(10**12)], "lower --n, --draws, --dim or --fdim"),
    ("mc_convergence", ["--mi-max-n", "3"], "argument --mi-max-n: must be an integer >= 10"),
    ("mc_convergence", ["--fdim", "2"], "--fdim 2 > --dim 1"),
    ("mc_convergence", ["--noise-var", "0"], "argument --noise-var: must be a finite number > 0"),
    ("mc_convergence", ["--n", "5"], "argument --n: must be an integer >= 10"),
    ("mc_convergence", ["--repeats", "-1"], "argument --repeats"),
    ("mc_convergence", ["--n", str(10**11)], "GiB of memory"),
    ("upper_bound_check", ["--draws", "0"], "argument --draws"),
    ("upper_bound_check", ["--dim", "2", "--fdim", "3"], "--fdim 3 > --dim 2"),
    ("upper_bound_check", ["--noise-var", "1e5"], "--noise-var 100000 is outside"),
    ("upper_bound_check", ["--seed", "-1"], "argument --seed"),
    ("upper_bound_check", ["--n", "200000000", "--draws", "20"], "GiB of memory"),
    ("error_calibration", ["--fdim", "2"], "--fdim 2 > --dim 1"),
    ("error_calibration", ["--n", "10"], "argument --n: must be an integer >= 20"),
    ("error_calibration", ["--n", str(10**11)], "GiB of memory"),
]


def _assert_one_line(code: int, stderr: str, script: str, message: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert code == 2 and "Traceback" not in stderr
    assert len(lines) == 1 and lines[0].startswith(f"{script}.py: error: "), stderr
    assert message in lines[0], lines[0]


@pytest.fixture
def machine_24gib(monkeypatch):
    """A machine with 24 GiB available (this one's size), so that the memory cases do not depend on the host."""
    monkeypatch.setattr(common, "available_memory", lambda: 24 * 2**30)


@pytest.mark.parametrize("script,args,message", BAD)
def test_bad_flag_is_one_line_before_any_work(script, args, message, tmp_path, capsys, machine_24gib):
    out = tmp_path / "out"
    code = SCRIPTS[script].main(["--quick", "--out", str(out), *args])
    captured = capsys.readouterr()
    _assert_one_line(code, captured.err, script, message)
    assert captured.out == "" and not out.exists()  # refused before any computation or output


@pytest.mark.parametrize("case", OUT_CASES)
def test_bad_out_is_one_line_before_any_work(case, tmp_path, capsys):
    make, message = OUT_CASES[case]
    out = make(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = known_MI.main(["--quick", "--out", str(out)])
    captured = capsys.readouterr()
    _assert_one_line(code, captured.err, "known_MI", message)
    assert captured.out == "" and sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    if case == "file":
        assert out.read_text() == "keep me\n"


def test_memory_estimate_and_what_the_machine_has(monkeypatch, capsys, tmp_path):
    # the quick defaults need about 1.6 GiB (Keras included): refused, with the figures, on a 1 GiB machine
    need = sum(known_MI._memory(known_MI.parse_args(["--quick"])).values())
    assert 2**30 < need < 2 * 2**30
    monkeypatch.setattr(common, "available_memory", lambda: 2**30)
    code = known_MI.main(["--quick", "--out", str(tmp_path / "out")])
    _assert_one_line(code, capsys.readouterr().err, "known_MI", f"needs about {need / 2**30:.1f} GiB of memory")
    monkeypatch.undo()
    assert 0 < common.available_memory() < os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    monkeypatch.setattr(common, "MEMINFO", tmp_path / "no_meminfo")  # elsewhere: free pages
    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert common.available_memory() == pytest.approx(free, rel=0.2)


def test_help_lists_the_noise_flags(capsys):
    assert mc_convergence.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--noise-std" in text and "alias of --noise-var: the reference scripts' flag, a variance" in text


def test_noise_flags_name_one_quantity():
    """--noise-std s, --noise-var s^2, the reference alias --noise s^2 and the dropout rate --p p, with
    s = sqrt(p / (1 - p)), give the same noise level; every one records both s and p."""
    levels = [
        (a.noise_std, a.noise_var, a.p)
        for a in map(
            known_MI.parse_args, (["--noise-std", "0.5"], ["--noise-var", "0.25"], ["--noise", "0.25"], ["--p", "0.2"])
        )
    ]
    assert [(s, v) for s, v, _ in levels[:3]] == [(0.5, 0.25)] * 3
    assert all(s == pytest.approx(0.5) and p == pytest.approx(0.2) for s, _, p in levels)
    args = upper_bound_check.parse_args([])
    assert (args.noise_std, args.noise_var) == (math.sqrt(0.1), 0.1) and "noisestd0.3162" in str(args.out)
    assert not hasattr(args, "noise")


REAL = {
    "known_MI": (["--out", "README.md"], "--out README.md is a file"),
    "mc_convergence": (["--seed", "-1"], "argument --seed: must be an integer >= 0"),
    "upper_bound_check": (["--noise", "1e-12"], "--noise 1e-12 is outside"),
}


@pytest.fixture(scope="module")
def real_processes():
    """The three scripts started at once as real processes (their imports take seconds each)."""
    procs = {
        script: subprocess.Popen(
            [sys.executable, str(ROOT / "estimator_validation" / f"{script}.py"), *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for script, (args, _) in REAL.items()
    }
    yield procs
    for proc in procs.values():
        proc.kill()


@pytest.mark.parametrize("script", REAL)
def test_real_process_bad_input(script, real_processes):
    stdout, stderr = real_processes[script].communicate(timeout=120)
    _assert_one_line(real_processes[script].returncode, stderr, script, REAL[script][1])
    assert stdout == ""
