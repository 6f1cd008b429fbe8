#!/usr/bin/env bash
# The contrastive pretraining experiment of benchmarks/README.md: a small label-ensemble dataset,
# a CPU-hour of contrastive pretraining (stopped with ctrl-c / SIGINT; the schedule is constant),
# then the registration harness with MIND-SSC alone and with the pretrained features (x 0.1,
# concatenated with MIND-SSC) on the real pairs and on held-out synthetic pairs.
# Usage: bash benchmarks/pretrain/contrastive_experiment.sh WORKDIR   (then stop training when you like)
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:?usage: contrastive_experiment.sh WORKDIR}
stage=${2:-all}
if [[ $stage == all || $stage == train ]]; then
  .venv/bin/synthgen generate --engine label-ensemble --n 320 --size 96 --seed 11 --out "$work/le96.zarr"
  .venv/bin/synthgen-pretrain contrastive --data "$work/le96.zarr" --out "$work/run-c1" \
    --config benchmarks/pretrain/contrastive_cpu_hour.json || true
  .venv/bin/synthgen-pretrain export "$work/run-c1" --out "$work/run-c1/features.pt"
fi
if [[ $stage == all || $stage == evaluate ]]; then
  for pairs in prostate-mr-us oasis totalsegmentator-mr-ct random-shapes; do
    spec=benchmarks/registration/pairs/$pairs.csv
    [[ $pairs == random-shapes ]] && spec=random-shapes:4,size=96
    for features in mind "ckpt:$work/run-c1/features.pt"; do
      name=$([[ $features == mind ]] && echo mind || echo pretrained)
      .venv/bin/synthgen-bench register --pairs "$spec" --features "$features" \
        --out "$work/eval/$pairs-$name" --overwrite --overlays 1
    done
  done
fi
