#!/usr/bin/env bash
# The wheels the lent GPU machine lacks (it has torch, numpy, OpenCV, numba, scipy, werkzeug, jinja2,
# click, pytest, hypothesis; see the device tool's KINDS.md), for its Python 3.12, into .gpu_wheels/
# (git-ignored): carry it with the run (carry: [".gpu_wheels"]); bench/gpu_check.sh installs from it
# with --no-index.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  -d .gpu_wheels yacs flask itsdangerous blinker pymatting
ls .gpu_wheels
