"""Benchmarks of the estimators, the cluster path and a GPU check (see benchmarks/README.md)."""
