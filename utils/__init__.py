"""Everything above the estimators: the training command line and the Keras training (layers, models,
data, the representation callback), run-folder I/O, the shared command-line helpers (``cli``) and the
analysis of run folders (``analysis``)."""
