#!/usr/bin/env bash
# The random-image registration experiment of benchmarks/README.md (Chen et al., reduced for a CPU):
# (a) randreg pretraining of the paper's network on random-shapes pairs made on the fly at 128^3
#     (64^3 network input), scored zero-shot on the OASIS pair and on held-out random-shapes pairs;
# (b) randreg-finetune of TransMorph-TVF on the shared brains (MNI and OASIS image A, 1 mm, random
#     160x192x128 crops of their pairs) from the pretrained encoder and from scratch, the same
#     steps, scored on the OASIS pair (image B was never seen; image A was);
# beside MIND-SSC + ConvexAdam under the reference defaults.
# Usage: bash benchmarks/pretrain/randreg_experiment.sh WORKDIR [STAGE] [PRETRAIN_STEPS] [FINETUNE_STEPS]
#   STAGE: all (default), data, pretrain, finetune-none (may run beside pretrain), finetune-pretrained,
#   evaluate. Steps: 600 and 100 by default.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:?usage: randreg_experiment.sh WORKDIR [STAGE] [PRETRAIN_STEPS] [FINETUNE_STEPS]}
stage=${2:-all}
pretrain_steps=${3:-600}
finetune_steps=${4:-100}
data=../shared/data
oasis=benchmarks/registration/pairs/oasis.csv

if [[ $stage == all || $stage == data ]]; then
  mkdir -p "$work/brains"
  ln -sf "$(realpath "$data/mni/mni.nii.gz")" "$work/brains/mni.nii.gz"
  ln -sf "$(realpath "$data/oasis-pair/image_A_160x192x144.nii.gz")" "$work/brains/oasisA.nii.gz"
  .venv/bin/synthgen ingest --images "$work/brains" --out "$work/brains.zarr" --spacing 1 --size 160,192,160 \
    --shard-size 1 --backend local
fi
if [[ $stage == all || $stage == pretrain ]]; then
  .venv/bin/synthgen-pretrain randreg --out "$work/randreg" --config benchmarks/pretrain/randreg_cpu_hour.json \
    --steps "$pretrain_steps"
fi
for init in none pretrained; do
  if [[ $stage == all || $stage == "finetune-$init" ]]; then
    source=$([[ $init == none ]] && echo none || echo "$work/randreg")
    .venv/bin/synthgen-pretrain randreg-finetune --init "$source" --data "$work/brains.zarr" --out "$work/ft-$init" \
      --config benchmarks/pretrain/randreg_finetune_cpu.json --steps "$finetune_steps"
  fi
done
if [[ $stage == all || $stage == evaluate ]]; then
  for pairs in oasis random-shapes; do
    spec=$oasis
    [[ $pairs == random-shapes ]] && spec=random-shapes:4,size=128,seed=99
    .venv/bin/synthgen-bench register --pairs "$spec" --features mind --out "$work/eval/$pairs-mind" --overwrite \
      --overlays 1 --device cpu
    for net in randreg ft-none ft-pretrained; do
      [[ $pairs == random-shapes && $net != randreg ]] && continue
      .venv/bin/synthgen-bench register --pairs "$spec" --method "net:$work/$net/features.pt" \
        --out "$work/eval/$pairs-$net" --overwrite --overlays 1 --device cpu
    done
  done
fi
