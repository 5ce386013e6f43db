"""Mutual-information estimators for information-plane analysis of dropout networks.

Adilova, Geiger & Fischer, "Information Plane Analysis for Dropout Neural Networks", ICLR 2023.
All estimators return :class:`~mi_estimators.results.MIResult` with values in nats.
"""
from mi_estimators.binning import binning_mi
from mi_estimators.discrete import discrete_entropy, discrete_mi
from mi_estimators.dropout_MI import estimate_layer_mi, gaussian_dropout_mi, information_dropout_mi
from mi_estimators.edge import edge_mi
from mi_estimators.kde import kde_mi_bounds
from mi_estimators.ksg import ksg_mi, ksg_mi_labels
from mi_estimators.mixture import mixture_log_density
from mi_estimators.results import MIResult
from mi_estimators.upper_bound import gaussian_dropout_upper_bound, gaussian_entropy_upper_bound

__all__ = ["MIResult", "binning_mi", "discrete_entropy", "discrete_mi", "edge_mi", "estimate_layer_mi",
           "gaussian_dropout_mi", "gaussian_dropout_upper_bound", "gaussian_entropy_upper_bound",
           "information_dropout_mi", "kde_mi_bounds", "ksg_mi", "ksg_mi_labels", "mixture_log_density"]
