"""The toy data of the validation: X ~ N(0, I_dim), f(x) = 2 A x + 0.5, Z = f(X) * D, D ~ N(1, sigma^2 I).

``noise_std`` is the standard deviation sigma of the multiplicative noise D, as everywhere in the
toolkit (the paper's ``noise`` 0.1 is the variance: sigma = sqrt(0.1)). With ``fdim == dim`` the matrix A is
the identity (the paper's setting). Otherwise A is a fixed ``fdim x dim`` matrix, drawn once from
the seed :data:`PROJECTION_SEED` (independent of ``--seed``) as the Q factor of a Gaussian matrix:
orthonormal rows when ``fdim < dim`` (then AX ~ N(0, I_fdim) and the truth is known) and orthonormal
columns when ``fdim > dim`` (a rank-``dim`` embedding; no ground truth).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from estimator_validation.ground_truth import TOY_SCALE, TOY_SHIFT
from mi_estimators.checks import LOG_SQRT_2PI_E, check_float, check_int

PROJECTION_SEED = 20230301


def projection_matrix(dim: int, fdim: int) -> np.ndarray:
    """The fixed ``fdim x dim`` matrix A: identity if equal, else orthonormal rows or columns."""
    if dim < 1 or fdim < 1:
        raise ValueError(f"dim and fdim must be >= 1, got dim={dim}, fdim={fdim}")
    if dim == fdim:
        return np.eye(dim)
    gauss = np.random.default_rng(PROJECTION_SEED).standard_normal((max(dim, fdim), min(dim, fdim)))
    q, _ = np.linalg.qr(gauss)  # orthonormal columns, shape (max, min)
    return q if fdim > dim else q.T


def child_seeds(seed: int, count: int) -> list[int]:
    """``count`` statistically independent integer seeds derived from ``seed`` (NumPy SeedSequence)."""
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(count)]


@dataclass
class ToyData:
    """One draw of the toy problem: inputs, their codes f(x) and noisy points.

    ``z`` holds ``draws`` noisy draws per input, input-major: row ``k`` belongs to input
    ``index[k]``.
    """

    x: np.ndarray
    f: np.ndarray
    z: np.ndarray
    index: np.ndarray
    noise_std: float

    @property
    def n(self) -> int:
        return self.x.shape[0]


def make_toy(dim: int, fdim: int, n: int, noise_std: float, draws: int = 1, seed: int = 0) -> ToyData:
    """Draw ``n`` inputs and ``draws`` noisy points Z of each (float64)."""
    for value, name in ((dim, "dim"), (fdim, "fdim"), (n, "n"), (draws, "draws")):
        check_int(value, name)
    noise_std = check_float(noise_std, "noise_std")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    scaled = TOY_SCALE * x
    # A = I when fdim == dim: no (dim, dim) matrix and product (x @ I is x exactly)
    f = (scaled if dim == fdim else scaled @ projection_matrix(dim, fdim).T) + TOY_SHIFT
    index = np.repeat(np.arange(n), draws)
    z = f[index] * (1.0 + noise_std * rng.standard_normal((n * draws, fdim)))
    return ToyData(x=x, f=f, z=z, index=index, noise_std=noise_std)


def sample_conditional_entropy(f: np.ndarray, noise_std: float) -> float:
    """Monte Carlo estimate of h(Z|X) over the drawn inputs: mean_k sum_i log(sqrt(2 pi e) sigma |f(x_k)_i|).

    The closed form of the paper, averaged over the inputs (not over noise draws).
    """
    f = np.asarray(f, dtype=np.float64)
    return float(np.mean(np.sum(LOG_SQRT_2PI_E + math.log(noise_std) + np.log(np.abs(f)), axis=1)))


def population_covariance(dim: int, fdim: int, noise_std: float) -> np.ndarray:
    """Cov(Z) of the toy problem: a^2 A A^T + sigma^2 diag(a^2 (A A^T)_ii + b^2) (a = 2, b = 0.5).

    From E[f f^T] = a^2 A A^T + b^2 11^T and E[D_i D_j] = 1 + sigma^2 [i = j].
    """
    a = projection_matrix(dim, fdim)
    gram = TOY_SCALE**2 * a @ a.T
    return gram + noise_std**2 * np.diag(np.diag(gram) + TOY_SHIFT**2)


def gaussian_bound_limit(dim: int, fdim: int, noise_std: float) -> float:
    """1/2 log det(2 pi e Cov(Z)): the large-sample limit of the Gaussian upper bound on h(Z) (nats)."""
    _, logdet = np.linalg.slogdet(population_covariance(dim, fdim, noise_std))
    return fdim * LOG_SQRT_2PI_E + 0.5 * float(logdet)
