"""Log-density of equal-weight diagonal Gaussian mixtures at BLAS speed, with a proven error bound.

For M points z and N components N(mu_j, diag s_j^2),

    log p(z) = log (1/N) sum_j exp(L_j(z)),   L_j(z) = kappa_j - 1/2 sum_i (z_i - mu_ji)^2 / s_ji^2,

with kappa_j = -sum_i log s_ji - d/2 log(2 pi). Expanding the square about a centre c gives
L_j(z) - s_0 - r = A(z) . B_j, one matrix product for all (point, component) pairs:

    A(z) = [(z - c)^2, z - c, 1, -r],  B_j = [-w_j/2, (mu_j - c) w_j, kappa_j - C_j/2 - s_0, 1],

w = 1/s^2, C_j = sum_i (mu_ji - c_i)^2 w_ji, s_0 a fixed reference (the median of kappa_j - C_j/2)
and r a per-point running shift (for one width per component the first block is the single column
|z - c|^2). This evaluates the Gaussian-mixture density of Adilova, Geiger & Fischer (ICLR 2023) as
a sum of exponentials of quadratic forms: matrix products plus a streaming log-sum-exp over
component chunks, so memory is bounded whatever M and N. c is the precision-weighted mean of the
component means, which minimises sum_j C_j.

Leaving one component out per point (``leave_out``) gives the leave-one-out mixture
log (1/(N-1)) sum_{j != i} exp(L_j(z_i)) behind the upper estimate of I(X;Z) (Poole et al., ICML
2019): the left-out pair is removed before the running shift, the hits and the sums are formed, so the
sum is accumulated without it (subtracting it afterwards would cancel catastrophically where it
dominates) and carries the same bound.

Modules: :mod:`~mi_estimators.mixture.api` (the public functions and :class:`Mixture`),
:mod:`~mi_estimators.mixture.streaming` (memory plan, working-precision pass, float64 redo),
:mod:`~mi_estimators.mixture.bound` (the rounding-error bound and its proof, 1e-3 nats by default),
:mod:`~mi_estimators.mixture.numpy_backend` (default) and :mod:`~mi_estimators.mixture.keras_backend`
(the same chunk in ``keras.ops`` on TensorFlow, JAX or PyTorch and whatever accelerator they see).
Label groups: ``log_density`` with groups gives every group's log-density to ``atol``, which costs a
restarted shift per group and float64 for groups far from a point; ``log_density_own_group`` gives
what I(Y;Z) needs, log p(z) and log p(z | own group), in one ungrouped pass plus one pass per group
over its own points (about 1 + 1/G the pairs).
"""

from mi_estimators.mixture.api import (
    BACKENDS,
    Mixture,
    check_options,
    direct_log_density,
    mixture_log_density,
    prepare_mixture,
)
from mi_estimators.mixture.keras_backend import full_precision_matmul
from mi_estimators.mixture.streaming import chunk_plan

__all__ = [
    "BACKENDS",
    "Mixture",
    "check_options",
    "chunk_plan",
    "direct_log_density",
    "full_precision_matmul",
    "mixture_log_density",
    "prepare_mixture",
]
