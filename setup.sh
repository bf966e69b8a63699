#!/usr/bin/env bash
# Set up graphsphere on a fresh machine: a virtual environment in .venv with the project and all
# extras, plus the peer library the tests compare against. Safe to run again.
#
#   bash setup.sh                       # torch 2.13.0 as pip finds it (on Linux, PyPI's is the CUDA build)
#   GRAPHSPHERE_TORCH=cpu bash setup.sh # the CPU-only build from the PyTorch CPU wheel index
#                                       # (a 192 MB wheel instead of the CUDA build and its libraries)
set -euo pipefail
cd "$(dirname "$0")"
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
# torch 2.13.0 first: a bare `torch` requirement would pull whatever build and version pip prefers.
case "${GRAPHSPHERE_TORCH:-}" in
  "") python -m pip install -q torch==2.13.0 ;;
  cpu) python -m pip install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu ;;
  *) echo "setup.sh: GRAPHSPHERE_TORCH is '${GRAPHSPHERE_TORCH}'; use GRAPHSPHERE_TORCH=cpu (the CPU-only" \
          "build) or leave it unset (torch as pip finds it)" >&2
     exit 2 ;;
esac
python -m pip install -q -e ".[test]"
# The reference PyTorch DeepSphere (for the comparison tests): pure Python, its pinned
# dependencies are unneeded at import, hence --no-deps.
python -m pip install -q --no-deps --no-build-isolation deepsphere==0.2.1
# torch-harmonics (the SHT-based CNN of the shapes experiment, a peer in the benchmarks): its wheel
# asks for a CUDA torch; it runs on the CPU torch above, hence --no-deps.
python -m pip install -q --no-deps torch-harmonics==0.9.3
