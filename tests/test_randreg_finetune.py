"""Fine-tuning the pretrained encoder inside TransMorph-TVF on real pairs
(`synthgen-pretrain randreg-finetune`), and registration networks in the harness (`net:`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from benchmarks.registration.cli import main as bench_main
from pretrain.checkpoint import load_checkpoint
from pretrain.cli import main as pretrain_main
from pretrain.config import build_config
from pretrain.models.transmorph import TransMorphTVF
from pretrain.recipes.randreg_finetune import RandRegFinetuneRecipe
from registration.convexadam import convex_adam
from registration.features.checkpoint import load_feature_module
from registration.network_inference import predict_displacement
from registration.networks import load_network
from synthgen.errors import SynthgenError
from synthgen.ingest.run import ingest
from tests.helpers import run_main
from tests.test_pretrain_loop import assert_bitwise_equal, states

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PROSTATE = SHARED / "prostate-mr-us"
PAIRS_CSV = Path(__file__).resolve().parents[1] / "benchmarks" / "registration" / "pairs" / "prostate-mr-us.csv"
SPEC = "generate:random-shapes?n=8&size=64&seed=0&shard_size=4"

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="shared data absent (see shared/data/README.md)")


def test_the_published_full_network_size() -> None:
    """17,715,340 parameters: MIR's TransMorphTVF(SVF=True, swin) at the paper's configuration has
    17,716,639, of which its unused ``reg_head`` holds 1,299."""
    network = TransMorphTVF()
    assert sum(p.numel() for p in network.parameters()) == 17_715_340
    tiny = TransMorphTVF({"embed_dim": 12, "depths": [1, 1, 1], "num_heads": [2, 2, 2]}, time_steps=2, svf_steps=3)
    with torch.no_grad():
        flow = tiny.eval()(torch.rand(1, 1, 32, 48, 32), torch.rand(1, 1, 32, 48, 32))
    assert flow.shape == (1, 3, 32, 48, 32) and float(flow.abs().max()) < 0.1  # heads start near zero


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny randreg run, the prostate MR volumes ingested at 64^3 (single volumes, 3 shards),
    and a fine-tuning run from the randreg run's encoder."""
    root = tmp_path_factory.mktemp("finetune")
    pretrained = root / "randreg"
    assert pretrain_main(["randreg", "--data", SPEC, "--out", str(pretrained), "--config", "tiny"]) == 0
    real = root / "real.zarr"
    ingest(str(PROSTATE / "moving_images"), str(real), labels=str(PROSTATE / "moving_labels"), size=64, spacing=1.2,
           backend="local", shard_size=4, progress=False)
    tuned = root / "tuned"
    assert pretrain_main(["randreg-finetune", "--init", str(pretrained), "--data", str(real), "--out", str(tuned),
                          "--config", "tiny", "--steps", "4"]) == 0
    return {"pretrained": pretrained, "real": real, "tuned": tuned}


def test_fine_tuning_starts_from_the_pretrained_encoder_and_scores_dice(runs: dict[str, Path]) -> None:
    pretrained = load_checkpoint(runs["pretrained"] / "best.pt")["modules"]["model"]["state_dict"]
    network, settings = load_network(runs["tuned"] / "features.pt")
    assert isinstance(network, TransMorphTVF) and settings == {"input_scale": 2}
    config = build_config(RandRegFinetuneRecipe, "tiny", {"model.init": str(runs["pretrained"])})
    torch.manual_seed(0)
    started = RandRegFinetuneRecipe(config.model, config.recipe).build()["model"]
    for key, value in started.encoder.state_dict().items():
        assert torch.equal(value, pretrained[f"encoder.{key}"]), key
    records = [json.loads(line) for line in (runs["tuned"] / "metrics.jsonl").read_text().splitlines()]
    validation = [r for r in records if r["kind"] == "val"]
    assert validation and 0 <= validation[-1]["dice"] <= 1 and "ncc" in validation[-1]


def test_fine_tuning_resumes_exactly_and_init_none_is_the_random_baseline(runs: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    args = ["randreg-finetune", "--init", str(runs["pretrained"]), "--data", str(runs["real"]), "--config", "tiny",
            "--steps", "4"]
    assert pretrain_main([*args, "--out", str(tmp_path / "paused"), "--stop-after", "2"]) == 0
    assert pretrain_main(["randreg-finetune", "--out", str(tmp_path / "paused"), "--resume"]) == 0
    assert_bitwise_equal(states(tmp_path / "paused"), states(runs["tuned"]))
    assert pretrain_main([*args[:1], "--init", "none", *args[3:], "--out", str(tmp_path / "scratch")]) == 0
    scratch = states(tmp_path / "scratch")["model"]
    tuned = states(runs["tuned"])["model"]
    assert not torch.equal(scratch["encoder.patch_embed.weight"], tuned["encoder.patch_embed.weight"])


def test_bad_init_and_data_are_one_line_errors(capsys: pytest.CaptureFixture[str], runs: dict[str, Path],
                                               tmp_path: Path) -> None:
    cases = [(["--init", str(tmp_path / "missing")], "no such randreg run or checkpoint"),
             (["--init", str(runs["tuned"] / "last.pt")], "is a randreg-finetune checkpoint"),
             (["--init", str(runs["pretrained"]), "--set", "model.embed_dim=24", "--set", "model.num_heads=[2,2,2]"],
              "differs from model.* in embed_dim"),
             (["--data", SPEC.replace("size=64", "size=48")], "each size must be a multiple of 32")]
    for extra, message in cases:
        argv = ["randreg-finetune", "--data", str(runs["real"]), "--out", str(tmp_path / "run"), "--config", "tiny",
                *extra]
        code, _, err = run_main(pretrain_main, capsys, *argv)
        assert code != 0 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "run").exists(), "nothing is written for a run that cannot start"
    code, _, err = run_main(pretrain_main, capsys, "contrastive", "--init", "x", "--data", str(runs["real"]),
                            "--out", str(tmp_path / "c"))
    assert code != 0 and "takes no --init" in err


def test_a_network_registers_pairs_in_the_harness_and_adam_refines_it(runs: dict[str, Path], tmp_path: Path) -> None:
    network, settings = load_network(runs["tuned"] / "features.pt")
    fixed, moving = torch.rand(40, 36, 28), torch.rand(40, 36, 28)
    field = predict_displacement(network, fixed, moving, settings["input_scale"])
    assert field.shape == (3, 40, 36, 28) and torch.isfinite(field).all()
    refined = convex_adam(fixed[None], moving[None], initial=field, niter=3)
    assert refined.shape == field.shape and not torch.equal(refined, field)
    for method, extra in (("net", []), ("net+io", ["--set", "io_steps=3"])):
        out = tmp_path / method
        code = bench_main(["register", "--pairs", str(PAIRS_CSV), "--method", f"net:{runs['tuned'] / 'features.pt'}",
                           "--limit", "1", "--out", str(out), "--device", "cpu", "--overlays", "1", *extra])
        assert code == 0
        row = next(csv.DictReader((out / "pairs.csv").open()))
        assert 0 <= float(row["dice"]) <= 1 and float(row["tre"]) > 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["method"].startswith("net:") and summary["io_steps"] == (3 if extra else 0)
    assert bench_main(["register", "--pairs", str(PAIRS_CSV), "--set", "io_steps=3", "--out", str(tmp_path / "x")]) != 0
    with pytest.raises(SynthgenError, match="is a registration network.*--method net:"):
        load_feature_module(runs["tuned"] / "features.pt")
