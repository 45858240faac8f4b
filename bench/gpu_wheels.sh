#!/usr/bin/env bash
# The wheels a GPU machine without a package registry lacks for the GPU check, for its Python 3.12
# (its image has torch, numpy, OpenCV, numba, scipy, werkzeug, jinja2, click, pytest, pytest-timeout
# and hypothesis), downloaded here into .gpu_wheels/ (git-ignored): copy that folder beside the
# checkout there; bench/gpu_check.sh installs from it with --no-index --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  -d .gpu_wheels yacs flask itsdangerous blinker pymatting
ls .gpu_wheels
