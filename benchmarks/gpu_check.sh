#!/usr/bin/env bash
# One GPU check: set up with this machine's CUDA torch, then (in at most 8 minutes) the CUDA tests,
# both engines on the GPU, the stream feeding the GPU, a contrastive run's data wait, and ConvexAdam
# against the reference on the GPU; every figure goes to one JSON file (see benchmarks/gpu_check.py).
#
#   bash benchmarks/gpu_check.sh [OUT.json]        # default: benchmarks/results/gpu_check.json
#
# The venv sees the system's packages, so the machine's CUDA build of torch is kept (scripts/setup.sh
# installs no torch where one imports). On a machine without a package index, put the wheels of the
# missing packages in a folder and run with PIP_NO_INDEX=1 PIP_FIND_LINKS=that/folder (pip reads both).
# Without CUDA it says so in one line, runs the CPU parts and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-benchmarks/results/gpu_check.json}"
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv --system-site-packages .venv
bash scripts/setup.sh
exec .venv/bin/python -m benchmarks.gpu_check --json "$OUT" --budget "${GPU_CHECK_BUDGET:-480}"
