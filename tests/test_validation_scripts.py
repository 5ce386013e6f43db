"""The three validation scripts in --quick mode, run as a user would (subprocess), checked through their JSON."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "estimator_validation"


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / f"{script}.py"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def _run_json(tmp_path_factory, script: str, *args: str) -> dict:
    out = tmp_path_factory.mktemp(script)
    proc = _run(script, "--quick", "--out", str(out), *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (out / f"{script}.png").stat().st_size > 0
    assert "truth I(X;Z)" in proc.stdout or "true h(Z)" in proc.stdout
    return json.loads((out / f"{script}.json").read_text())


@pytest.fixture(scope="module")
def known_mi(tmp_path_factory):
    # noise variance 0.4: the Gaussian bound is 0.1 nats above h(Z), well clear of its sampling error
    return _run_json(tmp_path_factory, "known_MI", "--dim", "1", "--noise", "0.4", "--noise-samples", "10")


def test_known_mi_json(known_mi):
    doc, est = known_mi, known_mi["estimates"]
    assert doc["script"] == "known_MI" and doc["args"]["noise"] == 0.4 and doc["args"]["fdim"] == 1
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
    # binning counts distinct bins of the N x noise-samples noisy samples
    log_samples = math.log(doc["args"]["n"] * doc["args"]["noise_samples"])
    assert doc["log_n_samples"] == pytest.approx(log_samples)
    binning = {k: v for k, v in est.items() if k.startswith("binning_")}
    assert len(binning) == 12
    assert all(0 <= v["value"] <= log_samples + 1e-9 for v in binning.values())
    assert all(len(v["value_range"]) == 2 for v in binning.values())
    # a grid that refines another (same start, width divided by an integer) cannot lower H(T_b)
    for chain in (["bins_2", "bins_10", "bins_20", "bins_100"], ["bins_5", "bins_50", "bins_100"],
                  ["size_0.5", "size_0.1"], ["size_0.2", "size_0.1", "size_0.001"]):
        values = [est[f"binning_{c}"]["value"] for c in chain]
        assert values == sorted(values), chain
    for family in ("gaussian", "logistic"):
        doe = est[f"doe_{family}"]
        assert doe["value"] <= truth["mi"] + 4 * doe["stderr"]
        assert doe["value"] > 0.5 * truth["mi"]  # trained, not stuck at the initial value 0
    for name in ("ksg", "edge"):
        assert math.isfinite(est[name]["value"]) and est[name]["stderr"] is None
    assert all(e["std_over_repeats"] is None and len(e["values"]) == 1 for e in est.values())


def test_known_mi_repeats_and_unknown_truth(tmp_path_factory):
    doc = _run_json(tmp_path_factory, "known_MI", "--dim", "1", "--fdim", "2", "--n", "60", "--repeats", "2")
    assert doc["truth"] == {"mi": None, "h_z": None, "h_z_given_x": None}
    assert "truth_finite_sample" not in doc
    mix = doc["estimates"]["mixture"]
    assert len(mix["values"]) == 2 and mix["std_over_repeats"] > 0
    assert mix["value"] == pytest.approx(sum(mix["values"]) / 2)


def test_mc_convergence_json(tmp_path_factory):
    doc = _run_json(tmp_path_factory, "mc_convergence", "--dim", "2")
    s, truth, reps = doc["series"], doc["truth"], doc["args"]["repeats"]
    assert truth["h_z_given_x"] == pytest.approx(2 * 0.35653891831235, abs=1e-9)
    hzx = s["h_z_given_x"]
    assert hzx["n"][0] == 10 and hzx["n"][-1] == doc["args"]["n"] and len(hzx["values"]) == reps
    # the MC mean of sum_i log|f_i| has sd 1.111 sqrt(dim / n) (1.111: sd of log|2x + 0.5|, x ~ N(0, 1))
    assert abs(hzx["mean"][-1] - truth["h_z_given_x"]) < 4 * 1.111 * math.sqrt(2 / (hzx["n"][-1] * reps))
    # the estimator's h(Z|X) is the same closed form: the noise convention (variance vs std) agrees
    mix_hzx = s["mixture_h_z_given_x"]
    for n, value in zip(mix_hzx["n"], mix_hzx["mean"]):
        assert value == pytest.approx(hzx["mean"][hzx["n"].index(n)], abs=1e-6)
    mi = s["mixture_mi"]
    assert mi["n"][-1] == doc["args"]["mi_max_n"]
    for n, value, se in zip(mi["n"], mi["mean"], mi["stderr"]):
        assert value <= math.log(n) + 4 * se


def test_upper_bound_check_json(tmp_path_factory):
    doc = _run_json(tmp_path_factory, "upper_bound_check", "--noise", "0.4")
    s, truth = doc["series"], doc["truth"]["h_z"]
    bound, mix = s["gaussian_upper_bound_h_z"], s["mixture_h_z"]
    assert bound["n"] == [10, 20, 50, 100, 200, 500, 1000] == doc["checks"]["n"]
    assert bound["mean"][-1] >= truth and doc["checks"]["bound_above_truth"][-1]
    assert doc["gaussian_bound_limit"] > truth
    # h of the mixture of n inputs is below h(Z) on average and close to it at n = 1000
    spread = mix["std"][-1] / math.sqrt(doc["args"]["repeats"])
    assert truth - 0.1 < mix["mean"][-1] < truth + 4 * spread + 4 * mix["stderr"][-1]


def _assert_usage_error(proc: subprocess.CompletedProcess, message: str, out: Path) -> None:
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr
    assert not any(out.iterdir())


@pytest.mark.parametrize("args,message", [
    (["--dim", "0"], "--dim"), (["--fdim", "0"], "--fdim"), (["--noise", "0"], "--noise"),
    (["--noise", "-0.1"], "--noise"), (["--n", "5"], "--n"), (["--repeats", "0"], "--repeats"),
    (["--dim", "x"], "--dim"), (["--mi-max-n", "3"], "--mi-max-n"),
])
def test_bad_input_exits_2_with_one_line(args, message, tmp_path):
    _assert_usage_error(_run("mc_convergence", "--quick", "--out", str(tmp_path), *args), message, tmp_path)


@pytest.mark.parametrize("script,args,message", [
    ("known_MI", ["--n", "19"], "--n must be >= 20"), ("known_MI", ["--noise", "-1"], "variance"),
    ("upper_bound_check", ["--noise-samples", "0"], "--noise-samples"),
])
def test_bad_input_other_scripts(script, args, message, tmp_path):
    _assert_usage_error(_run(script, "--quick", "--out", str(tmp_path), *args), message, tmp_path)
