#!/usr/bin/env bash
# From a fresh clone to a trained, exported, explained model: creates (or reuses) the virtualenv .venv, installs as
# the README says (examples/install.sh) and runs `anomalib-fewshot demo` on generated data. Extra arguments go to the
# demo (e.g. `bash examples/quickstart.sh --model Fdsl`). Outputs: demo_run/gallery.png, the OpenVINO model, metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
if ! python -c "import anomalib_fewshot, anomalib, torch" 2>/dev/null; then
    echo "installing into $VENV (about 4 minutes on a 2-core machine) ..."
    python -m pip install --quiet --upgrade pip
    bash examples/install.sh
fi
anomalib-fewshot demo --output "${OUTPUT:-demo_run}" "$@"
