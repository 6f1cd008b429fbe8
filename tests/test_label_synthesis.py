"""Label-ensemble synthesis (Algorithm 1 of anatomix): placement, median, foreground, envelope."""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from skimage import morphology
from skimage.filters import median as sk_median

from synthgen.ops import affine_placement, foreground, label_ensemble as le, morphology as morph
from synthgen.ops.affine_placement import PlacementParams, place_templates
from synthgen.ops.warp import warp
from synthgen.seeding import sample_generator


def ellipsoid(d: int, h: int, w: int) -> torch.Tensor:
    axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in (d, h, w)], indexing="ij")
    return torch.from_numpy(sum(a * a for a in axes) <= 1.0)


def blob(d: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """An asymmetric binary template filling its bounding box's corners unevenly."""
    rng = np.random.default_rng(seed)
    x = ndi.gaussian_filter(rng.random((d, h, w)), 2.0)
    ramp = np.linspace(0, 0.15, d)[:, None, None]
    return torch.from_numpy(x + ramp > np.median(x + ramp))


def shell(n: int) -> torch.Tensor:
    axes = np.meshgrid(*[np.linspace(-1, 1, n)] * 3, indexing="ij")
    r = np.sqrt(sum(a * a for a in axes))
    return torch.from_numpy((r <= 1.0) & (r >= 0.7))


def tube(length: int, width: int) -> torch.Tensor:
    axes = np.meshgrid(np.linspace(-1, 1, width), np.linspace(-1, 1, width), indexing="ij")
    disc = sum(a * a for a in axes) <= 1.0
    return torch.from_numpy(np.broadcast_to(disc, (length, width, width)).copy())


def scipy_reference(templates, params, size, pad=6):
    """Full-volume reference: scipy affine_transform (order 0, mode constant) per template on a
    zero-padded copy, painted in order."""
    out = np.zeros((size,) * 3, dtype=np.int32)
    for k, (t, p) in enumerate(zip(templates, params)):
        m = p.matrix()
        n = np.asarray(t.shape, dtype=np.float64)
        centre_out = (size - 1) / 2.0 + np.asarray(p.translation)
        offset = (n - 1) / 2.0 - m @ centre_out + pad
        warped = ndi.affine_transform(np.pad(t.numpy().astype(np.uint8), pad), m, offset=offset,
                                      output_shape=(size,) * 3, order=0, mode="constant", cval=0)
        out[warped > 0] = k + 1
    return out


def near_tie(templates, params, size, voxels, tol=1e-4) -> bool:
    """Whether every given output voxel pulls back to within ``tol`` of a rounding tie (x.5)
    for at least one template."""
    ys = np.asarray(voxels, dtype=np.float64)
    ok = np.zeros(len(ys), dtype=bool)
    for t, p in zip(templates, params):
        m = p.matrix()
        centre_out = (size - 1) / 2.0 + np.asarray(p.translation)
        x = (ys - centre_out) @ m.T + (np.asarray(t.shape) - 1) / 2.0
        frac = x - np.floor(x)
        ok |= (np.abs(frac - 0.5) < tol).any(axis=1)
    return bool(ok.all())


# --------------------------------------------------------------------------- placement


@pytest.mark.parametrize("shape", [(10, 14, 20), (11, 13, 7)])
def test_identity_placement_reproduces_centred_template(shape):
    size = 64
    t = blob(*shape, seed=1)
    labels = place_templates([t], [PlacementParams()], size)
    assert labels.dtype == torch.uint8
    # Even sides are exactly centred; odd sides (no exact centre on an even grid) sit on the
    # lower of the two centre voxels, as floor(x + 0.5) rounds the half-voxel offset up.
    starts = [(size - n) // 2 for n in shape]
    box = tuple(slice(s, s + n) for s, n in zip(starts, shape))
    expected = torch.zeros((size,) * 3, dtype=torch.uint8)
    expected[box] = t.to(torch.uint8)
    assert torch.equal(labels, expected)


def test_rotation_by_90_degrees_maps_voxels_exactly():
    size = 48
    t = blob(12, 16, 20, seed=2)  # even sides: template and volume centres are both half-integers
    params = PlacementParams(rotation=(math.pi / 2, 0.0, 0.0), translation=(2.0, -3.0, 1.0))
    labels = place_templates([t], [params], size).numpy()
    # Forward map of every template voxel: y = M^-1 (x - c_T) + c_V + t, M = Rx(90 deg), exact.
    m_inv = np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]])
    x = np.argwhere(t.numpy())
    centre_t = (np.asarray(t.shape) - 1) / 2.0
    y = (x - centre_t) @ m_inv.T + (size - 1) / 2.0 + np.array([2.0, -3.0, 1.0])
    assert np.allclose(y, np.round(y))
    expected = np.zeros((size,) * 3, dtype=np.uint8)
    expected[tuple(np.round(y).astype(int).T)] = 1
    assert np.array_equal(labels, expected)
    # ... which is numpy's rot90 of the template over axes (1, 2), translated.
    rotated = np.rot90(t.numpy(), k=-1, axes=(1, 2))
    corners = np.array([[0, 0, 0], np.asarray(t.shape) - 1], dtype=np.float64)
    lo = np.round(((corners - centre_t) @ m_inv.T).min(axis=0) + (size - 1) / 2.0
                  + np.array([2.0, -3.0, 1.0])).astype(int)
    region = labels[lo[0]:lo[0] + rotated.shape[0], lo[1]:lo[1] + rotated.shape[1],
                    lo[2]:lo[2] + rotated.shape[2]]
    assert np.array_equal(region, rotated.astype(np.uint8))


def test_nothing_wraps_around():
    size = 48
    t = ellipsoid(20, 20, 20)
    params = PlacementParams(translation=(20.0, 0.0, -21.0), scale=(0.7, 0.7, 0.7))
    labels = place_templates([t], [params], size).numpy()
    assert labels[size - 1].any() and labels[:, :, 0].any()   # clipped at those faces ...
    assert not labels[:size // 2].any()                         # ... and not re-entering
    assert not labels[:, :, size // 2:].any()
    assert np.array_equal(labels, scipy_reference([t], [params], size))


def test_first_template_is_label_one_and_later_templates_overwrite():
    size = 40
    a, b = ellipsoid(16, 16, 16), ellipsoid(12, 12, 12)
    pa = PlacementParams(translation=(-3.0, 0.0, 0.0))
    pb = PlacementParams(translation=(4.0, 0.0, 0.0))
    labels = place_templates([a, b], [pa, pb], size)
    assert set(labels.unique().tolist()) == {0, 1, 2}
    only_a = place_templates([a], [pa], size) > 0
    only_b = place_templates([b], [pb], size) > 0
    assert (only_a & only_b).any()
    assert (labels[only_b] == 2).all()                 # later overwrites earlier
    assert (labels[only_a & ~only_b] == 1).all()       # the first template is 1, not background
    assert (labels[~only_a & ~only_b] == 0).all()
    # Reverse painting order: now the first one (b) is 1 and a overwrites it.
    labels = place_templates([b, a], [pb, pa], size)
    assert (labels[only_a] == 2).all() and (labels[only_b & ~only_a] == 1).all()
    # Through the top level, unconstrained: labels 1..N.
    params = le.LabelEnsembleParams((pa, pb))
    out = le.render_label_map([a, b], params, size, median=False)
    assert torch.equal(out, place_templates([a, b], [pa, pb], size))


def test_bbox_placement_matches_full_volume_scipy_reference():
    size = 64
    g = torch.Generator().manual_seed(7)
    rng = np.random.default_rng(7)
    makers = [lambda: ellipsoid(*rng.integers(10, 40, 3)), lambda: shell(int(rng.integers(16, 40))),
              lambda: tube(int(rng.integers(20, 60)), int(rng.integers(6, 14))),
              lambda: blob(*rng.integers(10, 36, 3), seed=int(rng.integers(1000)))]
    mismatched = compared = 0
    for trial in range(6):
        templates = [makers[k % 4]() for k in range(int(rng.integers(3, 9)))]
        params = [affine_placement.sample_placement_params(g, size) for _ in templates]
        ours = place_templates(templates, params, size).numpy()
        ref = scipy_reference(templates, params, size)
        bad = np.argwhere(ours != ref)
        mismatched += len(bad)
        compared += ref.size
        # Fixed-point vs float64 may only disagree where a coordinate is a rounding tie.
        assert len(bad) == 0 or near_tie(templates, params, size, bad)
    assert mismatched <= compared * 1e-5


def test_placement_box_holds_every_reachable_voxel():
    size = 64
    g = torch.Generator().manual_seed(3)
    t = torch.ones((30, 20, 10), dtype=torch.bool)
    for _ in range(20):
        p = affine_placement.sample_placement_params(g, size)
        ref = scipy_reference([t], [p], size, pad=3)
        box = affine_placement.placement_box(t.shape, p, size)
        inside = np.zeros_like(ref, dtype=bool)
        inside[box] = True
        assert not (ref.astype(bool) & ~inside).any()


def test_sampled_placement_ranges():
    g = torch.Generator().manual_seed(0)
    draws = [affine_placement.sample_placement_params(g, 64) for _ in range(2000)]
    scale = np.array([d.scale for d in draws])
    rot = np.array([d.rotation for d in draws])
    shear = np.array([d.shear for d in draws])
    trans = np.array([d.translation for d in draws])
    refl = np.array([d.reflect for d in draws])
    assert 0.5 <= scale.min() < 0.51 and 1.49 < scale.max() <= 1.5
    assert -math.pi <= rot.min() < -3.1 and 3.1 < rot.max() <= math.pi
    assert -0.5 <= shear.min() < -0.49 and 0.49 < shear.max() <= 0.5
    # the template centre anywhere over the volume: +-63.5 * 63/127 = +-31.5 voxels at 64^3
    assert -31.5 <= trans.min() < -31.4 and 31.4 < trans.max() <= 31.5
    assert abs(trans.mean()) < 1.0
    assert abs(refl.mean() - 0.5) < 0.03
    m = draws[0].matrix()
    s = np.diag([-v if f else v for v, f in zip(draws[0].scale, draws[0].reflect)])
    assert np.allclose(np.linalg.det(m), np.linalg.det(s))   # |det R Sh| = 1


def test_oversized_and_offscreen_templates():
    size = 32
    t = torch.ones((90, 5, 5), dtype=torch.bool)   # longer than the volume: clipped, no error
    labels = place_templates([t], [PlacementParams()], size)
    assert labels[:, 15:17, 15:17].all()
    p = PlacementParams(translation=(200.0, 0.0, 0.0))   # entirely outside: nothing painted
    assert affine_placement.placement_box((5, 5, 5), p, size) is None
    assert not place_templates([t[:5]], [p], size).any()


# --------------------------------------------------------------------------- median, morphology


@pytest.mark.parametrize("dtype,high", [(torch.uint8, 4), (torch.uint8, 40), (torch.uint8, 256),
                                        (torch.int32, 1000), (torch.float32, 1)])
def test_median3_equals_skimage(dtype, high):
    g = torch.Generator().manual_seed(high)
    for shape in [(17, 23, 12), (5, 3, 9), (1, 6, 7)]:
        if dtype.is_floating_point:
            x = torch.rand(shape, generator=g)
        else:
            x = torch.randint(0, high, shape, generator=g).to(dtype)
        expected = sk_median(x.numpy())
        assert np.array_equal(morph.median3(x).numpy(), expected)
        assert np.array_equal(morph.median3(x, slab=4).numpy(), expected)   # slab-wise path


def test_median3_on_a_label_map_equals_skimage():
    size = 48
    g = torch.Generator().manual_seed(5)
    templates = [ellipsoid(12, 20, 9), shell(24), tube(40, 8), blob(14, 18, 22)] * 3
    params = [affine_placement.sample_placement_params(g, size) for _ in templates]
    labels = place_templates(templates, params, size)
    expected = sk_median(labels.numpy())
    assert np.array_equal(morph.median3(labels).numpy(), expected)          # 3 slabs of 16
    assert np.array_equal(morph.median3(labels, slab=48).numpy(), expected)  # one pass


def test_binary_median3_equals_skimage():
    g = torch.Generator().manual_seed(1)
    for p in (0.3, 0.5, 0.7):
        m = torch.rand((19, 14, 22), generator=g) < p
        assert np.array_equal(morph.binary_median3(m).numpy(), sk_median(m.numpy()))
        assert torch.equal(morph.binary_median3(m), morph.median3(m.to(torch.uint8)).bool())


def test_median_network_selects_the_median_of_every_ordered_01_input():
    # The 19-candidate network is exact on every 0-1 input ordered like the candidates
    # (asserted at construction); the full 27-input network was also checked on all 2**27
    # 0-1 inputs offline. Here: every 0-1 input with <= 3 or >= 24 ones, and random ones.
    cube = torch.zeros((3, 3, 3), dtype=torch.uint8)
    for ones in list(range(0, 4)) + list(range(24, 28)):
        for _ in range(20):
            x = cube.clone().view(-1)
            x[torch.randperm(27)[:ones]] = 1
            assert int(morph.median3(x.view(3, 3, 3))[1, 1, 1]) == int(ones >= 14)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand((4096, 3, 3, 3), generator=g) < torch.rand((4096, 1, 1, 1), generator=g))
    vol = x.to(torch.uint8).reshape(4096 * 3, 3, 3)     # stacked cubes along D, checked at centres
    med = morph.median3(vol).reshape(4096, 3, 3, 3)[:, 1, 1, 1]
    assert torch.equal(med.bool(), x.flatten(1).sum(1) >= 14)


def _blob_mask(shape, seed):
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), 1.5) > 0.5


@pytest.mark.parametrize("radius", [1, 2, 3, 4])
def test_ball_morphology_and_envelope_equal_skimage(radius):
    for seed, shape in [(0, (20, 17, 23)), (1, (12, 30, 9)), (2, (70, 12, 14))]:
        m = _blob_mask(shape, seed)
        ball = morphology.ball(radius)
        dil = morphology.dilation(m, ball)
        ero = morphology.erosion(m, ball)
        t = torch.from_numpy(m)
        assert np.array_equal(morph.dilate_ball(t, radius).numpy(), dil)
        assert np.array_equal(morph.dilate_ball(t, radius, slab=3).numpy(), dil)   # slab-wise
        assert np.array_equal(morph.erode_ball(t, radius).numpy(), ero)
        assert np.array_equal(morph.envelope(t, radius).numpy(), dil & ~ero)
        # scipy's binary dilation agrees (its border value 0 is what dilation needs).
        assert np.array_equal(dil, ndi.binary_dilation(m, ball))


# --------------------------------------------------------------------------- foreground


def _masked_params(size, seed, envelope=True):
    g = torch.Generator().manual_seed(seed)
    while True:
        p = foreground.sample_foreground_params(g, size)
        if p.masked and (p.envelope_radius is not None) == envelope:
            return p


def test_deformed_sphere_equals_nearest_reflection_warp_of_the_voxelised_sphere():
    size = 48
    p = _masked_params(size, 3)
    u = foreground.deformation_field(p.noise, size)
    grid = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float64)] * 3,
                                      indexing="ij"))
    sphere = ((grid - torch.tensor(p.center, dtype=torch.float64).view(3, 1, 1, 1)) ** 2).sum(0)
    sphere = (sphere <= p.radius ** 2).float()
    warped = warp(sphere, u, mode="nearest", padding="reflection") > 0.5
    ours = foreground.deformed_sphere(p, size)
    assert (warped != ours).float().mean() < 1e-4          # only float ties at .5 may differ
    assert torch.equal(foreground.foreground_mask(p, size), morph.binary_median3(ours))
    # Displacements far beyond the volume take the general (remainder) reflection path.
    big = dataclasses.replace(p, noise=tuple(c * 40 for c in p.noise))
    u = foreground.deformation_field(big.noise, size)
    warped = warp(sphere, u, mode="nearest", padding="reflection") > 0.5
    assert (warped != foreground.deformed_sphere(big, size)).float().mean() < 1e-3


@pytest.mark.parametrize("size,slab", [(40, 16), (32, 5), (64, 64)])
def test_deformed_sphere_slab_and_whole_volume_paths_agree(size, slab):
    # size 40 is no multiple of the 16^3 control grid: the whole-volume F.interpolate path.
    p = _masked_params(size, 8)
    u = foreground.deformation_field(p.noise, size)
    whole = foreground._inside(u.clone(), 0, size, p.center, size - 1.0, 0.0, p.radius ** 2)
    assert torch.equal(foreground.deformed_sphere(p, size, slab=slab), whole)


def test_deformation_field_matches_published_interpolate_layout():
    p = _masked_params(64, 1)
    u = foreground.deformation_field(p.noise, 64)
    ref = sum(torch.nn.functional.interpolate(c[None], size=(64,) * 3, mode="trilinear",
                                              align_corners=False)[0] for c in p.noise)
    assert torch.allclose(u, ref, atol=1e-4)
    assert [c.shape[-1] for c in p.noise] == [16, 8, 4]   # ceil(128 / spacing) at any size


def test_foreground_masking_and_envelope():
    size = 48
    g = torch.Generator().manual_seed(11)
    templates = [ellipsoid(20, 24, 16), shell(30), tube(44, 10), blob(18, 22, 26)] * 2
    placements = tuple(affine_placement.sample_placement_params(g, size) for _ in templates)
    fg = _masked_params(size, 4, envelope=True)
    params = le.LabelEnsembleParams(placements, fg)
    labels = le.render_label_map(templates, params, size)
    assert labels.dtype == torch.uint8
    mask = foreground.foreground_mask(fg, size)
    env = morph.envelope(mask, fg.envelope_radius)
    base = morph.median3(place_templates(templates, placements, size))
    assert (labels[~mask & ~env] == 0).all()                           # outside is background
    assert torch.equal(labels[mask & ~env], base[mask & ~env] + 1)      # inside shifted by one
    assert (labels[env] == len(templates) + 2).all() and env.any()      # the envelope label
    assert env[~mask].any() and env[mask].any()                         # a rim on both sides
    assert params.kind == "foreground_masked_enveloped" and params.max_label == len(templates) + 2
    # Without envelope: just the masked map.
    fg2 = dataclasses.replace(fg, envelope_radius=None)
    labels2 = le.render_label_map(templates, le.LabelEnsembleParams(placements, fg2), size)
    assert torch.equal(labels2, torch.where(mask, base + 1, torch.zeros_like(base)))
    assert (labels2[mask] >= 1).all()          # the uncovered interior is 1, not background


def test_foreground_and_envelope_probabilities():
    g = torch.Generator().manual_seed(2024)
    n = 3000
    draws = [foreground.sample_foreground_params(g, 32) for _ in range(n)]
    masked = np.mean([d.masked for d in draws])
    enveloped = np.mean([d.envelope_radius is not None for d in draws])
    sigma = math.sqrt(2 / 9 / n)
    assert abs(masked - 2 / 3) < 4 * sigma
    assert abs(enveloped - 1 / 3) < 4 * sigma
    radii = [d.radius for d in draws if d.masked]
    assert min(radii) == 12 and max(radii) == 18                        # 48..72 at 32/128
    shifts = np.array([d.center for d in draws if d.masked]) - 15.5
    assert shifts.min() == -8 and shifts.max() == 8                     # -32..32 at 32/128
    g = torch.Generator().manual_seed(1)
    env = {foreground.sample_foreground_params(g, 128).envelope_radius for _ in range(300)}
    assert env == {None, 2, 3, 4}


# --------------------------------------------------------------------------- top level


def _bank():
    rng = np.random.default_rng(0)
    return ([ellipsoid(*rng.integers(8, 24, 3)) for _ in range(4)] + [shell(20), tube(30, 6)]
            + [blob(*rng.integers(8, 20, 3), seed=s) for s in range(4)])


def test_synthesize_is_deterministic_and_uint8():
    bank = _bank()
    outs = []
    for seed in (5, 5, 6):
        g = sample_generator(seed, 3)
        choice = le.sample_template_choice(g, len(bank), 20, 40)
        labels = le.synthesize_label_map([bank[i] for i in choice], 32, g, "cpu")
        assert labels.dtype == torch.uint8 and labels.shape == (32, 32, 32)
        outs.append(labels.numpy().tobytes())
    assert outs[0] == outs[1] and outs[0] != outs[2]
    # params can be recorded and replayed
    g = sample_generator(5, 3)
    choice = le.sample_template_choice(g, len(bank), 20, 40)
    params = le.sample_label_ensemble_params(g, len(choice), 32)
    replay = le.synthesize_label_map([bank[i] for i in choice], 32, params=params)
    assert replay.numpy().tobytes() == outs[0]


def test_config_overrides():
    bank = _bank()
    config = le.LabelEnsembleConfig(
        placement=affine_placement.PlacementConfig(scale_range=(1.0, 1.0), rotation_range=(0, 0),
                                                   shear_range=(0, 0), translation_range=(0, 0),
                                                   reflection_prob=0.0),
        foreground=foreground.ForegroundConfig(foreground_prob=0.0), median=False)
    g = torch.Generator().manual_seed(0)
    params = le.sample_label_ensemble_params(g, 3, 32, config)
    assert all(p == PlacementParams() for p in params.placements) and not params.foreground.masked
    labels = le.synthesize_label_map(bank[:3], 32, g, config=config)
    assert torch.equal(labels, place_templates(bank[:3], [PlacementParams()] * 3, 32))
    always = le.LabelEnsembleConfig(foreground=foreground.ForegroundConfig(
        foreground_prob=1.0, envelope_prob=1.0, envelope_radii=(3,)))
    params = le.sample_label_ensemble_params(g, 3, 128, always)
    assert params.foreground.masked and params.foreground.envelope_radius == 3
    with pytest.raises(ValueError):
        affine_placement.PlacementConfig(scale_range=(1.5, 0.5))
    with pytest.raises(ValueError):
        foreground.ForegroundConfig(foreground_prob=1.5)


def test_template_choice_inclusive_range():
    g = torch.Generator().manual_seed(0)
    counts = set()
    for _ in range(600):
        choice = le.sample_template_choice(g, 7, 20, 40)
        counts.add(len(choice))
        assert all(0 <= i < 7 for i in choice)
    assert counts == set(range(20, 41))
    with pytest.raises(ValueError):
        le.sample_template_choice(g, 0)


def test_many_labels_give_uint16():
    t = torch.ones((3, 3, 3), dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    placements = tuple(PlacementParams(translation=tuple(float(v) for v in
                                                         torch.randint(-12, 13, (3,), generator=g)))
                       for _ in range(300))
    labels = le.render_label_map([t] * 300, le.LabelEnsembleParams(placements), 32)
    assert labels.dtype == torch.uint16
    assert int(labels.to(torch.int32).max()) == 300


# --------------------------------------------------------------------------- timing (opt-in)


@pytest.mark.skipif(not os.environ.get("SYNTHGEN_TIMING"), reason="set SYNTHGEN_TIMING=1")
def test_timing_report():
    """Stage costs at 128^3, one thread, 30 templates of 40-80 voxels per side."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    bank = [ellipsoid(*rng.integers(40, 81, 3)) for _ in range(20)] + \
           [blob(*rng.integers(40, 81, 3), seed=s) for s in range(10)] + [shell(70), tube(80, 30)]
    stages: dict[str, list[float]] = {}
    for i in range(10):
        g = sample_generator(0, i)
        templates = [bank[j] for j in torch.randint(len(bank), (30,), generator=g).tolist()]
        t0 = time.process_time()
        params = le.sample_label_ensemble_params(g, 30, 128)
        if not (params.foreground.masked and params.foreground.envelope_radius):
            params = dataclasses.replace(params, foreground=_masked_params(128, i))
        t1 = time.process_time()
        labels = place_templates(templates, params.placements, 128)
        t2 = time.process_time()
        labels = morph.median3(labels)
        t3 = time.process_time()
        mask = foreground.foreground_mask(params.foreground, 128)
        t4 = time.process_time()
        foreground.apply_foreground(labels, mask, params.foreground.envelope_radius, 32)
        t5 = time.process_time()
        le.render_label_map(templates, params, 128)
        t6 = time.process_time()
        for name, v in [("sample params", t1 - t0), ("place 30 templates", t2 - t1),
                        ("median 3x3x3", t3 - t2), ("foreground mask", t4 - t3),
                        ("mask + envelope", t5 - t4), ("total (render_label_map)", t6 - t5)]:
            stages.setdefault(name, []).append(v)
    for name, v in stages.items():
        print(f"{name:26s} median {1e3 * float(np.median(v)):6.1f} ms   min {1e3 * min(v):6.1f} ms")
    assert np.median(stages["total (render_label_map)"]) < 0.35
