"""Difference-of-Entropies estimator (McAllester & Stratos 2020) on problems with a known answer,
on the TensorFlow backend in-process and on JAX in a subprocess (the backend is fixed at import)."""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from estimator_validation import doe
from estimator_validation.doe import _cluster_stderr, doe_mi

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gaussian_channel():
    """X ~ N(0, 1), Z = X + N(0, 0.5^2): I = 1/2 log(1 + 1/0.25), h(Z) = 1/2 log(2 pi e 1.25), in nats."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 1))
    z = 3.0 * (x + 0.5 * rng.standard_normal((3000, 1))) + 7.0  # affine map: the MI is unchanged
    h_z = 0.5 * math.log(2 * math.pi * math.e * 1.25) + math.log(3.0)
    return x, z, 0.5 * math.log(5.0), h_z


def test_gaussian_doe_recovers_a_gaussian_channel(gaussian_channel):
    x, z, mi, h_z = gaussian_channel
    r = doe_mi(x, z, family="gaussian", seed=0)
    # both models are exact here, so only the held-out sampling error (and a little fitting error) remains
    assert abs(r.mi - mi) < 4 * r.mi_stderr + 0.02
    assert abs(r.h_z - h_z) < 4 * r.h_z_stderr + 0.02  # the Jacobian of the internal standardisation is added back
    assert r.params["n_test"] == 600 and r.params["epochs_run"] >= 1


def test_logistic_doe_is_close_below_for_gaussian_data(gaussian_channel):
    x, z, mi, _ = gaussian_channel
    r = doe_mi(x, z, family="logistic", seed=1)
    # a logistic conditional cannot match the Gaussian noise: its cross-entropy exceeds h(Z|X)
    assert mi - 0.15 < r.mi < mi + 4 * r.mi_stderr


def test_groups_stay_together_and_bad_input():
    rng = np.random.default_rng(2)
    x = np.repeat(rng.standard_normal((40, 1)), 5, axis=0)
    z = x * (1 + 0.3 * rng.standard_normal(x.shape))
    r = doe_mi(x, z, groups=np.repeat(np.arange(40), 5), epochs=3, seed=0)
    assert r.params["n_test"] % 5 == 0 and r.params["n_test"] == 40  # 8 whole inputs held out
    # deterministic for a seed, and a reused compiled model (the earlier fits' model, another learning
    # rate) gives exactly what a new one gives
    reused = doe_mi(x, z, groups=np.repeat(np.arange(40), 5), epochs=3, learning_rate=0.02, seed=0)
    doe._COMPILED.clear()
    new = doe_mi(x, z, groups=np.repeat(np.arange(40), 5), epochs=3, learning_rate=0.02, seed=0)
    assert new.mi == reused.mi and new.h_z == reused.h_z and new.mi != r.mi
    with pytest.raises(ValueError, match="family"):
        doe_mi(x, z, family="laplace")
    with pytest.raises(ValueError, match="groups"):
        doe_mi(x, z, groups=np.repeat(np.arange(3), 5))
    with pytest.raises(ValueError, match="more groups"):
        doe_mi(x[:15], z[:15], groups=np.repeat(np.arange(3), 5))
    with pytest.raises(ValueError, match="NaN"):
        doe_mi(np.full((20, 1), np.nan), z[:20])


def test_cluster_stderr_counts_groups_not_rows():
    values = np.random.default_rng(3).standard_normal(50)
    plain = values.std(ddof=1) / math.sqrt(50)
    assert _cluster_stderr(values, np.arange(50)) == pytest.approx(plain)
    # every value seen 4 times (4 noise draws of one input): still 50 independent pieces of evidence
    assert _cluster_stderr(np.repeat(values, 4), np.repeat(np.arange(50), 4)) == pytest.approx(plain)


JAX_RUN = """
import json, math, sys, keras, numpy as np
from estimator_validation.doe import doe_mi
rng = np.random.default_rng(4)
x = rng.standard_normal((2000, 1))
# one full batch per epoch at a larger step (JAX's per-call overhead makes small batches slow), and
# validation and test parts of one size (one compiled prediction instead of two)
r = doe_mi(x, x + 0.5 * rng.standard_normal((2000, 1)), family="gaussian", batch_size=2048, learning_rate=0.02,
           patience=5, val_fraction=0.2, seed=0)
print(json.dumps({"backend": keras.backend.backend(), "mi": r.mi, "stderr": r.mi_stderr, "params": r.params,
                  "tensorflow_imported": "tensorflow" in sys.modules}))
"""


def test_doe_runs_on_the_jax_backend():
    """Only keras and keras.ops in doe.py: on JAX (TensorFlow never imported) the estimate recovers
    I = 1/2 log 5 of a Gaussian channel."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed (pip install jax) so DoE cannot be run on the JAX backend")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", JAX_RUN], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["backend"] == r["params"]["backend"] == "jax" and not r["tensorflow_imported"]
    assert abs(r["mi"] - 0.5 * math.log(5.0)) < 4 * r["stderr"] + 0.02 and r["params"]["n_test"] == 400
