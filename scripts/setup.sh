#!/usr/bin/env bash
# Creates .venv and installs synthgen with its test extras. Idempotent; safe to re-run.
# Where no NVIDIA GPU is visible, the CPU build of torch goes in first so that pip does not
# pull several GB of CUDA wheels; users with GPUs keep (or install) their own torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet torch
  else
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
  fi
fi
.venv/bin/python -m pip install --quiet -e ".[test]"
