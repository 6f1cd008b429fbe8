"""ConvexAdam: conventions, parameters, closed-form gradients, and parity with the published
reference (PyPI convexadam 0.2.0) on small volumes."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import io
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from registration._adam import AdamStage
from registration._box import box_mean
from registration._trilinear import TrilinearSampler
from registration._workers import Workers
from registration.convexadam import ConvexAdamParams, convex_adam
from registration.mind import mind_ssc
from synthgen.ops.grids import identity_grid, sample
from synthgen.ops.warp import warp, warp_labels

def textured(shape: tuple[int, int, int], seed: int, sigma: float = 2.0) -> torch.Tensor:
    """A smooth random texture scaled to [0, 1]."""
    rng = np.random.default_rng(seed)
    volume = gaussian_filter(rng.standard_normal(shape), sigma)
    volume = (volume - volume.min()) / (volume.max() - volume.min())
    return torch.from_numpy(volume.astype(np.float32))


def smooth_field(shape: tuple[int, int, int], seed: int, amplitude: float) -> torch.Tensor:
    """(3, D, H, W) smooth random displacement, max |component| = amplitude."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.standard_normal((1, 3, 4, 4, 4)).astype(np.float32))
    field = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0]
    return field * (amplitude / field.abs().amax(dim=(1, 2, 3), keepdim=True))


def translated_pair(shape=(40, 40, 40), shift=(2.0, -3.0, 1.0)):
    """fixed, moving with moving(x + shift) = fixed(x)."""
    fixed = textured(shape, seed=0)
    constant = torch.tensor(shift).view(3, 1, 1, 1).expand(3, *shape)
    moving = warp(fixed, -constant)
    return fixed, moving, torch.tensor(shift)


def phantom(shape=(48, 48, 48), seed=0):
    """Labelled ellipsoids on a textured body, warped by a known smooth field; returns fixed,
    moving, fixed labels, moving labels."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    labels = np.zeros(shape, np.uint8)
    image = 0.2 * (((grid / 0.9) ** 2).sum(0) <= 1)
    for label in range(1, 6):
        centre = rng.uniform(-0.4, 0.4, 3)[:, None, None, None]
        radii = rng.uniform(0.2, 0.35, 3)[:, None, None, None]
        inside = (((grid - centre) / radii) ** 2).sum(0) <= 1
        labels[inside] = label
        image[inside] = rng.uniform(0.4, 1.0)
    image = gaussian_filter(image, 0.7) + 0.05 * textured(shape, seed + 1).numpy()
    fixed = torch.from_numpy(image.astype(np.float32))
    inverse = smooth_field(shape, seed + 2, 3.0)
    moving = warp(fixed, inverse)
    moving_labels = warp_labels(torch.from_numpy(labels), inverse)
    return fixed, moving, torch.from_numpy(labels), moving_labels


def mean_dice(a: torch.Tensor, b: torch.Tensor) -> float:
    scores = [2 * ((a == k) & (b == k)).sum().item() / ((a == k).sum() + (b == k).sum()).item()
              for k in range(1, int(a.max()) + 1)]
    return float(np.mean(scores))


def reference_field(fixed: torch.Tensor, moving: torch.Tensor, params: ConvexAdamParams) -> torch.Tensor:
    from convexAdam.convex_adam_MIND import convex_adam_pt

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # intra-op barriers stall on a busy machine; one thread is steady
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            field = convex_adam_pt(fixed, moving, mind_r=1, mind_d=2,
                                   lambda_weight=params.lambda_weight, grid_sp=params.grid_sp,
                                   disp_hw=params.disp_hw, selected_niter=params.niter,
                                   selected_smooth=params.smooth,
                                   grid_sp_adam=params.grid_sp_adam, ic=params.ic,
                                   device=torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    return torch.from_numpy(np.moveaxis(field, -1, 0).astype(np.float32))


def test_defaults_are_the_reference_defaults() -> None:
    reference = pytest.importorskip("convexAdam.convex_adam_MIND")
    defaults = {k: v.default for k, v in inspect.signature(reference.convex_adam_pt).parameters.items()}
    names = {"niter": "selected_niter", "smooth": "selected_smooth"}
    for field in dataclasses.fields(ConvexAdamParams):
        if field.name != "cost_reduction":  # not a parameter of the reference
            assert field.default == defaults[names.get(field.name, field.name)], field.name


@pytest.mark.parametrize("bad", [{"smooth": 4}, {"grid_sp": 0}, {"disp_hw": 2.0}, {"niter": -1},
                                 {"grid_sp_adam": True}, {"lambda_weight": -0.5},
                                 {"lambda_weight": float("nan")}, {"ic": 1},
                                 {"cost_reduction": "mean"}])
def test_invalid_params(bad: dict) -> None:
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        ConvexAdamParams(**bad)


def test_bad_calls() -> None:
    features = torch.rand(2, 16, 16, 16)
    with pytest.raises(ValueError, match="unknown ConvexAdam parameter.*grid_spacing"):
        convex_adam(features, features, grid_spacing=3)
    with pytest.raises(ValueError, match="differ"):
        convex_adam(features, features[:, :15])
    with pytest.raises(ValueError, match="must be"):
        convex_adam(features[0], features[0])
    with pytest.raises(ValueError, match="exceeds"):
        convex_adam(features, features, grid_sp=20)
    with pytest.raises(ValueError, match="fixed_mask"):
        convex_adam(features, features, fixed_mask=torch.ones(16, 16, 8))
    with pytest.raises(ValueError, match="covers no block"):
        convex_adam(features, features, fixed_mask=torch.zeros(16, 16, 16), grid_sp=4, niter=2)


@pytest.mark.parametrize("ic", [True, False])
def test_translation_is_recovered(ic: bool) -> None:
    fixed, moving, shift = translated_pair(shift=(2.5, -3.0, 1.25))
    field = convex_adam(mind_ssc(fixed)[None], mind_ssc(moving)[None], grid_sp=4, disp_hw=3, ic=ic)
    assert field.shape == (3, 40, 40, 40) and field.dtype == torch.float32
    error = (field - shift.view(3, 1, 1, 1))[:, 8:-8, 8:-8, 8:-8].abs()
    assert error.mean() < 0.15 and error.max() < 0.5
    before = (moving - fixed)[8:-8, 8:-8, 8:-8].abs().mean()
    after = (warp(moving, field) - fixed)[8:-8, 8:-8, 8:-8].abs().mean()
    assert after < 0.3 * before


@pytest.mark.parametrize("ic", [True, False])
def test_convex_stage_alone_is_dense_in_voxels(ic: bool) -> None:
    fixed, moving, shift = translated_pair(shape=(48, 48, 48), shift=(4.0, -4.0, 4.0))
    field = convex_adam(mind_ssc(fixed), mind_ssc(moving), grid_sp=4, disp_hw=3, lambda_weight=0,
                        ic=ic)
    assert field.shape == (3, 48, 48, 48)
    assert (field[:, 16:32, 16:32, 16:32] - shift.view(3, 1, 1, 1)).abs().max() < 0.25
    no_iterations = convex_adam(mind_ssc(fixed), mind_ssc(moving), grid_sp=4, disp_hw=3, niter=0,
                                ic=ic)
    torch.testing.assert_close(no_iterations, field)


def test_any_channel_count() -> None:
    fixed, moving, shift = translated_pair(shape=(32, 36, 28), shift=(2.0, -3.0, 1.0))
    for channels in ((0,), (0, 3, 5, 7, 11)):
        features = mind_ssc(fixed)[list(channels)], mind_ssc(moving)[list(channels)]
        field = convex_adam(*features, grid_sp=4, disp_hw=3, grid_sp_adam=3)
        assert field.shape == (3, 32, 36, 28)
        assert (field[:, 8:-8, 8:-8, 8:-8] - shift.view(3, 1, 1, 1)).abs().mean() < 0.5


def test_cost_reduction_leaves_mind_unchanged() -> None:
    fixed, moving, _ = translated_pair(shape=(32, 32, 32))
    args = (mind_ssc(fixed), mind_ssc(moving))
    assert ConvexAdamParams().cost_reduction == "mean12"
    default = convex_adam(*args, grid_sp=4, disp_hw=3, niter=5)
    for reduction in ("mean12", "sum"):  # 12 channels: 12 * mean is the sum
        assert torch.equal(convex_adam(*args, grid_sp=4, disp_hw=3, niter=5,
                                       cost_reduction=reduction), default), reduction


def test_cost_reduction_scales_the_cost_by_channels() -> None:
    fixed, moving, _ = translated_pair(shape=(32, 32, 32), shift=(3.0, -2.0, 1.0))
    features = (mind_ssc(fixed)[:3], mind_ssc(moving)[:3])
    convex = {"grid_sp": 4, "disp_hw": 3, "lambda_weight": 0}
    summed = convex_adam(*features, cost_reduction="sum", **convex)
    # 3 channels: sum(x) = 12 * mean(x / 2) exactly (powers of two)
    halved = convex_adam(*(f / 2 for f in features), cost_reduction="mean12", **convex)
    assert torch.equal(summed, halved)
    assert not torch.equal(summed, convex_adam(*features, cost_reduction="mean12", **convex))


def test_smoothing() -> None:
    fixed, moving, _ = translated_pair(shape=(32, 32, 32))
    args = (mind_ssc(fixed), mind_ssc(moving))
    plain = convex_adam(*args, grid_sp=4, disp_hw=3, niter=5)
    smoothed = convex_adam(*args, grid_sp=4, disp_hw=3, niter=5, smooth=5)
    torch.testing.assert_close(smoothed, box_mean(plain, 5, passes=3))
    expected = F.avg_pool3d(F.avg_pool3d(F.avg_pool3d(plain[None], 5, 1, 2), 5, 1, 2), 5, 1, 2)[0]
    torch.testing.assert_close(smoothed, expected, rtol=1e-5, atol=1e-5)


def test_fixed_mask_everywhere_changes_nothing() -> None:
    fixed, moving, _ = translated_pair(shape=(32, 32, 32))
    args = (mind_ssc(fixed), mind_ssc(moving))
    plain = convex_adam(*args, grid_sp=4, disp_hw=3, niter=10)
    masked = convex_adam(*args, grid_sp=4, disp_hw=3, niter=10, fixed_mask=torch.ones(32, 32, 32))
    torch.testing.assert_close(masked, plain, rtol=1e-4, atol=1e-4)


def data_gradient(stage: AdamStage, field: torch.Tensor, gradient: torch.Tensor) -> None:
    """The stage's data gradient of ``field`` into ``gradient``, slab by slab in this thread."""
    for part in stage.slice_parts:
        stage._data_part(0, field, gradient, part)


def test_fixed_mask_restricts_the_data_term() -> None:
    shape = (12, 10, 14)
    fixed, moving = torch.rand(2, 3, *shape).unbind(0)
    field = smooth_field(shape, seed=3, amplitude=2.0)
    weights = torch.zeros(shape)
    weights[:5] = 1
    plain, masked = torch.empty_like(field), torch.empty_like(field)
    data_gradient(AdamStage(fixed, moving, None, 1.0, Workers(None, 1)), field, plain)
    data_gradient(AdamStage(fixed, moving, weights, 1.0, Workers(None, 1)), field, masked)
    assert torch.equal(masked[:, 5:], torch.zeros_like(masked[:, 5:]))
    torch.testing.assert_close(masked[:, :5], plain[:, :5] * (weights.numel() / weights.sum()))


def test_trilinear_sampler_values_and_pulled_derivatives() -> None:
    """Samples are warp()'s (trilinear, border padding), taken at the voxels whose cell varies;
    pull() contracts the derivatives of the interpolant (central differences away from cell
    faces, 0 where the coordinate is clamped or the cell is constant), over ranges that split
    slices and rows."""
    shape = (13, 11, 9)
    volume = torch.rand(4, *shape, dtype=torch.float64)
    volume[:, :5, :6] = 0.5  # constant cells: their voxels skip the corner table
    field = smooth_field(shape, seed=1, amplitude=4.0).double()
    vectors = torch.rand(13 * 11 * 9, 4, dtype=torch.float64)
    sampler = TrilinearSampler(volume)
    scratch = sampler.scratch(200)
    values = torch.full((13 * 11 * 9, 4), math.nan, dtype=torch.float64)
    pulled = torch.full((3, 13 * 11 * 9), math.nan, dtype=torch.float64)
    for start in range(0, 13 * 11 * 9, 200):
        stop = min(start + 200, 13 * 11 * 9)
        sample = sampler.sample(field.view(3, -1), start, stop, scratch)
        live = sample.voxels + start
        assert sample.values.shape == (live.numel(), 4)
        values[live] = sample.values
        sample.pull(sample.select(vectors[start:stop]), pulled[:, start:stop])
    expected = warp(volume, field).permute(1, 2, 3, 0).reshape(-1, 4)
    sampled = ~values[:, 0].isnan()
    torch.testing.assert_close(values[sampled], expected[sampled], rtol=0, atol=1e-12)
    position = identity_grid(shape, dtype=torch.float64) + field
    limits = torch.tensor(shape, dtype=torch.float64).view(3, 1, 1, 1) - 1
    inside = ((position > 0) & (position < limits)).view(3, -1)
    assert torch.equal(pulled[~inside], torch.zeros_like(pulled[~inside]))
    constant = ((position[0] < 4) & (position[1] < 5)).view(-1)
    assert constant.sum() > 50 and torch.equal(pulled[:, constant], torch.zeros_like(pulled[:, constant]))
    assert not sampled[constant].any() and sampled.sum() > 500
    for axis in range(3):
        assert (position[axis] < 0).any() and (position[axis] > limits[axis]).any()
        step = torch.zeros_like(field)
        step[axis] = 1e-6
        numeric = (warp(volume, field + step) - warp(volume, field - step)) / 2e-6
        numeric = (numeric.permute(1, 2, 3, 0).reshape(-1, 4) * vectors).sum(1)
        away = ((position[axis] - position[axis].round()).abs() > 1e-3).view(-1) & inside[axis]
        torch.testing.assert_close(pulled[axis, away], numeric[away], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_adam_gradients_against_autograd(dtype: torch.dtype) -> None:
    """The closed-form gradients are autograd's through trilinear sampling with border padding
    along every axis, with samples outside the volume and on its boundary (derivative 0)."""
    shape = (12, 10, 14)
    generator = torch.Generator().manual_seed(0)
    fixed, moving = F.avg_pool3d(torch.rand(2, 5, *shape, generator=generator), 5, 1, 2,
                                 count_include_pad=False).to(dtype)
    field = smooth_field(shape, seed=2, amplitude=3.0).to(dtype)
    for axis in range(3):
        field[axis].narrow(axis, 0, 1).zero_()
        field[axis].narrow(axis, shape[axis] - 1, 1).zero_()
    position = identity_grid(shape, dtype=dtype) + field
    for axis in range(3):
        assert (position[axis] < 0).any() and (position[axis] > shape[axis] - 1).any()
    stage = AdamStage(fixed, moving, None, 1.25, Workers(None, 1))
    data = torch.empty_like(field)
    data_gradient(stage, field, data)
    total = data.clone()
    for part in stage.slice_parts:  # add the regulariser's gradient
        stage._regulariser_part(0, field, total, part)

    u = field.double().requires_grad_(True)
    warped = sample(moving.double()[None], (identity_grid(shape, dtype=torch.float64) + u)[None],
                    padding="border")[0]
    data_loss = 12 * (warped - fixed.double()).square().mean(0).mean()
    regulariser = 1.25 * sum((u.narrow(d, 1, u.shape[d] - 1) - u.narrow(d, 0, u.shape[d] - 1))
                             .square().mean() for d in (1, 2, 3))
    exact_data, = torch.autograd.grad(data_loss, u, retain_graph=True)
    exact_total, = torch.autograd.grad(data_loss + regulariser, u)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    for axis in range(3):
        for ours, exact in ((data[axis], exact_data[axis]), (total[axis], exact_total[axis])):
            atol = tolerance * exact.abs().max().item()
            torch.testing.assert_close(ours.double(), exact, rtol=0, atol=atol, msg=f"axis {axis}")
        assert torch.equal(data[axis] == 0, exact_data[axis] == 0), f"axis {axis}"
        assert (exact_data[axis] == 0).any()


@pytest.mark.parametrize("threads", [1, 3])
def test_adam_stage_is_autograd_adam(threads: int) -> None:
    """The whole instance optimisation (slab/row-split phases, written-out gradients and Adam
    step) against autograd through grid_sample and torch.optim.Adam, in float64."""
    shape = (9, 11, 7)
    generator = torch.Generator().manual_seed(3)
    fixed, moving = F.avg_pool3d(torch.rand(2, 4, *shape, generator=generator), 3, 1, 1,
                                 count_include_pad=False).double()
    start = smooth_field(shape, seed=4, amplitude=2.0).double()
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    stage = AdamStage(fixed, moving, None, 1.25, Workers(pool, threads))
    ours = stage.run(start, 6)

    def smooth(u: torch.Tensor) -> torch.Tensor:
        for _ in range(3):
            u = F.avg_pool3d(u[None], 3, 1, 1)[0]
        return u

    params = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([params], lr=1.0)
    identity = identity_grid(shape, dtype=torch.float64)
    for _ in range(5):
        optimizer.zero_grad()
        u = smooth(params)
        warped = sample(moving[None], (identity + u)[None], padding="border")[0]
        loss = 12 * (warped - fixed).square().mean(0).mean() + 1.25 * sum(
            (u.narrow(d, 1, u.shape[d] - 1) - u.narrow(d, 0, u.shape[d] - 1)).square().mean()
            for d in (1, 2, 3))
        loss.backward()
        optimizer.step()
    assert (ours - smooth(start)).abs().max() > 0.1
    torch.testing.assert_close(ours, smooth(params).detach(), rtol=0, atol=1e-9)
    if pool is not None:
        pool.shutdown()


def test_box_filter_is_avg_pool_and_self_adjoint() -> None:
    x, y = torch.randn(2, 3, 9, 7, 8).unbind(0)
    expected = F.avg_pool3d(F.avg_pool3d(F.avg_pool3d(x[None], 3, 1, 1), 3, 1, 1), 3, 1, 1)[0]
    torch.testing.assert_close(box_mean(x, 3, 3), expected)
    torch.testing.assert_close((box_mean(x, 3, 3) * y).sum(), (x * box_mean(y, 3, 3)).sum())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_parity_with_reference() -> None:
    pytest.importorskip("convexAdam.convex_adam_MIND")
    fixed, moving, fixed_labels, moving_labels = phantom()
    params = ConvexAdamParams(niter=40)
    ours = convex_adam(mind_ssc(fixed), mind_ssc(moving), params)
    reference = reference_field(fixed, moving, params)
    assert ours.shape == reference.shape
    before = mean_dice(fixed_labels, moving_labels)
    dice_ours = mean_dice(fixed_labels, warp_labels(moving_labels, ours))
    dice_reference = mean_dice(fixed_labels, warp_labels(moving_labels, reference))
    assert dice_reference > before + 0.05
    assert abs(dice_ours - dice_reference) < 0.03
    interior = (ours - reference)[:, 6:-6, 6:-6, 6:-6].norm(dim=0)
    assert interior.mean() < 0.4


def test_same_result_on_one_thread_and_threads_restored() -> None:
    fixed, moving, _ = translated_pair(shape=(24, 28, 20))
    args = (mind_ssc(fixed), mind_ssc(moving))
    threads = torch.get_num_threads()
    several = convex_adam(*args, grid_sp=4, disp_hw=2, niter=6)
    assert torch.get_num_threads() == threads
    torch.set_num_threads(1)
    try:
        single = convex_adam(*args, grid_sp=4, disp_hw=2, niter=6)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, several)
