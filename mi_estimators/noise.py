"""The dropout noise draws shared by every estimator of a run: one noisy Z per information plane.

Draw r of input k is row ``k % BLOCK`` of
``default_rng([seed, STREAM, k // BLOCK, r]).standard_normal((BLOCK, d))``, so it depends on (seed, k, r)
only: not on how many inputs or draws an estimate uses, nor on its memory budget. Hence the mixture
estimate on N inputs, its nested subsets (the convergence-in-N diagnostic) and the baselines run on
draw 0 (EDGE, KSG, binning) all see the same Z. f(x) below is the noise-free code of input x.

* Gaussian dropout (Adilova, Geiger & Fischer, ICLR 2023): Z = f(x) (1 + sigma eps).
* Information dropout (Achille & Soatto 2018): Z = f(x) exp(alpha(x) eps), i.e. log Z = log f + alpha eps.
* Additive Gaussian noise (Goldfeld et al., ICML 2019, "Estimating Information Flow in Deep Neural
  Networks"; Keras' ``GaussianNoise``): Z = f(x) + sigma eps.
"""

from __future__ import annotations

import numpy as np

from mi_estimators.checks import InputError, as_samples, check_float, check_int, gaussian_dropout_std

BLOCK = 1024
STREAM = 0x4E4F4953
"""Tags the noise streams. numpy's SeedSequence pads short entropy with zeros, so ``default_rng([s, 0, 0])``
is ``default_rng(s)``: without the tag, draw 0 of the first block would replay any array a user drew
with ``default_rng(seed)`` (the inputs of a test, say) and correlate the noise with the data."""
_PILOT_STREAM = 0x50494C54


def standard_normal_draws(seed: int, inputs: np.ndarray, draw_index: np.ndarray, d: int) -> np.ndarray:
    """eps (M, d): draw ``draw_index[m]`` of input ``inputs[m]`` for every m, as the module docstring defines."""
    inputs, draw_index = np.asarray(inputs, dtype=np.int64), np.asarray(draw_index, dtype=np.int64)
    out = np.empty((len(inputs), d))
    keys = (inputs // BLOCK) * (int(draw_index.max(initial=0)) + 1) + draw_index
    order = np.argsort(keys, kind="stable")
    group_starts = np.flatnonzero(np.diff(keys[order])) + 1
    for group in np.split(order, group_starts):
        if group.size:
            block, draw = int(inputs[group[0]] // BLOCK), int(draw_index[group[0]])
            eps = np.random.default_rng([seed, STREAM, block, draw]).standard_normal((BLOCK, d))
            out[group] = eps[inputs[group] % BLOCK]
    return out


def pilot_uniforms(seed: int, inputs: np.ndarray) -> np.ndarray:
    """A fixed uniform number per input (same rule as the draws): inputs below a threshold get an extra
    draw when one draw per input is asked for, so that the Monte Carlo error can be measured."""
    inputs = np.asarray(inputs, dtype=np.int64)
    out = np.empty(len(inputs))
    for block in np.unique(inputs // BLOCK):
        sel = inputs // BLOCK == block
        out[sel] = np.random.default_rng([seed, _PILOT_STREAM, int(block)]).random(BLOCK)[inputs[sel] % BLOCK]
    return out


def noisy_representations(
    f: np.ndarray,
    *,
    noise_std: float | None = None,
    p: float | None = None,
    alphas: np.ndarray | None = None,
    additive_std: float | None = None,
    seed: int = 0,
    draw: int = 0,
) -> np.ndarray:
    """One draw of the noisy Z for every row of the codes f (N, d): Gaussian dropout with ``noise_std`` or
    its rate ``p`` (Z = f (1 + sigma eps), sigma = sqrt(p / (1 - p))), information dropout with ``alphas``
    (Z = f exp(alpha eps)) or additive Gaussian noise with ``additive_std`` (Z = f + sigma eps); exactly
    one of them. Draw 0 is the first draw of the mixture estimate with the same seed."""
    f = as_samples(f, "f", min_rows=1)
    if sum(level is not None for level in (noise_std, p, alphas, additive_std)) != 1:
        raise InputError(
            "give exactly one of noise_std or p (Gaussian dropout), alphas (information dropout) and "
            "additive_std (additive Gaussian noise)"
        )
    check_int(seed, "seed", minimum=0)
    # the draw index keys the noise streams as an int64 (standard_normal_draws)
    check_int(draw, "draw", minimum=0, maximum=2**31 - 1)
    rows = np.arange(len(f))
    eps = standard_normal_draws(seed, rows, np.full(len(f), draw), f.shape[1])
    if noise_std is not None or p is not None:
        z = f * (1.0 + gaussian_dropout_std(noise_std, p)[0] * eps)
    elif additive_std is not None:
        z = f + check_float(additive_std, "additive_std") * eps
    else:
        alpha = as_samples(alphas, "alphas", min_rows=1)
        if alpha.shape != f.shape or (alpha <= 0).any():
            raise InputError(f"alphas must be positive with the shape of f {f.shape}; got shape {alpha.shape}")
        with np.errstate(over="ignore"):
            z = f * np.exp(alpha * eps)
    if not np.isfinite(z).all():
        raise InputError("the noisy draw overflows float64: f or the noise level (noise_std, alphas) is too large")
    return z
