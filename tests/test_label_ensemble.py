"""The label-ensemble engine end to end: determinism, storage modes, banks, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from synthgen import open_dataset
from synthgen.cli import main
from synthgen.engines import get_engine
from synthgen.errors import SynthgenError
from synthgen.runner import generate

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SIZE = 48


def make(out: Path, store: str, n: int = 4, **config) -> Path:
    generate(get_engine("label-ensemble", size=SIZE, store=store, **config), str(out), n, seed=1,
             shard_size=2, backend="local", progress=False)
    return out


@pytest.fixture(scope="module")
def both_modes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("modes")
    return make(root / "views.zarr", "views"), make(root / "labels.zarr", "labels")


def test_sample_is_deterministic_and_well_formed() -> None:
    engine = get_engine("label-ensemble", size=SIZE)
    first, again, other = engine.sample(5, 3), engine.sample(5, 3), engine.sample(5, 4)
    assert set(first) == {"labels", "view1", "view2"}
    for name, spec in engine.schema.items():
        assert first[name].dtype == getattr(torch, spec.dtype) and tuple(first[name].shape) == spec.shape
        assert torch.equal(first[name], again[name])
    assert not torch.equal(first["labels"], other["labels"])
    present = torch.unique(first["labels"])
    assert present[0] == 0 and len(present) >= 10, "a label ensemble holds many templates"
    for view in ("view1", "view2"):
        assert 0.0 <= float(first[view].min()) and float(first[view].max()) <= 1.0
    assert not torch.equal(first["view1"], first["view2"]), "the two views have independent appearance"


def test_views_follow_the_labels() -> None:
    """Within a large label region a view varies far less than across labels (GMM per label)."""
    sample = get_engine("label-ensemble", size=SIZE).sample(0, 7)
    labels, view = sample["labels"].long(), sample["view1"].float()
    sizes = torch.bincount(labels.flatten())
    big = [k for k in torch.argsort(sizes, descending=True)[:6].tolist() if k != 0][:4]
    means = torch.stack([view[labels == k].mean() for k in big])
    within = torch.stack([view[labels == k].std() for k in big]).mean()
    assert float(means.std()) > 0 and float(within) < float(view.std())


def test_labels_store_rederives_identical_views_at_a_fraction_of_the_bytes(
        both_modes: tuple[Path, Path]) -> None:
    views_path, labels_path = both_modes
    views, labels = open_dataset(str(views_path)), open_dataset(str(labels_path))
    assert set(labels.info.schema) == {"labels"} and set(labels.derived_schema) == {"view1", "view2"}
    assert labels.info.config["templates_fingerprint"] == views.info.config["templates_fingerprint"]
    for index in range(len(views)):
        stored, derived = views[index], labels.sample_with_derived(index)
        np.testing.assert_array_equal(stored["labels"], derived["labels"])
        for view in ("view1", "view2"):
            np.testing.assert_array_equal(stored[view], derived[view])  # same device: bit-identical
    ratio = views.objects.disk_usage() / labels.objects.disk_usage()
    assert ratio > 10, f"labels-only storage should be far smaller, got ratio {ratio:.1f}"


def test_info_reports_bytes_per_sample_and_derived_fields(capsys: pytest.CaptureFixture[str],
                                                          both_modes: tuple[Path, Path]) -> None:
    views_path, labels_path = both_modes
    assert main(["info", str(labels_path)]) == 0
    out = capsys.readouterr().out
    assert "per sample:" in out and "derived" in out and "view1" in out
    assert "storage:     --store labels" in out and "--store views" in out
    assert main(["info", str(views_path)]) == 0
    assert "view2" in capsys.readouterr().out


def test_preview_shows_labels_and_both_views(tmp_path: Path, both_modes: tuple[Path, Path]) -> None:
    from PIL import Image

    _, labels_path = both_modes
    out = tmp_path / "preview.png"
    assert main(["preview", str(labels_path), "--samples", "0:2", "--out", str(out)]) == 0
    image = np.asarray(Image.open(out))
    assert image.shape[1] > image.shape[0], "3 fields x 3 planes side by side"


@pytest.mark.skipif(not (SHARED_DATA / "totalsegmentator-mini").exists(), reason="shared data absent")
def test_totalsegmentator_bank_drives_the_engine(tmp_path: Path) -> None:
    from synthgen.templates import build_from_totalsegmentator, open_bank

    bank_path = tmp_path / "ts.zarr"
    build_from_totalsegmentator(str(SHARED_DATA / "totalsegmentator-mini"), str(bank_path), spacing=3.0,
                                workers=1, progress=False)
    bank = open_bank(str(bank_path))
    engine = get_engine("label-ensemble", size=SIZE, templates=str(bank_path))
    assert engine.config_dict()["templates_fingerprint"] == bank.fingerprint
    assert engine.spacing == pytest.approx((3.0 * 128 / SIZE,) * 3)
    labels = engine.sample(0, 0)["labels"]
    assert len(torch.unique(labels)) >= 10


@pytest.mark.parametrize("config, needle", [
    ({"min_templates": 30, "max_templates": 20}, "min_templates <= max_templates"),
    ({"min_templates": 0}, "min_templates <= max_templates"),
    ({"store": "everything"}, "store must be one of views, labels"),
    ({"size": 16}, "size must be an integer >= 32"),
    ({"min_templates": 100000, "max_templates": 100000}, "max_templates must be <= 65533"),
])
def test_bad_config_is_one_line(config: dict, needle: str) -> None:
    with pytest.raises(SynthgenError, match=needle):
        get_engine("label-ensemble", **config)


def test_bad_bank_and_too_few_templates_refused_before_writing(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    not_a_bank = tmp_path / "nothing"
    not_a_bank.mkdir()
    out = tmp_path / "never.zarr"
    base = ["generate", "--engine", "label-ensemble", "--n", "2", "--size", "32", "--backend", "local",
            "--quiet", "--out", str(out)]
    assert main(base + ["--templates", str(not_a_bank)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not a synthgen template bank" in err
    assert main(base + ["--set", "min_templates=100000", "--set", "max_templates=100000"]) == 2
    assert main(base + ["--set", "min_templates=5000", "--set", "max_templates=5000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "exceeds the" in err[-1] and "templates of bank default" in err[-1]
    assert not out.exists()
