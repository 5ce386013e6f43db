"""Mutual-information estimators for information-plane analysis of dropout networks.

Adilova, Geiger & Fischer, "Information Plane Analysis for Dropout Neural Networks", ICLR 2023.
All estimators return :class:`~mi_estimators.results.MIResult` with values in nats.
"""
from mi_estimators.results import MIResult

__all__ = ["MIResult"]
