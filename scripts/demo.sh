#!/usr/bin/env bash
# The main job on the embedded default, from nothing: set up, generate a small random-shapes
# dataset with the local Ray runtime, describe and verify it, and draw a preview PNG.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT="${DEMO_OUT:-demo}"
mkdir -p "$OUT"
.venv/bin/synthgen generate --engine random-shapes --n 16 --size 128 --seed 0 --shard-size 4 --out "$OUT/shapes.zarr"
.venv/bin/synthgen info "$OUT/shapes.zarr"
.venv/bin/synthgen verify "$OUT/shapes.zarr"
.venv/bin/synthgen preview "$OUT/shapes.zarr" --samples 0:4 --out "$OUT/preview.png"
echo "preview written to $OUT/preview.png"
