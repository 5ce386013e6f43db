"""The mixture log-density kernel against a direct float64 evaluation.

The raw float32 expansion is wrong by up to whole nats on these problems (narrow components, see the
module docstring of mi_estimators.mixture; ``test_raw_float32_would_fail`` shows it), so agreement to
``atol`` shows that the exact hits, the error bound and the float64 fallback do their job; the bound
itself is checked point by point against the true error of the working-precision pass.
"""

import contextlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm

from mi_estimators import mixture
from mi_estimators.mixture import direct_log_density, mixture_log_density, numpy_backend, prepare_mixture
from mi_estimators.mixture.flush import flush_to_zero, flushes_to_zero
from mi_estimators.mixture.numpy_backend import NumpySegments

ATOL = 1e-3
DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data"


def direct(z, mu, s, groups=None):
    """The float64 reference (tested against scipy.stats in ``test_direct_reference``)."""
    return direct_log_density(z, mu, s, groups=groups)


def dropout_problem(rng, n, d, sigma, *, clusters=None, spread=0.02, m=200):
    """Softplus activations with multiplicative noise; ``clusters`` makes near-duplicate components."""
    if clusters is None:
        f = np.log1p(np.exp(2.0 * rng.standard_normal((n, d))))
        labels = rng.integers(0, 3, n)
    else:
        centres = np.log1p(np.exp(2.0 * rng.standard_normal((clusters, d))))
        labels = rng.integers(0, clusters, n)
        f = centres[labels] * (1 + spread * rng.standard_normal((n, d)))
    k = rng.integers(0, n, m)
    z = f[k] * (1 + sigma * rng.standard_normal((m, d)))
    return z, f, sigma * f, labels


def working_precision(mix, z, hint=None, memory=64):
    """The float32 pass alone (an atol no bound reaches): per-point values and error bounds."""
    out, info = mix.log_density(z, shift_hint=hint, max_memory_mb=memory, atol=1e300)
    assert info["float64_rows"] == 0
    return out, info["error_bound"]


def test_direct_reference():
    """direct_log_density against scipy.stats, point by point, with and without groups."""
    rng = np.random.default_rng(41)
    mu, s = rng.standard_normal((30, 3)), rng.uniform(0.05, 2.0, (30, 3))
    z = rng.standard_normal((7, 3))
    groups = np.arange(30) % 3
    logs = np.array([[norm.logpdf(zm, mu_j, s_j).sum() for mu_j, s_j in zip(mu, s)] for zm in z])
    assert np.allclose(direct_log_density(z, mu, s), logsumexp(logs, axis=1) - np.log(30), rtol=0, atol=1e-12)
    want = np.stack([logsumexp(logs[:, groups == g], axis=1) - np.log(10) for g in range(3)], axis=1)
    assert np.allclose(direct_log_density(z, mu, s, groups=groups), want, rtol=0, atol=1e-12)
    assert np.allclose(direct_log_density(z, mu, 0.7), direct_log_density(z, mu, np.full(mu.shape, 0.7)))


CASES = [
    (32, 0.01, None),
    (32, 0.05, 4),
    (128, 0.01, None),
    (128, 0.02, None),
    (128, 0.05, 4),
    (128, 0.5, 4),
    (64, 0.03, 2),
]


@pytest.mark.parametrize("d,sigma,clusters", CASES)
def test_narrow_components_match_float64(d, sigma, clusters):
    """The final answer is within atol; the working-precision bound holds point by point."""
    rng = np.random.default_rng(d + int(1000 * sigma))
    z, f, s, _ = dropout_problem(rng, 500, d, sigma, clusters=clusters)
    exact = direct(z, f, s)
    got = mixture_log_density(z, f, s)
    assert np.abs(got - exact).max() < ATOL
    approx, bound = working_precision(prepare_mixture(f, s), z)
    assert np.all(np.abs(approx[:, 0] - exact) <= bound)


def test_raw_float32_would_fail():
    """Without the exact hits and the fallback, float32 products are far off on these cases."""
    rng = np.random.default_rng(5)
    z, f, s, _ = dropout_problem(rng, 500, 128, 0.02)
    mix = prepare_mixture(f, s)
    b, _ = mix.terms(np.dtype(np.float32))
    zc = z - mix.centre
    a = np.hstack([zc**2, zc, np.ones((len(z), 1)), np.zeros((len(z), 1))]).astype(np.float32)
    raw = logsumexp((a @ b.T).astype(float), axis=1) + mix.ref - np.log(len(f))
    assert np.abs(raw - direct(z, f, s)).max() > 100 * ATOL


def test_error_bound_holds_and_fallback_is_used():
    """Where float32 is not accurate enough the bound says so, and the answer still matches."""
    rng = np.random.default_rng(7)
    z, f, s, _ = dropout_problem(rng, 400, 128, 0.05, clusters=3)
    exact = direct(z, f, s)
    mix = prepare_mixture(f, s)
    approx, bound = working_precision(mix, z)
    assert np.all(np.abs(approx[:, 0] - exact) <= bound)
    assert (bound > ATOL).any()
    out, info = mix.log_density(z)
    assert info["float64_rows"] > 0 and info["max_error_bound"] <= ATOL
    assert np.abs(out[:, 0] - exact).max() < ATOL


def real_problem(epoch):
    """Fashion-MNIST fc codes (benchmarks/data): a subset, sampled as the estimator does."""
    f = np.load(DATA / f"fmnist_fc_train_epoch{epoch}.npy").astype(np.float64)[:3000]
    labels = np.load(DATA / "fmnist_fc_train_labels.npy")[:3000]
    rng = np.random.default_rng(3)
    k = rng.choice(len(f), 250, replace=False)
    eps = rng.standard_normal((len(k), f.shape[1]))
    s = 0.5 * f
    own = -np.log(s[k]).sum(axis=1) - 0.5 * f.shape[1] * np.log(2 * np.pi) - 0.5 * (eps**2).sum(axis=1)
    return f[k] * (1 + 0.5 * eps), f, s, labels, k, own


@pytest.fixture(scope="module")
def real_early():
    return real_problem(2)


@pytest.mark.parametrize("epoch", [2, 100])
def test_real_codes_need_no_float64(epoch):
    """The float64 cliff of early epochs is gone: every bound is below atol in float32, and true."""
    z, f, s, labels, k, own = real_problem(epoch)
    exact = direct(z, f, s)
    out, info = prepare_mixture(f, s).log_density(z, shift_hint=own[:, None])
    assert info["float64_rows"] == 0 and info["max_error_bound"] <= ATOL
    assert np.abs(out[:, 0] - exact).max() < ATOL
    approx, bound = working_precision(prepare_mixture(f, s), z, own[:, None])
    assert np.all(np.abs(approx[:, 0] - exact) <= bound)


def test_real_early_codes_with_label_groups(real_early):
    z, f, s, labels, k, own = real_early
    mix = prepare_mixture(f, s, groups=labels)
    hint = np.full((len(z), mix.n_groups), np.nan)
    hint[np.arange(len(z)), labels[k]] = own
    out, info = mix.log_density(z, shift_hint=hint)
    assert np.abs(out - direct(z, f, s, labels)).max() < ATOL
    assert info["float64_rows"] <= 0.05 * len(z)


def test_own_group_pass_matches_the_grouped_one(real_early):
    """log p(z) of the whole mixture and log p(z | own group), without the per-group passes, each
    leaving out the component the point was drawn from (as the estimator calls it)."""
    z, f, s, labels, k, own = real_early
    mix = prepare_mixture(f, s, groups=labels)
    got, info = mix.log_density_own_group(z, labels[k], leave_out=k, max_memory_mb=1)
    assert got.shape == (len(z), 2) and info["max_error_bound"] <= ATOL
    assert np.abs(got[:, 0] - direct_log_density(z, f, s, leave_out=k)).max() < ATOL
    grouped = direct_log_density(z, f, s, groups=labels, leave_out=k)
    assert np.abs(got[:, 1] - grouped[np.arange(len(z)), labels[k]]).max() < ATOL
    with pytest.raises(ValueError, match="point_groups"):
        mix.log_density_own_group(z, np.full(len(z), 10))
    with pytest.raises(ValueError, match="leave_out"):
        mix.log_density_own_group(z, labels[k], leave_out=k[:5])


def test_component_order_does_not_decide_the_cost(real_early):
    """Components sorted by class (as many datasets come) need no float64 and give the same densities as
    the caller's order: the kernel streams them in its own fixed order. Without it a quarter of the
    points of these codes fell back to float64 in the whole mixture's pass of the I(Y;Z) call."""
    z, f, s, labels, k, _ = real_early
    by_class = np.argsort(labels, kind="stable")
    position = np.argsort(by_class)
    truth = direct_log_density(z, f, s, leave_out=k)
    plain, _ = prepare_mixture(f, s).log_density_own_group(z, np.zeros(len(z), dtype=int), leave_out=k)
    assert np.abs(plain - truth[:, None]).max() < ATOL  # one group: both columns are the whole mixture
    for order in (np.arange(len(f)), by_class):
        mix = prepare_mixture(f[order], s[order], groups=labels[order])
        got, info = mix.log_density_own_group(z, labels[k], leave_out=position[k] if order is by_class else k)
        assert info["float64_rows"] == 0
        assert np.abs(got[:, 0] - truth).max() < ATOL


@pytest.mark.parametrize("d,sigma,clusters", [(32, 0.05, None), (128, 0.5, 4), (16, 0.01, 2)])
def test_leave_one_out_matches_float64_where_subtraction_cannot(d, sigma, clusters):
    """The sum without the own component, accumulated without it, is within atol of the float64
    reference, also where the own component dominates by hundreds or thousands of nats: there the
    subtraction log(e^full - e^own) that it replaces has no correct digit left."""
    rng = np.random.default_rng(d)
    z, f, s, _ = dropout_problem(rng, 500, d, sigma, clusters=clusters, m=300)
    k = np.argmin(((z[:, None, :] - f[None]) ** 2 / s[None] ** 2).sum(axis=2), axis=1)
    loo, info = prepare_mixture(f, s).log_density(z, leave_out=k, max_memory_mb=0.2)
    exact = direct_log_density(z, f, s, leave_out=k)
    assert np.abs(loo[:, 0] - exact).max() < ATOL and info["max_error_bound"] <= ATOL
    full = direct_log_density(z, f, s)
    own = np.array([direct_log_density(z[i : i + 1], f[k[i] : k[i] + 1], s[k[i] : k[i] + 1])[0] for i in range(len(z))])
    with np.errstate(divide="ignore", invalid="ignore"):
        subtracted = np.log(np.exp(full - own) * len(f) - 1.0) + own - np.log(len(f) - 1)
    dominated = full - exact > 50
    assert dominated.sum() >= (2 if sigma <= 0.05 else 0)
    if dominated.any():
        assert not np.all(np.abs(subtracted - exact)[dominated] < ATOL)


def test_leave_out_edge_cases():
    """-1 leaves nothing out; a one-component group left out is empty (-inf, exactly)."""
    rng = np.random.default_rng(5)
    mu, z = rng.standard_normal((6, 3)), rng.standard_normal((4, 3))
    groups = np.array([0, 0, 1, 1, 1, 2])
    leave = np.array([-1, 5, 0, 3])
    got = mixture_log_density(z, mu, 0.7, groups=groups, leave_out=leave)
    want = direct_log_density(z, mu, 0.7, groups=groups, leave_out=leave)
    assert np.isneginf(got[1, 2]) and np.isneginf(want[1, 2])
    assert np.allclose(got, want, atol=ATOL, rtol=0)
    assert np.allclose(got[0], direct_log_density(z[:1], mu, 0.7, groups=groups)[0], atol=ATOL, rtol=0)
    for bad in (np.array([0, 1, 2]), np.array([0, 1, 2, 6]), np.array([0, -2, 1, 1]), np.array([0.5, 1, 2, 3])):
        with pytest.raises(ValueError, match="leave_out"):
            mixture_log_density(z, mu, 0.7, leave_out=bad)


def test_stds_too_small_for_float32_products_are_exact():
    """Softplus codes clipped at float32's smallest normal (1.2e-38) give 1/s^2 ~ 1e76: float32 product
    terms would overflow to inf and NaN; the kernel must notice and compute in float64."""
    rng = np.random.default_rng(11)
    f = np.exp(rng.normal(-3.0, 3.0, (600, 6)))
    f[rng.random(f.shape) < 0.02] = 1.2e-38
    z = f * (1.0 + 0.5 * rng.standard_normal(f.shape))
    out, info = prepare_mixture(f, 0.5 * f).log_density(z)
    np.testing.assert_allclose(out[:, 0], direct_log_density(z, f, 0.5 * f), atol=1e-3, rtol=0)
    assert info["float64_rows"] == len(z)


def test_huge_but_representable_precisions_stay_in_float32_and_exact():
    """Real softplus codes reach 2e-17 (1/s^2 ~ 1e35): float32 still holds the terms; products with far
    points overflow to -inf, i.e. a zero weight, which is right."""
    rng = np.random.default_rng(3)
    f = np.exp(rng.normal(0.0, 1.0, (300, 3)))
    f[:5, 0] = 3e-18
    z = f * (1.0 + 0.5 * rng.standard_normal(f.shape))
    z[:50, 0] = 1e3
    with np.errstate(over="ignore", invalid="ignore"):
        out, info = prepare_mixture(f, 0.5 * f).log_density(z)
    np.testing.assert_allclose(out[:, 0], direct_log_density(z, f, 0.5 * f), atol=1e-3, rtol=0)
    assert info["float64_rows"] < len(z)


def test_chunk_boundaries():
    """Ragged point and component chunks, several chunks in each direction."""
    rng = np.random.default_rng(11)
    z, f, s, _ = dropout_problem(rng, 700, 32, 0.05, m=301)
    rows, cols = mixture.chunk_plan(len(z), len(f), 2 * 32 + 2, 4, 32, 1, 0.05)
    assert rows < len(z) and cols < len(f) and len(f) % cols and len(z) % rows
    small = mixture_log_density(z, f, s, max_memory_mb=0.1)
    exact = direct(z, f, s)
    assert np.abs(small - exact).max() < ATOL
    assert np.abs(mixture_log_density(z, f, s) - exact).max() < ATOL


def test_groups_from_one_pass():
    rng = np.random.default_rng(13)
    z, f, s, labels = dropout_problem(rng, 600, 32, 0.1, clusters=3, spread=0.2)
    groups = rng.permutation(labels)  # groups interleaved, not contiguous
    got = mixture_log_density(z, f, s, groups=groups, max_memory_mb=0.1)
    exact = direct(z, f, s, groups)
    assert got.shape == (len(z), 3)
    assert np.abs(got - exact).max() < ATOL
    weights = np.log(np.bincount(groups) / len(groups))
    total = logsumexp(got + weights, axis=1)
    assert np.abs(total - mixture_log_density(z, f, s)).max() < ATOL


def test_far_groups_stay_finite_and_accurate():
    """A group far from the point has density e^-1000s: still computed, not underflowed to -inf."""
    rng = np.random.default_rng(17)
    f = np.concatenate([1 + 0.01 * rng.standard_normal((50, 4)), 3 + 0.01 * rng.standard_normal((50, 4))])
    groups = np.repeat([0, 1], 50)
    z = f[:10] * (1 + 0.02 * rng.standard_normal((10, 4)))
    got = mixture_log_density(z, f, 0.02 * f, groups=groups)
    exact = direct(z, f, 0.02 * f, groups)
    assert np.all(exact[:, 1] < -1000)
    assert np.abs(got - exact).max() < ATOL


def test_width_forms_agree():
    rng = np.random.default_rng(19)
    mu = rng.standard_normal((300, 6))
    z = rng.standard_normal((50, 6))
    per_comp = rng.uniform(0.2, 1.0, (300, 1))
    full = np.broadcast_to(per_comp, mu.shape)
    assert np.abs(mixture_log_density(z, mu, per_comp) - direct(z, mu, full)).max() < ATOL
    assert np.abs(mixture_log_density(z, mu, 0.3) - direct(z, mu, np.full(mu.shape, 0.3))).max() < ATOL


def test_float64_option():
    rng = np.random.default_rng(23)
    z, f, s, _ = dropout_problem(rng, 300, 16, 0.3)
    got, info = prepare_mixture(f, s).log_density(z, dtype="float64")
    assert np.abs(got[:, 0] - direct(z, f, s)).max() < 1e-9
    assert info["float64_rows"] == len(z)


def test_memory_plan_respects_budget():
    for m, n, d, budget in [(10**6, 10**6, 128, 256), (10**5, 50, 1000, 8), (5, 10**7, 32, 1)]:
        k = 2 * d + 2
        rows, cols = mixture.chunk_plan(m, n, k, 4, d, 1, budget)
        used = rows * (cols * 4 + k * 4 + 8 * (3 * d + 16))
        assert rows >= 1 and cols >= 1 and used <= budget * 2**20


def test_progress_bar_moves_within_a_block_of_points(monkeypatch):
    """The bar advances after every chunk of pairs (rows done, fractions included), not per row block."""
    updates = []

    class Bar:
        def __init__(self, total, **kwargs):
            self.total, self.n = total, 0.0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            self.n += n
            updates.append(self.n)

    monkeypatch.setattr(mixture.api, "tqdm", Bar)
    rng = np.random.default_rng(31)
    z, f, s, _ = dropout_problem(rng, 3000, 8, 0.3, m=40)
    mixture_log_density(z, f, s, max_memory_mb=0.05, progress=True)
    assert len(updates) >= 3 and updates[0] < len(z)
    assert updates[-1] == pytest.approx(len(z))


def test_keras_backend_matches_numpy():
    """Under the Keras backend of this process (TensorFlow here): same values, same bounds."""
    pytest.importorskip("keras", reason="the keras backend needs Keras")
    rng = np.random.default_rng(29)
    z, f, s, labels = dropout_problem(rng, 700, 32, 0.1, clusters=4, spread=0.05, m=150)
    exact = direct(z, f, s, labels)
    mix = prepare_mixture(f, s, groups=labels)
    for memory in (256, 0.1):
        got, info = mix.log_density(z, backend="keras", max_memory_mb=memory)
        assert np.abs(got - exact).max() < ATOL and info["max_error_bound"] <= ATOL
    # Working precision only (loose atol): the bound holds for the keras pass as well.
    got, info = mix.log_density(z, backend="keras", atol=1.0)
    ref, _ = mix.log_density(z, atol=1.0)
    assert info["float64_rows"] == 0
    assert np.abs(got - exact).max() <= info["max_error_bound"]
    assert np.abs(got - ref).max() <= 2 * info["max_error_bound"]
    # Leaving out each point's nearest component (the one that dominates its sum).
    near = np.argmin(((z[:, None, :] - f[None]) ** 2 / s[None] ** 2).sum(axis=2), axis=1)
    for memory in (256, 0.1):
        got, info = mix.log_density(z, backend="keras", leave_out=near, max_memory_mb=memory)
        assert np.abs(got - direct_log_density(z, f, s, groups=labels, leave_out=near)).max() < ATOL


def test_keras_backend_disables_reduced_precision_matmul():
    tf = pytest.importorskip("tensorflow")
    with mixture.full_precision_matmul("tensorflow"):
        assert not tf.config.experimental.tensor_float_32_execution_enabled()


_JAX_SCRIPT = """
import json, numpy as np, jax, keras
from mi_estimators.mixture import prepare_mixture, full_precision_matmul
rng = np.random.default_rng(37)
f = np.log1p(np.exp(2.0 * rng.standard_normal((400, 16))))
labels = rng.integers(0, 3, 400)
z = f[rng.integers(0, 400, 60)] * (1 + 0.1 * rng.standard_normal((60, 16)))
mix = prepare_mixture(f, 0.1 * f, groups=labels)
ref, _ = mix.log_density(z)
got, info = mix.log_density(z, backend="keras", max_memory_mb=0.05)
own = rng.integers(0, 400, 60)
loo_ref, _ = mix.log_density(z, leave_out=own)
loo, _ = mix.log_density(z, backend="keras", leave_out=own, max_memory_mb=0.05)
loose, info_loose = mix.log_density(z, backend="keras", atol=1.0)
with full_precision_matmul("jax"):
    precision = str(jax.config.jax_default_matmul_precision)
print(json.dumps({"backend": keras.backend.backend(), "diff": float(np.abs(got - ref).max()),
                  "loo_diff": float(np.abs(loo - loo_ref).max()),
                  "loose_diff": float(np.abs(loose - ref).max()), "loose_bound": info_loose["max_error_bound"],
                  "loose_f64": info_loose["float64_rows"], "precision": precision}))
"""


def test_keras_backend_under_jax_matches_numpy():
    """The same kernel with KERAS_BACKEND=jax (a subprocess: Keras fixes its backend at import)."""
    pytest.importorskip("jax", reason="JAX is not installed")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax" and result["precision"] == "highest"
    assert result["diff"] < 2 * ATOL and result["loo_diff"] < 2 * ATOL
    assert result["loose_f64"] == 0 and result["loose_diff"] <= result["loose_bound"] + ATOL


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"points": np.full((3, 2), np.nan)}, "NaN"),
        ({"means": np.array([[0.0, np.inf]])}, "NaN"),
        ({"points": np.zeros((3, 3))}, "features"),
        ({"stds": np.zeros((4, 2))}, "positive"),
        ({"stds": -1.0}, "positive"),
        ({"stds": np.ones((4, 3))}, "stds must be"),
        ({"stds": np.ones(4)}, "stds must be"),
        ({"groups": np.array([0, 1, 0])}, "entries"),
        ({"groups": np.array([0, -1, 0, 1])}, "negative"),
        ({"groups": np.array([0, 2, 0, 2])}, "empty"),
        ({"groups": np.array([0.5, 1, 0, 1])}, "integer"),
        ({"backend": "torch"}, "backend"),
        ({"backend": "tensorflow"}, "backend"),
        ({"dtype": "float16"}, "dtype"),
        ({"max_memory_mb": 0}, "max_memory_mb"),
        ({"atol": -1.0}, "atol"),
        ({"points": np.zeros((3, 2, 1))}, "2-D"),
        ({"stds": 1e-200}, "rescale"),
        ({"means": np.full((4, 2), 1e200)}, "rescale"),
        ({"stds": "0.5"}, "stds"),
        ({"leave_out": np.array([0, 1, 4])}, "leave_out"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"points": np.zeros((3, 2)), "means": np.zeros((4, 2)), "stds": np.ones((4, 2))}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        mixture_log_density(args.pop("points"), args.pop("means"), args.pop("stds"), **args)


@contextlib.contextmanager
def no_flush():
    yield False


def test_flush_to_zero_holds_within_its_block_only():
    """Subnormal float32 results are 0 inside the block (on x86-64 Linux with glibc: there the kernel
    needs it) and not after it, also when the block raises."""
    assert not flushes_to_zero()
    with pytest.raises(RuntimeError, match="inside"):
        with flush_to_zero() as on:
            assert on == flushes_to_zero()
            if sys.platform == "linux" and platform.machine() == "x86_64" and platform.libc_ver()[0] == "glibc":
                assert on
            raise RuntimeError("inside")
    assert not flushes_to_zero()
    assert float(np.float32(1.2e-38) / np.float32(2.0)) > 0.0


@pytest.mark.parametrize("flush", [True, False])
@pytest.mark.parametrize("d, sigma, raised", [(32, 0.5, True), (128, 0.01, False)])
def test_tiny_terms_within_the_bound(d, sigma, raised, flush, monkeypatch):
    """Terms below TINY give exps of 0 where the CPU flushes subnormal results (bound step 3); without
    that they are raised to TINY before the exp (no slow subnormal exps), only where gamma' max v_j <= 1.
    Very narrow components (d = 128, sigma = 0.01: most terms below TINY) keep them. All stay within
    the bound."""
    if flush:
        with flush_to_zero() as on:
            if not on:
                pytest.skip("this platform gives no flush-to-zero")
    else:
        monkeypatch.setattr(numpy_backend, "flush_to_zero", no_flush)
    rng = np.random.default_rng(d + int(1000 * sigma))  # (the narrow case of the test above)
    z, f, s, _ = dropout_problem(rng, 500, d, sigma)
    mix = prepare_mixture(f, s)
    b, v = mix.terms(np.dtype(np.float32))
    assert NumpySegments(b, v, 64, 512, mix.group_edges).raise_tiny == raised
    approx, bound = working_precision(mix, z)
    exact = direct(z, f, s)
    assert np.all(np.abs(approx[:, 0] - exact) <= bound)
    if raised:
        assert bound.max() < ATOL


@pytest.mark.parametrize("seed", [16, 31])
def test_points_beyond_float64_products_get_direct_values(seed):
    """LeNet-like codes clipped at float32's smallest normal (stds 6e-39): a point whose every other
    component lies 1e76 nats below used to get no finite log-density (the float64 products lost every
    digit: an error, as in a real MNIST run). It is now evaluated from float64 differences, with a
    bound that holds and a warning that it is far above atol."""
    rng = np.random.default_rng(seed)
    f = np.log1p(np.exp(3 * rng.standard_normal((72, 84))))
    f[rng.random(f.shape) < 0.3] = 0.0
    f = np.maximum(f, 1.2e-38)
    z = (f[0] * (1 + 0.5 * rng.standard_normal(84)))[None]
    with pytest.warns(RuntimeWarning, match="rounding-error bound above atol"):
        out, info = prepare_mixture(f, 0.5 * f).log_density(z, leave_out=np.array([0]))
    exact = direct_log_density(z, f, 0.5 * f, leave_out=np.array([0]))
    assert np.isfinite(out[0, 0]) and out[0, 0] < -1e70
    assert abs(out[0, 0] - exact[0]) <= info["error_bound"][0] < 1e-10 * abs(exact[0])
