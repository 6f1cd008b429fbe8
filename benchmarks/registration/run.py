"""Register one pair with a feature extractor and ConvexAdam (or with a registration network,
optionally refined by ConvexAdam's Adam stage), and score the result.

Scores follow the Learn2Reg evaluation (see :mod:`registration.metrics`): Dice and HD95 of the
moving labels warped by nearest neighbour against the fixed labels (a label is scored when the
fixed and the unwarped moving labels have it, so one the warp wipes out counts as Dice 0 and HD95
inf, and the pair's HD95 is then inf, as Learn2Reg's), the Jacobian determinant's
SDlogJ (plain and with Learn2Reg's +3), the percentage of non-positive Jacobians, TRE at the
landmarks, and for synthetic pairs the end-point error against the true displacement. ``seconds``
is the wall time of feature extraction plus ConvexAdam (what a user waits for per pair), with the
extraction alone in ``feature_seconds``; data loading and scoring are not timed.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch

from benchmarks.registration.sources import BenchPair, PairSource
from registration import metrics
from registration.convexadam import ConvexAdamParams, convex_adam
from registration.network_inference import predict_displacement
from registration.warp import warp_image, warp_labels
from synthgen.errors import SynthgenError

Extractor = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclasses.dataclass
class PairResult:
    """One pair's scores (NaN where a score does not apply), or the error that stopped it."""

    name: str
    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    label_dice: dict[int, float] = dataclasses.field(default_factory=dict)
    error: str | None = None


@dataclasses.dataclass
class Registered:
    """A pair with its estimated displacement (3, D, H, W) float32 in voxels, on the CPU."""

    bench: BenchPair
    displacement: torch.Tensor
    feature_seconds: float
    seconds: float

    @functools.cached_property
    def warped_labels(self) -> torch.Tensor | None:
        """The moving labels warped onto the fixed grid by nearest neighbour (None without
        labels), computed once for scoring and overlays."""
        labels = self.bench.pair.moving_labels
        return None if labels is None else warp_labels(labels, self.displacement)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclasses.dataclass
class Extracted:
    """A pair's features on the device, (C, D, H, W) float32 each, and the seconds they took."""

    bench: BenchPair
    fixed_features: torch.Tensor
    moving_features: torch.Tensor
    seconds: float


def extract(bench: BenchPair, extractor: Extractor, device: torch.device) -> Extracted:
    """Features of both images on ``device`` (independent of ConvexAdam's settings, so a grid
    search computes them once per pair)."""
    pair = bench.pair
    fixed, moving = pair.fixed.to(device), pair.moving.to(device)
    masks = {name: None if mask is None else mask.to(device) for name, mask in
             (("fixed_mask", pair.fixed_mask), ("moving_mask", pair.moving_mask))}
    _synchronize(device)
    start = time.perf_counter()
    fixed_features, moving_features = extractor(fixed, moving, **masks)
    _synchronize(device)
    return Extracted(bench, fixed_features, moving_features, time.perf_counter() - start)


def align(extracted: Extracted, params: ConvexAdamParams, device: torch.device) -> Registered:
    """ConvexAdam on extracted features; the field comes back on the CPU. ``seconds`` counts
    the extraction too."""
    _synchronize(device)
    start = time.perf_counter()
    displacement = convex_adam(extracted.fixed_features, extracted.moving_features, params)
    _synchronize(device)
    seconds = extracted.seconds + time.perf_counter() - start
    return Registered(extracted.bench, displacement.float().cpu(), extracted.seconds, seconds)


def register(bench: BenchPair, extractor: Extractor, params: ConvexAdamParams,
             device: torch.device) -> Registered:
    """Features of both images on ``device``, then ConvexAdam; the field comes back on the CPU."""
    return align(extract(bench, extractor, device), params, device)


def initial_scores(bench: BenchPair) -> dict[str, float]:
    """The scores before registration (Dice, TRE and end-point error of a zero field), which
    depend on the pair alone: compute them once per pair and hand them to :func:`score`."""
    pair = bench.pair
    initial: dict[str, float] = {}
    if pair.fixed_labels is not None and pair.moving_labels is not None:
        initial["dice_initial"] = metrics.label_mean(
            metrics.dice(pair.fixed_labels, pair.moving_labels, pair.label_ids))
    if pair.fixed_landmarks is not None and pair.moving_landmarks is not None:
        zero = torch.zeros((3, *pair.fixed.shape))
        initial["tre_initial"] = float(np.mean(metrics.tre(
            pair.fixed_landmarks, pair.moving_landmarks, zero, pair.spacing)))
    if bench.true_displacement is not None:
        initial["epe_initial"] = metrics.endpoint_error(torch.zeros_like(bench.true_displacement),
                                                        bench.true_displacement)
    return initial


def score(registered: Registered, initial: dict[str, float]) -> PairResult:
    """Every score that the pair's data allows (labels, landmarks, a true displacement), with
    the pair's ``initial`` scores (from :func:`initial_scores`) alongside."""
    bench, disp = registered.bench, registered.displacement
    pair = bench.pair
    jacobian = metrics.jacobian_determinant(disp)
    scores = {"sdlogj": metrics.sdlogj(jacobian), "sdlogj_l2r": metrics.sdlogj_l2r(jacobian),
              "fold_pct": metrics.fold_pct(jacobian), "seconds": registered.seconds,
              "feature_seconds": registered.feature_seconds, **initial}
    label_dice: dict[int, float] = {}
    if pair.fixed_labels is not None and pair.moving_labels is not None:
        warped, moving = registered.warped_labels, pair.moving_labels
        label_dice, label_hd95 = metrics.label_scores(pair.fixed_labels, warped, pair.label_ids, pair.spacing,
                                                      moving_labels=moving)
        scores["dice"] = metrics.label_mean(label_dice)
        scores["hd95"] = metrics.label_mean(label_hd95)
    if pair.fixed_landmarks is not None and pair.moving_landmarks is not None:
        scores["tre"] = float(np.mean(metrics.tre(pair.fixed_landmarks, pair.moving_landmarks,
                                                  disp, pair.spacing)))
    if bench.true_displacement is not None:
        scores["epe"] = metrics.endpoint_error(disp, bench.true_displacement)
    return PairResult(pair.name, {k: float(v) for k, v in scores.items()}, label_dice)


def warped_image(registered: Registered) -> torch.Tensor:
    """The moving image warped onto the fixed grid, (D, H, W) float32 (for overlays)."""
    return warp_image(registered.bench.pair.moving, registered.displacement)


def register_with_network(bench: BenchPair, network: torch.nn.Module, input_scale: int, extractor: Extractor,
                          params: ConvexAdamParams, io_steps: int, device: torch.device) -> Registered:
    """The network's displacement for the pair (:mod:`registration.network_inference`), refined
    by ``io_steps`` iterations of ConvexAdam's Adam stage on the extractor's features when > 0
    (``params``' regulariser and grid). ``feature_seconds`` counts the features alone."""
    pair = bench.pair
    fixed, moving = pair.fixed.to(device), pair.moving.to(device)
    _synchronize(device)
    start = time.perf_counter()
    displacement = predict_displacement(network, fixed, moving, input_scale)
    feature_seconds = 0.0
    if io_steps > 0:
        extracted = extract(bench, extractor, device)
        feature_seconds = extracted.seconds
        displacement = convex_adam(extracted.fixed_features, extracted.moving_features, params,
                                   initial=displacement, niter=io_steps)
    _synchronize(device)
    return Registered(bench, displacement.float().cpu(), feature_seconds, time.perf_counter() - start)


def run_pairs(sources: Iterable[PairSource], extractor: Extractor, params: ConvexAdamParams,
              device: torch.device,
              on_registered: Callable[[Registered, PairResult], None] | None = None,
              register_pair: Callable[[BenchPair], Registered] | None = None) -> list[PairResult]:
    """Register and score every pair in order, with ConvexAdam on the extractor's features or
    with ``register_pair`` (e.g. :func:`register_with_network`). A pair whose data or features
    are bad (a :class:`SynthgenError`) is recorded with its error and the others go on."""
    results = []
    for source in sources:
        try:
            bench = source.load()
            registered = register_pair(bench) if register_pair else register(bench, extractor, params, device)
        except SynthgenError as err:
            results.append(PairResult(source.name, error=str(err)))
            continue
        result = score(registered, initial_scores(registered.bench))
        results.append(result)
        if on_registered is not None:
            on_registered(registered, result)
    return results
