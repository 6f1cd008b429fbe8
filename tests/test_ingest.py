"""`synthgen ingest`: real volumes (shared/data) onto one grid, in the same store as synthetic data."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from registration.datasets import load_pair, read_pairs
from registration.datasets.volumes import read_image
from synthgen import open_dataset
from synthgen.cli import main
from synthgen.errors import SynthgenError
from synthgen.export import export_sample
from synthgen.ingest.run import ingest, ingest_pairs
from synthgen.ingest.volume import normalise
from synthgen.stream import ShardStream
from tests.conftest import shard_bytes
from tests.helpers import run_main
from tests.ray_processes import fresh_shell_env, home_with_token, stop_ray_processes

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNI = SHARED / "mni"
PROSTATE = SHARED / "prostate-mr-us"
CLI = [sys.executable, "-m", "synthgen.cli"]

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="shared data absent (see shared/data/README.md)")


def link(folder: Path, files: dict[str, Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, target in files.items():
        (folder / name).symlink_to(target)
    return folder


def percentile_normalised(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(path)
    data = np.asanyarray(image.dataobj).astype(np.float32)
    lo, hi = np.percentile(data, [1, 99])
    return np.clip((data - lo) / (hi - lo), 0, 1), image.affine


def sampled_at_output_voxels(source: np.ndarray, source_affine: np.ndarray, out_affine: np.ndarray,
                             shape: tuple[int, ...], order: int) -> np.ndarray:
    """The oracle: scipy's interpolation of the source at the world points of the output voxels."""
    out_voxels = np.indices(shape).reshape(3, -1)
    world = out_affine[:3, :3] @ out_voxels + out_affine[:3, 3:]
    inverse = np.linalg.inv(source_affine)
    source_voxels = inverse[:3, :3] @ world + inverse[:3, 3:]
    return ndimage.map_coordinates(source, source_voxels, order=order, mode="constant", cval=0).reshape(shape)


@pytest.fixture(scope="module")
def mni_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mni")
    images = link(root / "images", {"mni.nii.gz": MNI / "mni.nii.gz"})
    labels = link(root / "labels", {"mni.nii.gz": MNI / "mnia.nii.gz"})
    out = root / "mni.zarr"
    ingest(str(images), str(out), labels=str(labels), size=(96, 112, 96), spacing=2.0, backend="local",
           progress=False)
    return out


def test_mni_lands_on_a_ras_grid_as_scipy_resamples_it(mni_dataset: Path) -> None:
    dataset = open_dataset(str(mni_dataset))
    sample = dataset[0]
    affine = sample["affine"]
    assert dataset.info.shape == (96, 112, 96) and dataset.info.spacing == (2.0, 2.0, 2.0)
    assert nib.aff2axcodes(affine) == ("R", "A", "S")
    assert np.allclose(np.abs(affine[:3, :3]), np.eye(3) * 2.0)
    source, source_affine = percentile_normalised(MNI / "mni.nii.gz")
    centre_in = source_affine @ [*((np.array(source.shape) - 1) / 2), 1]
    centre_out = affine @ [*((np.array(sample["image"].shape) - 1) / 2), 1]
    assert np.allclose(centre_in, centre_out)  # crop/pad about the volume centre
    expected = sampled_at_output_voxels(source, source_affine, affine, dataset.info.shape, order=1)
    assert sample["image"].dtype == np.float16
    assert np.abs(sample["image"].astype(np.float32) - expected).max() < 2e-3
    atlas = np.asanyarray(nib.load(MNI / "mnia.nii.gz").dataobj).astype(np.int64)
    nearest = sampled_at_output_voxels(atlas, source_affine, affine, dataset.info.shape, order=0)
    assert sample["labels"].dtype == np.uint8 and set(np.unique(sample["labels"])) == set(np.unique(nearest))
    assert (sample["labels"] == nearest).mean() > 0.999  # nearest-neighbour ties may break the other way


def test_an_lps_stored_copy_and_nrrd_mha_copies_give_the_same_sample(mni_dataset: Path, tmp_path: Path) -> None:
    image = nib.load(MNI / "mni.nii.gz")
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = np.array(image.shape[:2]) - 1  # voxel i -> n - 1 - i along axes 0 and 1
    data = np.asanyarray(image.dataobj)[::-1, ::-1]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), image.affine @ flip), tmp_path / "flipped.nii.gz")
    itk_image = sitk.ReadImage(str(MNI / "mni.nii.gz"))  # ITK's own NIfTI -> LPS geometry
    for suffix in (".nrrd", ".mha"):
        sitk.WriteImage(itk_image, str(tmp_path / f"copy_{suffix[1:]}{suffix}"))
        array, affine, zooms = read_image(tmp_path / f"copy_{suffix[1:]}{suffix}", "volume copy")
        assert np.array_equal(array, np.asanyarray(image.dataobj).astype(np.float32))
        assert np.allclose(affine, image.affine, atol=1e-4) and np.allclose(zooms, image.header.get_zooms())
    out = tmp_path / "copies.zarr"
    ingest(str(tmp_path / "*.*"), str(out), size=(96, 112, 96), spacing=2.0, backend="local", progress=False)
    copies = open_dataset(str(out))
    original = open_dataset(str(mni_dataset))[0]
    assert [s["name"] for s in copies.info.config["sources"]] == ["copy_mha", "copy_nrrd", "flipped"]
    for k in range(3):
        sample = copies[k]
        assert np.allclose(sample["affine"], original["affine"], atol=1e-4)
        assert np.abs(sample["image"].astype(np.float32) - original["image"].astype(np.float32)).max() < 2e-3


def test_export_puts_the_sample_back_in_scanner_space(mni_dataset: Path, tmp_path: Path) -> None:
    dataset = open_dataset(str(mni_dataset))
    paths = export_sample(dataset, 0, str(tmp_path / "exported"))
    assert sorted(Path(p).name for p in paths) == ["image.nii.gz", "labels.nii.gz", "sample.json"]
    exported = nib.load(tmp_path / "exported" / "image.nii.gz")
    assert np.allclose(exported.affine, dataset[0]["affine"])
    assert nib.load(tmp_path / "exported" / "labels.nii.gz").get_data_dtype() == np.uint8


def test_prostate_folders_with_4d_labels_stream_like_synthetic_data(tmp_path: Path) -> None:
    out = tmp_path / "prostate.zarr"
    report = ingest(str(PROSTATE / "moving_images"), str(out), labels=str(PROSTATE / "moving_labels"),
                    size=48, spacing=0.8, intensity="none", backend="local", shard_size=4, progress=False)
    assert report.written.samples_written == 10 and report.written.total_shards == 3
    dataset = open_dataset(str(out))
    assert dataset.verify().ok
    first = dataset[0]
    source = np.asanyarray(nib.load(PROSTATE / "moving_images" / "case000000.nii.gz").dataobj)
    assert 0 < first["image"].max() <= source.max()  # intensities kept as stored (uint8 MR)
    assert set(np.unique(first["labels"])) <= {0, 1, 2, 3} and (first["labels"] == 1).sum() > 100
    stream = ShardStream(str(out), fields=("image", "labels"), shuffle=False)
    seen = {int(batch["index"][0]): batch for batch in stream}
    assert sorted(seen) == list(range(10)) and seen[3]["image"].shape == (1, 48, 48, 48)
    assert np.array_equal(seen[3]["labels"][0].numpy(), dataset[3]["labels"])


def test_a_killed_ray_ingest_resumes_to_the_same_bytes(tmp_path: Path, ray_tmpdir: Path) -> None:
    args = ["ingest", "--images", str(PROSTATE / "fixed_images"), "--labels", str(PROSTATE / "fixed_labels"),
            "--size", "40", "--spacing", "1", "--shard-size", "1", "--workers", "2", "--quiet"]
    out = tmp_path / "killed.zarr"
    env = fresh_shell_env(ray_tmpdir, home_with_token(tmp_path / "home", None))
    proc = subprocess.Popen(CLI + args + ["--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.monotonic() + 120
    while len(list((out / "_commits").glob("shard-*.json"))) < 2 and time.monotonic() < deadline \
            and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    stop_ray_processes(ray_tmpdir)
    done = len(list((out / "_commits").glob("shard-*.json")))
    assert 2 <= done < 10, f"the run should have been killed part-way, had {done} commits"
    rerun = subprocess.run(CLI + args + ["--out", str(out)], capture_output=True, text=True, env=env)
    assert rerun.returncode == 0 and f"{done} already committed" in rerun.stdout, rerun.stderr
    reference = tmp_path / "reference.zarr"
    ingest(str(PROSTATE / "fixed_images"), str(reference), labels=str(PROSTATE / "fixed_labels"), size=40,
           spacing=1.0, shard_size=1, backend="local", progress=False)
    assert shard_bytes(out) == shard_bytes(reference)


def test_a_changed_source_file_is_refused_on_resume(tmp_path: Path) -> None:
    images = link(tmp_path / "images", {f"case{k}.nii.gz": PROSTATE / "moving_images" / f"case00000{k}.nii.gz"
                                        for k in range(2)})
    out = tmp_path / "two.zarr"
    ingest(str(images), str(out), size=32, backend="local", shard_size=1, progress=False)
    sorted((out / "_commits").glob("shard-*.json"))[-1].unlink()
    (images / "case1.nii.gz").unlink()
    (images / "case1.nii.gz").symlink_to(PROSTATE / "moving_images" / "case000005.nii.gz")
    with pytest.raises(SynthgenError) as excinfo:  # the new SHA-256 changes the dataset's identity
        ingest(str(images), str(out), size=32, backend="local", shard_size=1, progress=False)
    assert "\n" not in str(excinfo.value) and "--overwrite" in str(excinfo.value)


@pytest.mark.parametrize("argv, needle", [
    (("--images", "{tmp}/empty"), "names no volume files"),
    (("--images", "{tmp}/bad.csv"), "has no image column"),
    (("--images", "{tmp}/mismatch.csv"), "has shape (44, 59, 41) but its image has (64, 64, 60)"),
    (("--images", str(PROSTATE / "fixed_images"), "--labels", "{tmp}/empty"), "--labels"),
    (("--images", str(PROSTATE / "fixed_images"), "--size", "0"), "size"),
    (("--images", str(PROSTATE / "fixed_images"), "--size", "1,2"), "--size"),
    (("--images", str(PROSTATE / "fixed_images"), "--intensity", "percentile:99,1"), "intensity"),
    (("--images", str(PROSTATE / "fixed_images"), "--reorient", "RAR"), "orientation"),
])
def test_bad_input_is_one_line_and_writes_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  argv: tuple[str, ...], needle: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.csv").write_text("img,labels\na.nii.gz,b.nii.gz\n")
    (tmp_path / "mismatch.csv").write_text(f"image,labels\n{PROSTATE / 'moving_images' / 'case000000.nii.gz'},"
                                           f"{PROSTATE / 'fixed_labels' / 'case000000.nii.gz'}\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run_main(main, capsys, "ingest", *args, "--out", str(tmp_path / "out.zarr"), "--backend",
                            "local", "--quiet")
    assert code != 0 and len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err, err
    assert not (tmp_path / "out.zarr").exists()  # every check runs before anything is written


def test_totalsegmentator_subjects_become_one_label_numbering(tmp_path: Path) -> None:
    root = SHARED / "totalsegmentator-mini"
    out = tmp_path / "ts.zarr"
    ingest(str(root), str(out), size=64, spacing=3.0, intensity="ct:-450,450", backend="local", progress=False)
    dataset = open_dataset(str(out))
    config = dataset.info.config
    assert [s["name"] for s in config["sources"]] == ["s0001", "s0002", "s0003-mr"]
    every = sorted({p.name[:-7] for p in root.glob("s*/segmentations/*.nii.gz")})
    assert config["label_names"] == every and config["label_dtype"] == "uint8"
    sample = dataset[0]
    liver = every.index("liver") + 1
    mask = nib.load(root / "s0001" / "segmentations" / "liver.nii.gz")
    nearest = sampled_at_output_voxels(np.asanyarray(mask.dataobj).astype(np.float32), mask.affine,
                                       sample["affine"], (64, 64, 64), order=0) > 0
    assert nearest.sum() > 300 and ((sample["labels"] == liver) == nearest).mean() > 0.999


def test_a_learn2reg_dataset_json_lists_the_training_volumes(tmp_path: Path) -> None:
    folder = link(tmp_path / "task", {"imagesTr": PROSTATE / "moving_images", "labelsTr": PROSTATE / "moving_labels"})
    entries = [{"image": f"./imagesTr/case00000{k}.nii.gz", "label": f"./labelsTr/case00000{k}.nii.gz"}
               for k in (4, 2)]
    (folder / "dataset.json").write_text(json.dumps({"name": "prostate", "training": entries}))
    out = tmp_path / "l2r.zarr"
    ingest(str(folder / "dataset.json"), str(out), size=32, spacing=1.2, backend="local", progress=False)
    sources = open_dataset(str(out)).info.config["sources"]
    assert [s["name"] for s in sources] == ["case000004", "case000002"]
    assert sources[0]["labels"] == str(folder / "labelsTr" / "case000004.nii.gz")


def test_skip_bad_ingests_the_good_volumes_and_lists_the_bad_ones(capsys: pytest.CaptureFixture[str],
                                                                   tmp_path: Path) -> None:
    images = link(tmp_path / "images", {f"case{k}.nii.gz": PROSTATE / "moving_images" / f"case00000{k}.nii.gz"
                                        for k in range(3)})
    labels = link(tmp_path / "labels", {"case0.nii.gz": PROSTATE / "moving_labels" / "case000000.nii.gz",
                                        "case1.nii.gz": PROSTATE / "fixed_labels" / "case000001.nii.gz",  # off-grid
                                        "case2.nii.gz": PROSTATE / "moving_labels" / "case000002.nii.gz",
                                        "case3.nii.gz": PROSTATE / "moving_labels" / "case000003.nii.gz"})
    whole = (PROSTATE / "moving_images" / "case000003.nii.gz").read_bytes()
    (images / "case3.nii.gz").write_bytes(whole[: len(whole) // 2])  # truncated: the header reads, the voxels not
    args = ["ingest", "--images", str(images), "--labels", str(labels), "--size", "32", "--backend", "local",
            "--quiet", "--out", str(tmp_path / "out.zarr")]
    code, _, err = run_main(main, capsys, *args)
    assert code != 0 and "case1" in err and "has shape (44, 59, 41)" in err  # stops at the first bad volume
    assert not (tmp_path / "out.zarr").exists()
    code, out, err = run_main(main, capsys, *args, "--skip-bad")
    assert code == 0 and "skipped 2 bad volume(s)" in out, err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "volume case1: labels" in lines[0] and "volume case3: image" in lines[1], err
    assert [s["name"] for s in open_dataset(str(tmp_path / "out.zarr")).info.config["sources"]] == ["case0", "case2"]


def test_pairs_are_the_harness_pairs_on_the_dataset_grid(tmp_path: Path) -> None:
    pairs = Path(__file__).resolve().parents[1] / "benchmarks" / "registration" / "pairs" / "oasis.csv"
    out = tmp_path / "oasis.zarr"
    report = ingest_pairs(str(pairs), str(out), size=(160, 192, 144), spacing=1.0, orientation="none",
                          backend="local", progress=False)
    assert report.written.samples_written == 2 and not report.skipped
    dataset = open_dataset(str(out))
    assert list(dataset.info.schema) == ["fixed", "moving", "fixed_labels", "moving_labels", "affine"]
    for k, spec in enumerate(read_pairs(pairs)):
        pair, sample = load_pair(spec), dataset[k]  # the fixed grid is the dataset's grid here
        for side in ("fixed", "moving"):
            expected = normalise(getattr(pair, side).numpy(), "percentile:1,99", "test")
            assert np.abs(sample[side].astype(np.float32) - expected).max() < 1e-3
            assert np.array_equal(sample[f"{side}_labels"], getattr(pair, f"{side}_labels").numpy())
        assert np.allclose(sample["affine"], pair.affine)
