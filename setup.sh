#!/usr/bin/env bash
# Set up graphsphere on a fresh machine: a virtual environment in .venv with the project and all
# extras, plus the peer library the tests compare against. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
# torch 2.13.0 first: a bare `torch` requirement would pull a multi-GB CUDA build.
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
# The reference PyTorch DeepSphere (for the comparison tests): pure Python, its pinned
# dependencies are unneeded at import, hence --no-deps.
python -m pip install -q --no-deps --no-build-isolation deepsphere==0.2.1
