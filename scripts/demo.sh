#!/usr/bin/env bash
# The main job on the embedded default, from nothing: set up, generate a small label-ensemble
# dataset from the built-in template bank with the local Ray runtime, describe and verify it, and
# draw a preview PNG (label map and both views of each sample).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT="${DEMO_OUT:-demo}"
mkdir -p "$OUT"
.venv/bin/synthgen generate --engine label-ensemble --n 16 --size 128 --seed 0 --shard-size 4 --out "$OUT/shards.zarr"
.venv/bin/synthgen info "$OUT/shards.zarr"
.venv/bin/synthgen verify "$OUT/shards.zarr"
.venv/bin/synthgen preview "$OUT/shards.zarr" --samples 0:4 --out "$OUT/preview.png"
echo "preview written to $OUT/preview.png"
