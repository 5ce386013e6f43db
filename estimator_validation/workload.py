"""The former name of :mod:`estimator_validation.run_time`, kept while ``benchmarks/bench_estimators.py``
imports from it."""

from estimator_validation.run_time import announce, check_time, mixture_seconds

__all__ = ["announce", "check_time", "mixture_seconds"]
