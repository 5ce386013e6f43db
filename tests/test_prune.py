"""The pruned path of the mixture kernel against the dense path and a direct float64 evaluation.

Every point must lie within its reported bound of the exact value (``direct_log_density``) and within
the two paths' bounds of the dense value, on real Fashion-MNIST codes (benchmarks/data, epochs 2 and
100), on codes built to defeat the pruning (all overlapping, heavy tails, mixed signs, information
dropout widths) and on generated problems; with and without a left-out component (the upper estimate)
and through the label groups of I(Y;Z). That the pruning really skips pairs is checked too: a path
that computed everything would pass the accuracy tests trivially.
"""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mi_estimators.checks import InputError
from mi_estimators.dropout_MI import gaussian_dropout_mi, information_dropout_mi
from mi_estimators.mixture import direct_log_density, mixture_log_density, prepare_mixture
from mi_estimators.mixture import prune as pruning

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data"
SIGMA = 0.5
LEAF_ROOM = 2 * pruning.LEAF
"""A set-aside entry's bound counts its block's members at its largest term: within LEAF times its mass,
with a factor 2 of room for the bound's rounding terms (e^(2 gamma'' |t| + c'), 1.02 on these codes)."""


def noisy(f: np.ndarray, stds: np.ndarray, seed: int, draws: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Points drawn from the components (``draws`` each) and the component each came from."""
    own = np.repeat(np.arange(len(f)), draws)
    z = f[own] + stds[own] * np.random.default_rng(seed).standard_normal((len(own), f.shape[1]))
    return z, own


def both(mix, z, **kwargs):
    """Pruned and dense values, bounds and the pruned diagnostics."""
    pruned, info = mix.log_density(z, prune="always", **kwargs)
    dense, dense_info = mix.log_density(z, prune="never", **kwargs)
    assert info["path"] == "pruned" and dense_info["path"] == "dense"
    return pruned[:, 0], info, dense[:, 0], dense_info


def assert_within(got, bound, exact):
    """Every point within its own bound of the exact value (plus the float64 reference's own rounding)."""
    err = np.abs(got - exact)
    slack = 1e-9 + 1e-13 * np.abs(exact)
    assert np.all(np.isfinite(bound)) and np.all(err <= bound + slack), (err - bound - slack).max()


@pytest.fixture(scope="module", params=[2, 100])
def real(request):
    f = np.load(DATA / f"fmnist_fc_train_epoch{request.param}.npy").astype(np.float64)[:4096]
    labels = np.load(DATA / "fmnist_fc_train_labels.npy")[:4096]
    return request.param, f, labels


@pytest.mark.parametrize("upper", [False, True])
def test_real_codes_within_the_bound_of_the_dense_path(real, upper):
    """Every point of 4,096 real codes x 1 draw within the two bounds of the dense path, and 300 of them
    within the pruned bound of the direct float64 value; most pairs skipped."""
    epoch, f, _ = real
    z, own = noisy(f, SIGMA * f, seed=epoch)
    leave = own if upper else None
    mix = prepare_mixture(f, SIGMA * f)
    got, info, dense, dense_info = both(mix, z, leave_out=leave)
    assert_within(got, info["error_bound"] + dense_info["error_bound"], dense)
    assert info["max_error_bound"] <= 1e-3 and info["dense_rows"] == 0
    assert info["pairs_fraction"] < 0.4  # (measured: 0.10-0.13 at epoch 2, 0.13-0.16 at epoch 100)
    some = np.arange(0, len(z), len(z) // 300)
    exact = direct_log_density(z[some], f, SIGMA * f, leave_out=None if leave is None else leave[some])
    assert_within(got[some], info["error_bound"][some], exact)


def test_real_codes_with_label_groups(real):
    """log p(z) and log p(z | own class) (the I(Y;Z) pass) match the dense path within the bounds."""
    _, f, labels = real
    z, own = noisy(f, SIGMA * f, seed=1)
    mix = prepare_mixture(f, SIGMA * f, groups=labels)
    # (each class holds about 410 components: with "always" they are pruned too)
    got, info = mix.log_density_own_group(z, labels[own], leave_out=own, prune="always")
    dense, dense_info = mix.log_density_own_group(z, labels[own], leave_out=own, prune="never")
    assert info["path"] == "pruned" and info["pairs_fraction"] < 0.5
    bound = (info["error_bound"] + dense_info["error_bound"])[:, None]
    assert np.all(np.abs(got - dense) <= bound)


def adversarial(kind: str, rng: np.random.Generator, n: int = 1024, d: int = 8):
    """Codes built to defeat the pruning: (means, stds)."""
    if kind == "overlapping":  # every component on top of every other
        f = 1.0 + 0.01 * rng.standard_normal((n, d))
        return f, np.full((n, d), 2.0)
    if kind == "heavy tails":  # codes over 10 decades, some tiny
        f = np.exp(3.0 * rng.standard_normal((n, d)))
        return f, SIGMA * f
    if kind == "mixed signs":  # Gaussian dropout codes of both signs
        f = rng.choice([-1.0, 1.0], (n, d)) * np.exp(rng.standard_normal((n, d)))
        return f, SIGMA * np.abs(f)
    if kind == "duplicates":  # exact copies: ties everywhere, the left-out one among its twins
        f = np.repeat(np.exp(rng.standard_normal((n // 4, d))), 4, axis=0)
        return f, SIGMA * f
    # information dropout: log-space means, learnt per-component widths from 0.001 to 0.7
    mu = np.log(np.logaddexp(0.0, 2.0 * rng.standard_normal((n, d))))
    return mu, 0.001 + 0.7 * rng.random((n, d))


@pytest.mark.parametrize("kind", ["overlapping", "heavy tails", "mixed signs", "duplicates", "information dropout"])
@pytest.mark.parametrize("upper", [False, True])
def test_adversarial_codes_within_the_bound(kind, upper):
    """Every point within its pruned bound of the direct float64 value, with far points too."""
    rng = np.random.default_rng(7)
    mu, s = adversarial(kind, rng)
    z, own = noisy(mu, s, seed=3)
    z, own = z[::4], own[::4]
    z[:8] *= 50.0  # (far outside every component)
    leave = own if upper else None
    got, info = prepare_mixture(mu, s).log_density(z, leave_out=leave, prune="always")
    exact = direct_log_density(z, mu, s, leave_out=leave)
    assert_within(got[:, 0], info["error_bound"], exact)
    assert info["max_error_bound"] <= 1e-3


def test_pilot_picks_the_dense_path_where_pruning_does_not_pay():
    """Overlapping codes (every pair within a few nats) keep the dense path under "auto"; late real codes
    at the minimum size are pruned, and the result is the same within the bounds."""
    rng = np.random.default_rng(2)
    mu, s = adversarial("overlapping", rng, n=pruning.MIN_COMPONENTS)
    z, own = noisy(mu, s, seed=4)
    out, info = prepare_mixture(mu, s).log_density(z[:500], leave_out=own[:500])
    assert info["path"] == "dense" and info["pilot_kept_fraction"] > 0.9 and info["prune_check"] == "overlap"
    f = np.load(DATA / "fmnist_fc_train_epoch100.npy").astype(np.float64)[: pruning.MIN_COMPONENTS]
    z, own = noisy(f, SIGMA * f, seed=5)
    mix = prepare_mixture(f, SIGMA * f)
    auto, info = mix.log_density(z, leave_out=own)
    dense, dense_info = mix.log_density(z, leave_out=own, prune="never")
    assert info["path"] == "pruned" and info["pilot_kept_fraction"] < 0.3 and info["prune_check"] == "pilot"
    assert np.all(np.abs(auto - dense)[:, 0] <= info["error_bound"] + dense_info["error_bound"])


def test_groups_that_keep_every_pair_go_dense_before_any_block_is_built():
    """Softplus codes of a random layer (the benchmark's synthetic problem): far apart (few pairs within
    87 nats, so the look passes) but spread over all 32 units, so that the groups' bounds keep nearly every
    pair. "auto" picks the dense path from the groups alone and builds no block; the numbers are the dense
    path's, bit for bit."""
    rng = np.random.default_rng(10)
    f = np.logaddexp(0.0, rng.standard_normal((pruning.MIN_COMPONENTS, 64)) @ rng.standard_normal((64, 32)) / 4.0)
    z, own = noisy(f, SIGMA * f, seed=12)
    mix = prepare_mixture(f, SIGMA * f)
    auto, info = mix.log_density(z, leave_out=own)
    assert info["path"] == "dense" and info["prune_check"] == "groups" and info["pilot_kept_fraction"] > 0.9
    assert "groups" in mix._terms and "blocks" not in mix._terms
    np.testing.assert_array_equal(auto, mix.log_density(z, leave_out=own, prune="never")[0])


def test_small_mixtures_and_other_backends_stay_dense():
    """Below MIN_COMPONENTS "auto" never prunes (the dense numbers stay bit-identical); "always" prunes
    from two blocks on; a bad option is one InputError."""
    rng = np.random.default_rng(3)
    f = np.exp(rng.standard_normal((300, 4)))
    z, own = noisy(f, SIGMA * f, seed=6)
    mix = prepare_mixture(f, SIGMA * f)
    auto, info = mix.log_density(z, leave_out=own)
    never, _ = mix.log_density(z, leave_out=own, prune="never")
    assert info["path"] == "dense" and info["pilot_kept_fraction"] is None and info["prune_check"] is None
    np.testing.assert_array_equal(auto, never)
    assert mix.log_density(z, prune="always")[1]["path"] == "pruned"
    tiny = prepare_mixture(f[:40], SIGMA * f[:40])
    assert tiny.log_density(z, prune="always")[1]["path"] == "dense"
    with pytest.raises(InputError, match="prune must be one of"):
        mixture_log_density(z, f, SIGMA * f, prune="sometimes")


def test_points_beyond_the_pruned_bound_go_dense(monkeypatch):
    """A point whose pruned bound exceeds atol is recomputed on the dense path (here: every point, by a
    bound forced to infinity), and the numbers are those of the dense path."""
    rng = np.random.default_rng(4)
    f = np.exp(rng.standard_normal((256, 4)))
    z, own = noisy(f, SIGMA * f, seed=8)
    mix = prepare_mixture(f, SIGMA * f)
    monkeypatch.setattr(pruning, "prune_bound", lambda total, *args: np.full(len(total), np.inf))
    got, info = mix.log_density(z, leave_out=own, prune="always")
    dense, _ = mix.log_density(z, leave_out=own, prune="never")
    assert info["path"] == "pruned" and info["dense_rows"] == len(z)
    np.testing.assert_array_equal(got, dense)


@pytest.mark.parametrize("drop", [200.0, 400.0])
def test_frames_raised_where_terms_exceed_the_reference(monkeypatch, drop):
    """References R lowered by ``drop`` nats in every other point (still valid: R <= log S, the skipped mass
    rescaled to match) start the sums in a frame where the kept exps would overflow float32: the frames
    rise (``_sums``) and every point stays within its bound of the direct value and of the true R's run."""
    f = np.load(DATA / "fmnist_fc_train_epoch100.npy").astype(np.float64)[:4096]
    z, own = noisy(f, SIGMA * f, seed=5)
    z, own = z[::8], own[::8]
    mix = prepare_mixture(f, SIGMA * f)
    plain, plain_info = mix.log_density(z, leave_out=own, prune="always")
    select = pruning.select

    def lowered(*args, **kwargs):
        sel = select(*args, **kwargs)
        low = np.arange(len(sel.ref)) % 2 == 0
        sel.ref[low] -= drop
        sel.skipped[low] *= np.exp(drop)
        return sel

    monkeypatch.setattr(pruning, "select", lowered)
    got, info = mix.log_density(z, leave_out=own, prune="always")
    assert info["path"] == "pruned" and info["dense_rows"] == 0 and info["max_error_bound"] <= 1e-3
    assert_within(got[:, 0], info["error_bound"], direct_log_density(z, f, SIGMA * f, leave_out=own))
    assert_within(got[:, 0], info["error_bound"] + plain_info["error_bound"], plain[:, 0])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(64, 400),
    d=st.integers(1, 6),
    log_spread=st.floats(0.0, 4.0),
    width=st.floats(0.01, 2.0),
    per_unit=st.booleans(),
    upper=st.booleans(),
    far=st.floats(1.0, 1e4),
    seed=st.integers(0, 2**16),
)
def test_generated_mixtures_within_the_bound(n, d, log_spread, width, per_unit, upper, far, seed):
    """Random mixtures (codes over up to 4 decades, one width per component or per unit, near and far
    points, left-out components): every point within its pruned bound of the direct float64 value."""
    rng = np.random.default_rng(seed)
    mu = rng.choice([-1.0, 1.0], (n, d)) * np.exp(log_spread * rng.standard_normal((n, d)))
    s = width * (np.abs(mu) if per_unit else np.exp(rng.standard_normal((n, 1))))
    z, own = noisy(mu, np.broadcast_to(s, mu.shape), seed=seed + 1)
    z = z[:: max(1, n // 60)]
    own = own[:: max(1, n // 60)]
    z[0] *= far
    leave = own if upper else None
    got, info = prepare_mixture(mu, s).log_density(z, leave_out=leave, prune="always")
    exact = direct_log_density(z, mu, s, leave_out=leave)
    assert_within(got[:, 0], info["error_bound"], exact)


def test_block_bounds_and_skipped_mass_hold(real):
    """Step 5 piece by piece on real codes: every block's bound is at least each member's exact term
    (and not vacuous: the block of a point's largest term is bounded a few tens of nats above it), and the
    exact mass of the blocks a point skips is below the skipped mass it reports."""
    _, f, _ = real
    z, own = noisy(f, SIGMA * f, seed=11)
    z, own = z[::64], own[::64]
    mix = prepare_mixture(f, SIGMA * f)
    blocks = mix.blocks()
    exact = mix.log_norm - 0.5 * (((z[:, None, :] - mix.means) ** 2) * mix.prec).sum(axis=2) - mix.ref
    exact = exact[:, blocks.order]  # (blocked order)
    exact[np.arange(len(z)), blocks.where[mix._sorted_leave_out(own, len(z))]] = -np.inf
    block_max = np.maximum.reduceat(exact, blocks.starts[:-1], axis=1)
    bounds = blocks.blocks.upper_bounds(z - mix.centre, mix.ref) - blocks.blocks.log_size
    assert np.all(bounds >= block_max)
    best = np.argmax(block_max, axis=1)
    slack = bounds[np.arange(len(z)), best] - block_max.max(axis=1)
    assert np.median(slack) < 100 and slack.max() < 1000  # (measured: medians 35 and 62, largest 208)
    left = pruning.LeftOut.of(blocks, blocks.where[mix._sorted_leave_out(own, len(z))])
    sel = pruning.select(blocks, mix, z, pruning._design(z, mix.prec.shape[1]), left, 2.5e-4, 16)
    kept = np.zeros(block_max.shape, dtype=bool)
    ids = np.repeat(np.arange(blocks.n_blocks), np.diff(sel.block_starts))
    kept[sel.rows, ids] = True
    mass = np.where(kept, 0.0, np.exp(np.minimum(block_max - sel.ref[:, None], 0.0)) * np.diff(blocks.starts))
    mass = mass.sum(axis=1)
    assert np.all(mass <= sel.skipped) and np.all(sel.skipped <= 2.5e-4)
    assert np.all(sel.ref <= block_max.max(axis=1) + 1e-6) and kept.mean() < 0.4  # (R: a float64 product)


@pytest.mark.parametrize("near", [pruning.NEAR, -70.0])
def test_screened_entries_within_their_bound(real, monkeypatch, near):
    """The float32 screen: the exact mass of every kept (point, block) entry, summed from float64
    differences, lies between the path's float64 sum and that sum plus the bound of what the screen set
    aside (step 5 (c)); with the default NEAR the screen sets most entries aside and computes the rest
    again, with NEAR = -70 it sets every entry aside and the bound alone must hold the whole mass."""
    monkeypatch.setattr(pruning, "NEAR", near)
    _, f, _ = real
    z, own = noisy(f, SIGMA * f, seed=12)
    z, own = z[::16], own[::16]
    mix = prepare_mixture(f, SIGMA * f)
    blocks = mix.blocks()
    left = pruning.LeftOut.of(blocks, blocks.where[mix._sorted_leave_out(own, len(z))])
    a = pruning._design(z, mix.prec.shape[1])
    sel = pruning.select(blocks, mix, z, a, left, 2.5e-4, 64)
    a[:, -1] = -(sel.ref + pruning.FRAME_LIFT)
    total, far, _, _, pairs = pruning._sums(blocks, sel, a, left)
    exact = mix.log_norm - 0.5 * (((z[:, None, :] - mix.means) ** 2) * mix.prec).sum(axis=2) - mix.ref
    exact = exact[:, blocks.order] + a[:, -1:]  # (blocked order, units e^F of the final frames)
    exact[np.arange(len(z)), left.left] = -np.inf
    kept = np.zeros(exact.shape, dtype=bool)
    for b in range(blocks.n_blocks):
        rows = sel.rows[sel.block_starts[b] : sel.block_starts[b + 1]]
        kept[np.ix_(rows, np.arange(blocks.starts[b], blocks.starts[b + 1]))] = True
    mass = np.where(kept, np.exp(exact), 0.0).sum(axis=1)
    slack = 1e-5 * total  # (the float32 exps and sums of the computed entries, step 5 (d))
    assert np.all(mass >= total - slack) and np.all(mass <= total + far + slack)
    if near > 0:
        assert np.all(far <= 1e-6 * total) and far.max() > 0
        assert pairs < 1.5 * kept.sum()  # (every kept pair screened, fewer than half again)
    else:
        aside = total == 0  # (all but the few points with a term more than 10 nats above F = R + 60)
        assert aside.mean() > 0.9 and np.all(far[aside] <= LEAF_ROOM * mass[aside])


def test_estimators_match_the_dense_path(monkeypatch):
    """gaussian_dropout_mi with labels (lower, upper, I(Y;Z)) and information_dropout_mi on 4,096 late
    codes under prune="auto" and "never": the estimates equal the dense ones within the bound (1e-3 nats per
    point, so the means within 1e-3), and each result says which path ran and what share of the pairs it
    computed. (Information dropout's log-space kernels with these widths overlap more: its pilot may pick
    either path; ``test_adversarial_codes_within_the_bound`` prunes it.)"""
    f = np.load(DATA / "fmnist_fc_train_epoch100.npy").astype(np.float64)[: pruning.MIN_COMPONENTS]
    labels = np.load(DATA / "fmnist_fc_train_labels.npy")[: pruning.MIN_COMPONENTS]
    alphas = 0.05 + 0.3 * np.random.default_rng(9).random(f.shape)
    calls = []
    evaluate = pruning.evaluate
    monkeypatch.setattr(pruning, "evaluate", lambda *args: calls.append(1) or evaluate(*args))
    runs = {}
    for prune in ("auto", "never"):
        before = len(calls)
        gaussian = gaussian_dropout_mi(f, SIGMA, labels, nested=False, prune=prune)
        # (the whole-mixture pass is pruned; each class, 410 components, is below MIN_COMPONENTS)
        assert len(calls) - before == (1 if prune == "auto" else 0)
        runs[prune] = (gaussian, information_dropout_mi(f, alphas, nested=False, prune=prune))
    pruned_run, dense_run = runs["auto"][0], runs["never"][0]
    assert pruned_run.params["kernel_path"] == "pruned" and pruned_run.params["kernel_pairs_fraction"] < 0.5
    assert dense_run.params["kernel_path"] == "dense" and dense_run.params["kernel_pairs_fraction"] == 1.0
    for pruned, dense in zip(runs["auto"], runs["never"]):
        for key in ("mi_xz", "mi_xz_upper", "mi_zy"):
            a, b = getattr(pruned, key), getattr(dense, key)
            assert (a is None and b is None) or abs(a - b) <= 1e-3, (key, a, b)
        assert pruned.params["kernel_max_error_bound"] <= 1e-3
    with pytest.raises(InputError, match="prune must be one of auto, never, always"):
        gaussian_dropout_mi(f[:10], SIGMA, prune="sometimes")


def test_benchmark_helpers():
    """The benchmark's dense-only switch holds inside its block and is undone after it, also after an
    error; its tiled 60,000-code stand-in is deterministic, of the asked size, and each copy stays within
    a few tenths of the codes it copies (in log scale)."""
    from benchmarks import bench_estimators as bench

    before = pruning.MIN_COMPONENTS
    with pytest.raises(RuntimeError), bench.dense_only():
        assert pruning.MIN_COMPONENTS > 10**12
        raise RuntimeError
    assert pruning.MIN_COMPONENTS == before
    f = np.exp(np.random.default_rng(0).standard_normal((100, 3)))
    tiled = bench.tiled(f, 250)
    assert tiled.shape == (250, 3) and np.array_equal(tiled, bench.tiled(f, 250))
    ratio = np.log(tiled / np.concatenate([f, f, f])[:250])
    assert 0.05 < ratio.std() < 0.15 and np.abs(ratio).max() < 0.8
