"""synthgen.templates: banks built from real TotalSegmentator masks and SynthSeg label maps,
the procedural default bank, reading, summaries, and every bad input."""

from __future__ import annotations

import os
import pickle
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import zarr
from PIL import Image
from scipy import ndimage

from synthgen.errors import SynthgenError
from synthgen.templates import (build_from_label_maps, build_from_sources, build_from_totalsegmentator, default_bank,
                                open_bank, render_bank_preview, summarize_bank)
from synthgen.templates import jobs
from synthgen.templates.default import default_bank_path
from synthgen.templates.layout import PARTS_DIR, SHARD_KEY, packed_size, part_key
from synthgen.templates.masks import resample
from synthgen.templates.procedural import FAMILIES, MAX_SIDE
from synthgen.templates.totalsegmentator import template_name

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TOTALSEG = SHARED_DATA / "totalsegmentator-mini"
LABEL_MAPS = SHARED_DATA / "synthseg-label-maps"
SUBJECTS = ("s0001", "s0002", "s0003-mr")


def need(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(f"shared test data {path} is absent (it lives beside the project, see shared/data/README.md)")
    return path


def tree_bytes(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def tree_state(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in path.rglob("*") if p.is_file()}


def source_masks(subject: str) -> dict[str, np.ndarray]:
    """organ -> bool mask (native grid) of one TotalSegmentator-mini subject."""
    folder = TOTALSEG / subject / "segmentations"
    return {f.name[:-7]: np.asanyarray(nib.load(f).dataobj) != 0 for f in sorted(folder.glob("*.nii.gz"))}


def assert_one_line_error(excinfo: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def link_subjects(dst: Path, subjects: tuple[str, ...]) -> Path:
    dst.mkdir()
    for subject in subjects:
        (dst / subject).symlink_to(need(TOTALSEG) / subject)
    return dst


def write_nifti(path: Path, data: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), str(path))
    return path


# ---------------------------------------------------------------- TotalSegmentator bank


@pytest.fixture(scope="module")
def ts_build(tmp_path_factory: pytest.TempPathFactory):
    """The TotalSegmentator-mini bank at 1.5 mm, built by a pool of 2 worker processes."""
    out = tmp_path_factory.mktemp("ts") / "bank.zarr"
    report = build_from_totalsegmentator(need(TOTALSEG), out, spacing=1.5, workers=2, progress=False)
    return out, report


def test_totalsegmentator_bank_merges_ribs_and_vertebrae_and_drops_empty_masks(ts_build):
    out, report = ts_build
    bank = open_bank(str(out))
    assert bank.subjects == SUBJECTS and report.subjects_built == 3 and report.templates_total == len(bank)
    assert bank.source == "totalsegmentator" and bank.spacing == (1.5, 1.5, 1.5)
    names = {str(n) for n in bank.entries.name}
    assert not any(n.startswith(("rib_", "vertebrae_")) for n in names)
    expected_empty = 0
    for subject in SUBJECTS:
        masks = source_masks(subject)
        present = {template_name(organ) for organ, m in masks.items() if m.any()}
        expected_empty += sum(not m.any() for m in masks.values())
        got = [str(n) for n, s in zip(bank.entries.name, bank.entries.subject) if s == subject]
        assert len(got) == len(set(got)) and set(got) == present, subject
        has_ribs = any(m.any() for organ, m in masks.items() if organ.startswith("rib_"))
        assert ("all_ribs" in got) == has_ribs
        assert ("all_vertebrae" in got) == any(m.any() for o, m in masks.items() if o.startswith("vertebrae_"))
    assert {"all_ribs" in [str(n) for n, s in zip(bank.entries.name, bank.entries.subject) if s == x]
            for x in ("s0001", "s0002")} == {True}
    assert report.masks_empty == expected_empty and report.masks_vanished == 0


def test_templates_are_non_empty_tight_and_match_the_index(ts_build):
    bank = open_bank(str(ts_build[0]))
    for i, mask in enumerate(bank.masks(range(len(bank)))):
        entry = bank.entries[i]
        assert mask.dtype == bool and mask.shape == entry.shape
        assert mask.sum() == entry.voxels > 0
        for axis in range(3):
            assert np.take(mask, 0, axis=axis).any() and np.take(mask, -1, axis=axis).any(), (entry, axis)


def test_merged_ribs_are_the_union_of_rib_masks_on_the_native_grid(tmp_path):
    src = link_subjects(tmp_path / "src", ("s0001",))
    build_from_totalsegmentator(src, tmp_path / "bank", spacing=None, workers=1, progress=False)
    bank = open_bank(str(tmp_path / "bank"))
    masks = source_masks("s0001")
    ribs = np.any([m for organ, m in masks.items() if organ.startswith("rib_")], axis=0)
    (i,) = np.flatnonzero(bank.entries.name == "all_ribs")
    box = ndimage.find_objects(ribs.astype(np.uint8))[0]
    assert np.array_equal(bank.mask(i), ribs[box])
    assert bank.spacing == (3.0, 3.0, 3.0)


def test_resampling_keeps_physical_extent(tmp_path, ts_build):
    """s0002 is 0.98 x 0.98 x 2 mm: its liver at native spacing and at 1.5 mm spans the same mm."""
    src = link_subjects(tmp_path / "src", ("s0002",))
    build_from_totalsegmentator(src, tmp_path / "native", spacing=None, workers=1, progress=False)
    native, resampled = open_bank(str(tmp_path / "native")), open_bank(str(ts_build[0]))

    def liver(bank):
        (i,) = np.flatnonzero((bank.entries.name == "liver") & (bank.entries.subject == "s0002"))
        return bank.entries[i]

    before, after = liver(native), liver(resampled)
    assert before.spacing == pytest.approx((0.9765625, 0.9765625, 2.0))
    extent_before = np.multiply(before.shape, before.spacing)
    extent_after = np.multiply(after.shape, after.spacing)
    assert np.all(np.abs(extent_after - extent_before) <= 1.5 * 1.5), (extent_before, extent_after)
    volume_before = before.voxels * np.prod(before.spacing)
    assert after.voxels * 1.5 ** 3 == pytest.approx(volume_before, rel=0.05)


def test_resample_keeps_a_box_and_a_ball_volume():
    cube = np.ones((10, 10, 10), dtype=bool)
    up = resample(cube, (3.0, 3.0, 3.0), 1.5)  # same 30 mm extent; trilinear rounds off the 8 corners
    expected = np.ones((20, 20, 20), dtype=bool)
    expected[::19, ::19, ::19] = False
    assert np.array_equal(up, expected)
    grid = np.indices((41, 41, 41)) - 20
    ball = (grid ** 2).sum(axis=0) <= 18 ** 2
    down = resample(ball, (1.0, 1.0, 1.0), 2.5)
    assert down.shape == (16, 16, 16)
    assert down.sum() * 2.5 ** 3 == pytest.approx(ball.sum(), rel=0.05)


def test_rerun_skips_every_subject_and_leaves_the_bank_untouched(ts_build):
    out, first = ts_build
    before = tree_state(out)
    report = build_from_totalsegmentator(TOTALSEG, out, spacing=1.5, workers=2, progress=False)
    assert report.subjects_built == 0 and report.subjects_skipped == 3 and report.templates_added == 0
    assert report.fingerprint == first.fingerprint and tree_state(out) == before


def test_interrupted_build_leaves_a_consistent_bank_and_resumes(tmp_path, monkeypatch, ts_build):
    out = tmp_path / "bank.zarr"
    extract = jobs.EXTRACTORS["totalsegmentator"]

    def crash_on_third(files, target):
        if "s0003-mr" in files[0]:
            raise RuntimeError("worker crashed")
        return extract(files, target)

    monkeypatch.setitem(jobs.EXTRACTORS, "totalsegmentator", crash_on_third)
    with pytest.raises(RuntimeError, match="worker crashed"):
        build_from_totalsegmentator(TOTALSEG, out, workers=1, progress=False)
    monkeypatch.undo()
    bank = open_bank(str(out))
    assert bank.subjects == ("s0001", "s0002")
    assert all(m.sum() == v for m, v in zip(bank.masks(range(len(bank))), bank.entries.voxels))
    # a part half-written by a killed worker: invisible to readers, deleted by the next build
    leftover = out / PARTS_DIR / "s0003-mr-leftover"
    shutil.copytree(next(p for p in (out / PARTS_DIR).iterdir() if p.is_dir()), leftover)
    (leftover / SHARD_KEY).write_bytes((leftover / SHARD_KEY).read_bytes()[:100])
    assert open_bank(str(out)).fingerprint == bank.fingerprint
    report = build_from_totalsegmentator(TOTALSEG, out, workers=1, progress=False)
    assert report.subjects_built == 1 and report.subjects_skipped == 2
    assert not leftover.exists()
    # same templates, same order, same bytes as the uninterrupted 2-worker build
    assert report.fingerprint == ts_build[1].fingerprint
    resumed = open_bank(str(out))
    assert all(m.sum() == v for m, v in zip(resumed.masks(range(len(resumed))), resumed.entries.voxels))


def test_reading_matches_zarr_and_survives_pickling(ts_build):
    out = ts_build[0]
    bank = open_bank(str(out))
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(bank), 30).tolist()
    started = time.perf_counter()
    fast = bank.masks(ids)
    elapsed_ms = (time.perf_counter() - started) * 1e3
    print(f"30 random templates read in {elapsed_ms:.1f} ms (first touch of their parts included)")
    for i, mask in zip(ids[:5], fast[:5]):  # plain zarr-python decodes the same bits
        entry = bank.entries[i]
        part = zarr.open_array(str(out / PARTS_DIR / part_key(entry.subject)), mode="r")
        start = int(bank.entries.offset[i])
        bits = np.unpackbits(part[start:start + packed_size(int(np.prod(entry.shape)))],
                             count=int(np.prod(entry.shape)))
        assert np.array_equal(bits.reshape(entry.shape).view(bool), mask)
    clone = pickle.loads(pickle.dumps(bank))
    assert clone.fingerprint == bank.fingerprint and np.array_equal(clone.mask(ids[0]), fast[0])
    with pytest.raises(IndexError):
        bank.mask(len(bank))


def test_changed_or_damaged_bank_is_refused(tmp_path, ts_build):
    out = tmp_path / "copy.zarr"
    shutil.copytree(ts_build[0], out)
    with pytest.raises(SynthgenError) as excinfo:
        open_bank(str(out), fingerprint="0" * 64)
    assert_one_line_error(excinfo, "has changed")
    shard = next((out / PARTS_DIR).glob(f"*/{SHARD_KEY}"))
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(bytes(data))
    bank = open_bank(str(out))
    with pytest.raises(SynthgenError) as excinfo:
        bank.masks(range(len(bank)))
    assert_one_line_error(excinfo, "damaged")


def test_summary_and_preview(tmp_path, ts_build):
    bank = open_bank(str(ts_build[0]))
    text = summarize_bank(bank)
    assert f"{len(bank)} templates" in text and "totalsegmentator" in text and "1.5x1.5x1.5 mm" in text
    assert "all_ribs" in text and "foreground voxels" in text and "bbox side, mm" in text
    png = render_bank_preview(bank, str(tmp_path / "ts.png"), count=20)
    with Image.open(png) as image:
        assert image.mode == "RGB" and image.width > 500 and image.height > 300


# ---------------------------------------------------------------- label maps


def test_label_maps_give_one_template_per_label_per_map(tmp_path):
    src = tmp_path / "maps"
    src.mkdir()
    chosen = sorted(need(LABEL_MAPS).glob("*.nii.gz"))[:2]
    for path in chosen:
        (src / path.name).symlink_to(path)
    report = build_from_label_maps(src, tmp_path / "bank", workers=1, progress=False)
    bank = open_bank(str(tmp_path / "bank"))
    assert bank.source == "label-maps" and bank.spacing == (1.0, 1.0, 1.0)
    assert bank.subjects == tuple(p.name[:-7] for p in chosen)
    for path in chosen:
        labels = np.asanyarray(nib.load(path).dataobj).astype(np.int32)
        values, counts = np.unique(labels[labels != 0], return_counts=True)
        mine = bank.entries.subject == path.name[:-7]
        assert sorted(bank.entries.name[mine].tolist()) == sorted(str(v) for v in values)
        expected = dict(zip((str(v) for v in values), counts))
        assert {str(n): int(v) for n, v in zip(bank.entries.name[mine], bank.entries.voxels[mine])} == expected
    assert report.templates_total == len(bank) > 100


def test_a_combined_bank_holds_exactly_the_templates_of_its_sources(tiny_source, tmp_path):
    labels = np.zeros((9, 9, 9), dtype=np.int16)
    labels[1:4, 2:7, 2:5] = 2
    labels[5:8, 1:3, 4:9] = 41
    write_nifti(tmp_path / "maps" / "brain.nii.gz", labels, (2.0, 2.0, 2.0))
    sources = {"totalsegmentator": tiny_source, "label-maps": tmp_path / "maps"}
    report = build_from_sources(tmp_path / "both", sources, spacing=1.5, workers=1, progress=False)
    build_from_totalsegmentator(tiny_source, tmp_path / "ts", spacing=1.5, workers=1, progress=False)
    build_from_label_maps(tmp_path / "maps", tmp_path / "lm", spacing=1.5, workers=1, progress=False)
    both, ts, lm = (open_bank(str(tmp_path / name)) for name in ("both", "ts", "lm"))
    assert both.source == "totalsegmentator+label-maps" and both.subjects == ("a", "brain")
    assert report.templates_total == len(both) == len(ts) + len(lm) == 3
    singles = {(str(e.subject[i]), str(e.name[i])): bank.mask(i) for bank in (ts, lm)
               for e in [bank.entries] for i in range(len(bank))}
    combined = {(str(both.entries.subject[i]), str(both.entries.name[i])): both.mask(i) for i in range(len(both))}
    assert combined.keys() == singles.keys() == {("a", "liver"), ("brain", "2"), ("brain", "41")}
    assert all(np.array_equal(combined[k], singles[k]) for k in combined)
    again = build_from_sources(tmp_path / "both", sources, spacing=1.5, workers=1, progress=False)
    assert again.subjects_skipped == 2 and again.fingerprint == report.fingerprint
    with pytest.raises(SynthgenError) as excinfo:  # one source into a combined bank: refused, untouched
        build_from_label_maps(tmp_path / "maps", tmp_path / "both", spacing=1.5, workers=1, progress=False)
    assert_one_line_error(excinfo, "totalsegmentator+label-maps bank built with other options")
    write_nifti(tmp_path / "maps" / "a.nii.gz", labels)
    with pytest.raises(SynthgenError) as excinfo:
        build_from_sources(tmp_path / "clash", sources, workers=1, progress=False)
    assert_one_line_error(excinfo, "subject 'a' is in both the totalsegmentator source and the label-maps source")
    assert not (tmp_path / "clash").exists()


# ---------------------------------------------------------------- default bank


def test_default_bank_is_deterministic_cached_and_has_every_family(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    built, rename = [], os.rename

    def recording_rename(src, dst):  # keeps each build's bytes, whichever wins the race
        built.append(tree_bytes(Path(src)))
        rename(src, dst)

    monkeypatch.setattr(os, "rename", recording_rename)
    started = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:  # two concurrent first builds: one rename wins, both agree
        banks = list(pool.map(lambda _: default_bank(), range(2)))
    print(f"two concurrent default-bank builds took {time.perf_counter() - started:.1f} s")
    bank = banks[0]
    assert banks[1].fingerprint == bank.fingerprint and banks[1].path == bank.path
    assert len(built) == 2 and built[0] == built[1]  # same bytes at every build
    path = Path(default_bank_path())
    assert path.parent == tmp_path / "cache" / "synthgen" / "templates" and Path(bank.path) == path
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no staging folder left behind
    state = tree_state(path)
    assert default_bank().fingerprint == bank.fingerprint and tree_state(path) == state  # cached, not rebuilt
    assert tree_bytes(path) == built[0]
    assert bank.source == "procedural" and bank.spacing == (1.5, 1.5, 1.5)
    names = bank.entries.name.astype(str)
    assert {n: int((names == n).sum()) for n in FAMILIES} == {n: c for n, (_, c) in FAMILIES.items()}
    assert 200 <= len(bank) <= 400
    shapes = bank.entries.shape
    assert shapes.min() >= 3 and shapes.max() <= MAX_SIDE and np.median(shapes) > 20
    fill = bank.entries.voxels / shapes.prod(axis=1)
    assert np.median(fill[names == "shell"]) < 0.25 < np.median(fill[names == "blob"])  # shells are hollow
    elongation = shapes.max(axis=1) / shapes.min(axis=1)
    assert np.median(elongation[names == "plate"]) > 3 and np.median(elongation[names == "spine"]) > 3
    spine = bank.mask(int(np.flatnonzero(names == "spine")[0]))
    assert ndimage.label(spine)[1] >= 4  # separate vertebra-like segments


def test_default_bank_cache_must_be_writable(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    with pytest.raises(SynthgenError) as excinfo:
        default_bank()
    assert_one_line_error(excinfo, "XDG_CACHE_HOME")


# ---------------------------------------------------------------- bad input


@pytest.fixture()
def tiny_source(tmp_path: Path) -> Path:
    """A TotalSegmentator-layout folder with one valid subject of 8^3 masks."""
    mask = np.zeros((8, 8, 8), dtype=np.uint8)
    mask[2:5, 3:6, 1:7] = 1
    write_nifti(tmp_path / "src" / "a" / "segmentations" / "liver.nii.gz", mask, (2.0, 2.0, 2.0))
    write_nifti(tmp_path / "src" / "a" / "segmentations" / "spleen.nii.gz", np.zeros_like(mask), (2.0, 2.0, 2.0))
    return tmp_path / "src"


def test_missing_or_empty_source_is_refused(tmp_path):
    out = tmp_path / "bank"
    with pytest.raises(SynthgenError) as excinfo:
        build_from_totalsegmentator(tmp_path / "nowhere", out, progress=False)
    assert_one_line_error(excinfo, "does not exist")
    (tmp_path / "empty" / "s1" / "segmentations").mkdir(parents=True)
    with pytest.raises(SynthgenError) as excinfo:
        build_from_totalsegmentator(tmp_path / "empty", out, progress=False)
    assert_one_line_error(excinfo, "holds no TotalSegmentator masks")
    with pytest.raises(SynthgenError) as excinfo:
        build_from_label_maps(tmp_path / "empty", out, progress=False)
    assert_one_line_error(excinfo, "holds no label maps")
    with pytest.raises(SynthgenError) as excinfo:
        build_from_label_maps(tmp_path / "nowhere", out, progress=False)
    assert_one_line_error(excinfo, "does not exist")
    assert not out.exists()


def test_unreadable_nifti_is_named_and_nothing_is_written(tiny_source, tmp_path):
    broken = tiny_source / "a" / "segmentations" / "kidney_left.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(SynthgenError) as excinfo:
        build_from_totalsegmentator(tiny_source, tmp_path / "bank", workers=1, progress=False)
    assert_one_line_error(excinfo, str(broken), "cannot read")
    assert not (tmp_path / "bank").exists()


def test_non_binary_mask_is_named_with_its_values(tiny_source, tmp_path):
    bad = np.zeros((8, 8, 8), dtype=np.float32)
    bad[1, 1, 1], bad[2, 2, 2], bad[3, 3, 3] = 1.0, 2.0, 0.5
    path = write_nifti(tiny_source / "b" / "segmentations" / "liver.nii.gz", bad)
    with pytest.raises(SynthgenError) as excinfo:
        build_from_totalsegmentator(tiny_source, tmp_path / "bank", spacing=None, workers=1, progress=False)
    assert_one_line_error(excinfo, str(path), "not binary", "0.5, 2")
    # subject "a" was committed before "b" failed: the bank is consistent, and a rerun resumes
    bank = open_bank(str(tmp_path / "bank"))
    assert bank.subjects == ("a",) and bank.mask(0).sum() == 3 * 3 * 6
    # a build that commits nothing leaves no bank (and an existing empty folder empty)
    only_b = tmp_path / "only_b"
    write_nifti(only_b / "b" / "segmentations" / "liver.nii.gz", bad)
    with pytest.raises(SynthgenError):
        build_from_totalsegmentator(only_b, tmp_path / "fresh", workers=1, progress=False)
    assert not (tmp_path / "fresh").exists()
    (tmp_path / "fresh").mkdir()
    with pytest.raises(SynthgenError):
        build_from_totalsegmentator(only_b, tmp_path / "fresh", workers=1, progress=False)
    assert list((tmp_path / "fresh").iterdir()) == []


def test_bad_label_map_values_are_refused(tmp_path):
    values = np.zeros((6, 6, 6), dtype=np.float32)
    values[1:3, 1:3, 1:3] = 2.5
    write_nifti(tmp_path / "maps" / "m.nii.gz", values)
    with pytest.raises(SynthgenError) as excinfo:
        build_from_label_maps(tmp_path / "maps", tmp_path / "bank", workers=1, progress=False)
    assert_one_line_error(excinfo, "m.nii.gz", "non-integer")
    values[1:3, 1:3, 1:3] = -1
    write_nifti(tmp_path / "maps" / "m.nii.gz", values)
    with pytest.raises(SynthgenError) as excinfo:
        build_from_label_maps(tmp_path / "maps", tmp_path / "bank", workers=1, progress=False)
    assert_one_line_error(excinfo, "m.nii.gz", "outside")
    assert not (tmp_path / "bank").exists()


def test_bad_output_paths_and_options_are_refused(tiny_source, tmp_path):
    file_out = tmp_path / "file.zarr"
    file_out.write_text("keep me")
    with pytest.raises(SynthgenError) as excinfo:
        build_from_totalsegmentator(tiny_source, file_out, progress=False)
    assert_one_line_error(excinfo, "is a file")
    assert file_out.read_text() == "keep me"
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "notes.txt").write_text("mine")
    before = tree_bytes(other)
    with pytest.raises(SynthgenError) as excinfo:
        build_from_totalsegmentator(tiny_source, other, progress=False)
    assert_one_line_error(excinfo, "is not a synthgen template bank")
    assert tree_bytes(other) == before
    for spacing in (0, -1.5, float("nan")):
        with pytest.raises(SynthgenError) as excinfo:
            build_from_totalsegmentator(tiny_source, tmp_path / "bank", spacing=spacing, progress=False)
        assert_one_line_error(excinfo, "spacing must be")
    with pytest.raises(SynthgenError) as excinfo:
        build_from_label_maps(tiny_source, tmp_path / "bank", spacing=-1, progress=False)
    assert_one_line_error(excinfo, "spacing must be")
    with pytest.raises(SynthgenError) as excinfo:
        build_from_totalsegmentator(tiny_source, tmp_path / "bank", workers=0, progress=False)
    assert_one_line_error(excinfo, "workers")
    assert not (tmp_path / "bank").exists()
    build_from_totalsegmentator(tiny_source, tmp_path / "bank", spacing=1.0, workers=1, progress=False)
    before = tree_bytes(tmp_path / "bank")
    with pytest.raises(SynthgenError) as excinfo:
        build_from_totalsegmentator(tiny_source, tmp_path / "bank", spacing=2.0, workers=1, progress=False)
    assert_one_line_error(excinfo, "other options", "spacing 1.0, not 2.0")
    maps = tmp_path / "maps"
    write_nifti(maps / "m.nii", np.arange(27, dtype=np.int16).reshape(3, 3, 3) % 3)
    with pytest.raises(SynthgenError) as excinfo:
        build_from_label_maps(maps, tmp_path / "bank", spacing=1.0, workers=1, progress=False)
    assert_one_line_error(excinfo, "source totalsegmentator, not label-maps")
    assert tree_bytes(tmp_path / "bank") == before


def test_open_bank_refuses_what_is_not_a_bank(tmp_path):
    for path in (tmp_path, tmp_path / "missing"):
        with pytest.raises(SynthgenError) as excinfo:
            open_bank(str(path))
        assert_one_line_error(excinfo, f"{path} is not a synthgen template bank", "synthgen templates build")
