"""Layers, models, data loading, the representation callback, run-folder I/O and plotting."""
