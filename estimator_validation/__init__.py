"""Validation of the mutual-information estimators on the toy problem of Adilova, Geiger & Fischer (ICLR 2023).

X ~ N(0, I_dim), f(x) = 2x + 0.5, Z = f(X) * D with D ~ N(1, noise_std^2 I): the true I(X;Z) is known by
numerical integration (:mod:`estimator_validation.ground_truth`), so every estimator can be checked
against it. The command-line scripts are ``known_MI.py``, ``mc_convergence.py``,
``upper_bound_check.py`` and ``error_calibration.py``.
"""
