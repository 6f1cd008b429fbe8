"""The CUDA paths a GPU user takes, end to end: derived views rendered on the GPU by the stream's
device stage, ConvexAdam with MIND on the GPU, and a contrastive training run on the GPU with
mixed precision. Marked ``cuda``: skipped without a CUDA device, run by benchmarks/gpu_check.sh
(``pytest -m cuda``). Each compares the GPU with the CPU where the two must agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from pretrain.config import build_config
from pretrain.recipes.contrastive import ContrastiveRecipe
from pretrain.loop import train
from registration import convex_adam, mind_ssc
from registration.metrics import dice, label_mean
from synthgen.engines import get_engine
from synthgen.ops.warp import warp_labels
from synthgen.stream import DeviceStage, ShardStream
from tests.helpers import make_label_ensemble

pytestmark = pytest.mark.cuda
DEVICE = "cuda"


def test_label_store_views_render_on_the_gpu_as_on_the_cpu(tmp_path: Path) -> None:
    path = str(make_label_ensemble(tmp_path / "labels.zarr", 4, size=32, store="labels"))
    stream = ShardStream(path, batch_size=2, shuffle=False, crop=(32, 32, 16))
    batch = next(iter(DataLoader(stream, batch_size=None)))
    stage = DeviceStage(path)
    on_cpu = stage(dict(batch), "cpu")
    on_gpu = stage(dict(batch), DEVICE)
    assert on_gpu["view1"].device.type == DEVICE and on_gpu["view1"].shape == (2, 1, 32, 32, 16)
    assert torch.equal(on_gpu["labels"].cpu(), on_cpu["labels"])
    for view in ("view1", "view2"):
        difference = (on_gpu[view].cpu() - on_cpu[view]).abs()
        assert float(difference.mean()) < 1e-3, (view, float(difference.mean()), float(difference.max()))


def test_convex_adam_with_mind_on_the_gpu_scores_as_on_the_cpu() -> None:
    pair = get_engine("random-shapes", size=64).sample(seed=0, index=1)
    fixed, moving = pair["fixed"].float(), pair["moving"].float()
    scores = {}
    for device in ("cpu", DEVICE):
        field = convex_adam(mind_ssc(fixed.to(device)), mind_ssc(moving.to(device)), grid_sp=4, disp_hw=3)
        assert field.device.type == torch.device(device).type and field.shape == (3, 64, 64, 64)
        warped = warp_labels(pair["moving_labels"].to(device), field).cpu()
        scores[device] = label_mean(dice(pair["fixed_labels"], warped, moving_labels=pair["moving_labels"]))
    before = label_mean(dice(pair["fixed_labels"], pair["moving_labels"], moving_labels=pair["moving_labels"]))
    assert scores[DEVICE] > before + 0.05, (before, scores)
    assert abs(scores[DEVICE] - scores["cpu"]) < 0.02, scores


def test_contrastive_run_on_the_gpu_with_mixed_precision(tmp_path: Path) -> None:
    path = make_label_ensemble(tmp_path / "views.zarr", 8, size=64, shard_size=4)
    config = build_config(ContrastiveRecipe, "tiny", {"data.path": str(path), "train.device": DEVICE,
                                                      "train.amp": "auto", "train.steps": 4,
                                                      "train.val_every": 0, "data.workers": 2})
    summary = train(ContrastiveRecipe.name, config, tmp_path / "run")
    assert summary["finished"] and summary["step"] == 4
    assert all(torch.isfinite(torch.tensor(value)) for value in summary["train"].values()), summary
    assert 0 <= summary["data"]["wait_fraction"] <= 1 and summary["data"]["samples_per_s"] > 0
    assert (tmp_path / "run" / "features.pt").exists()
