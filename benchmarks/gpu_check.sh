#!/usr/bin/env bash
# Device check (under 8 minutes on an H100): trains `fc` on Fashion-MNIST for 3 epochs with
# KERAS_BACKEND=jax, then times the mixture kernel's keras backend on 60,000 x 60,000 pairs at
# d = 32 and 128 against a float64 spot check; the last line printed is one JSON object
# (benchmarks/gpu_check.py; a failing step is reported there and the others still run).
#
# The device machine has JAX but no TensorFlow, no Keras and no internet. Prepare, here, once:
#   mkdir -p .whl && .venv/bin/pip download --no-deps -d .whl keras==3.15.1 namex
#   .venv/bin/pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 -d .whl optree
#   mkdir -p .gpu_data && cp -r /usr/share/datasets/fashion-mnist .gpu_data/
#   grep -qx '/.gpu_data/' .git/info/exclude || echo '/.gpu_data/' >> .git/info/exclude
# then run, from the repository root, with carry [".whl", ".gpu_data"]:
#   bash benchmarks/gpu_check.sh [DATA_DIR [gpu_check.py options]]   (default .gpu_data/fashion-mnist)
# Nothing is downloaded there: a missing keras is installed from .whl/ only (--no-index). The JSON
# line is also written to $OUT/gpu_check.json when $OUT is set (the device tool's result folder).
# The exit status is gpu_check.py's: non-zero when a step failed. The training run's temporary folder is
# removed on exit.
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DATA=${1:-.gpu_data/fashion-mnist}
[ $# -gt 0 ] && shift
RUNS=$(mktemp -d)
trap 'rm -rf "$RUNS"' EXIT
JSON=/dev/null
[ -n "${OUT:-}" ] && JSON="$OUT/gpu_check.json"
if ! "$PY" -c "import keras" 2>/dev/null; then
  if ls .whl/keras-*.whl >/dev/null 2>&1; then
    echo "gpu_check: keras is missing here; installing it from the carried wheels in .whl/" >&2
    "$PY" -m pip install -q --no-index --find-links .whl keras \
      || echo "gpu_check: KERAS IS MISSING and could not be installed from .whl/" >&2
  else
    echo "gpu_check: KERAS IS MISSING on this machine and no keras wheel was carried in .whl/" >&2
  fi
fi
[ -d "$DATA" ] || echo "gpu_check: no Fashion-MNIST files in $DATA: the training step is skipped" >&2
TRAIN=()
[ -d "$DATA" ] && TRAIN=(--data-dir "$DATA")
KERAS_BACKEND=jax timeout 470 "$PY" -m benchmarks.gpu_check "${TRAIN[@]}" --out "$RUNS" "$@" | tee "$JSON"
