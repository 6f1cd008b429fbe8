#!/usr/bin/env bash
# The contrastive pretraining experiment of benchmarks/README.md: the procedural template bank
# against the real-shape bank (TotalSegmentator-mini + SynthSeg label maps from ../shared/data),
# each a small label-ensemble dataset and the same number of contrastive steps on the CPU; then
# the registration harness with MIND-SSC alone and with each run's features (x 0.1, concatenated
# with MIND-SSC), under the reference ConvexAdam defaults and the anatomix preset, on the real
# pairs and on held-out synthetic pairs.
# Usage: bash benchmarks/pretrain/contrastive_experiment.sh WORKDIR [STAGE] [STEPS]
#   STAGE: all (default), bank, train-procedural, train-real (the two train stages may run at
#   once, e.g. with OMP_NUM_THREADS=1 each), evaluate. STEPS: training steps per bank (1000).
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:?usage: contrastive_experiment.sh WORKDIR [STAGE] [STEPS]}
stage=${2:-all}
steps=${3:-1000}
data=../shared/data

if [[ $stage == all || $stage == bank ]]; then
  .venv/bin/synthgen templates build --totalsegmentator "$data/totalsegmentator-mini" \
    --label-maps "$data/synthseg-label-maps" --out "$work/real-bank.zarr"
fi
for bank in procedural real; do
  if [[ $stage == all || $stage == "train-$bank" ]]; then
    templates=$([[ $bank == real ]] && echo "$work/real-bank.zarr" || echo default)
    .venv/bin/synthgen generate --engine label-ensemble --n 320 --size 96 --seed 11 --templates "$templates" \
      --out "$work/le96-$bank.zarr"
    .venv/bin/synthgen-pretrain contrastive --data "$work/le96-$bank.zarr" --out "$work/run-$bank" \
      --config benchmarks/pretrain/contrastive_cpu_hour.json --steps "$steps"
    .venv/bin/synthgen-pretrain export "$work/run-$bank" --out "$work/run-$bank/features.pt"
  fi
done
if [[ $stage == all || $stage == evaluate ]]; then
  for pairs in prostate-mr-us oasis totalsegmentator-mr-ct random-shapes; do
    spec=benchmarks/registration/pairs/$pairs.csv
    [[ $pairs == random-shapes ]] && spec=random-shapes:4,size=96
    for features in mind procedural real; do
      source=$([[ $features == mind ]] && echo mind || echo "ckpt:$work/run-$features/features.pt")
      for preset in reference anatomix; do
        .venv/bin/synthgen-bench register --pairs "$spec" --features "$source" --preset "$preset" \
          --out "$work/eval/$pairs-$features-$preset" --overwrite --overlays 1
      done
    done
  done
fi
