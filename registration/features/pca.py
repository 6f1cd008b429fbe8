"""Joint PCA of fixed and moving features (DINO-reg, Kats et al. §2; Gu et al. §2.1).

One basis is fitted on the feature vectors of both volumes together and both are projected with
it, so that the reduced channels mean the same thing in fixed and moving. The mean is exact over
all vectors; the covariance is estimated from at most ``max_samples`` vectors drawn uniformly (a
fixed-seed generator, so the result is deterministic) and accumulated in float32, then
eigen-decomposed in float64. Components are sorted by decreasing variance and their sign is
fixed so that each component's largest-magnitude coefficient is positive. Projections are not
whitened: channel i has the variance of component i.
"""

from __future__ import annotations

import dataclasses

import torch

from synthgen.errors import SynthgenError

MAX_SAMPLES = 1 << 18
SEED = 0


@dataclasses.dataclass(frozen=True)
class PCABasis:
    """``mean`` (C,) float32; ``components`` (d, C) float32 with orthonormal rows, by decreasing
    ``variance`` (d,) float32 (the covariance eigenvalues)."""

    mean: torch.Tensor
    components: torch.Tensor
    variance: torch.Tensor


def _vectors(features: torch.Tensor) -> torch.Tensor:
    """(C, ...) -> (C, N) view of the feature vectors."""
    return features.reshape(features.shape[0], -1)


def fit_joint_pca(fixed: torch.Tensor, moving: torch.Tensor, components: int,
                  max_samples: int = MAX_SAMPLES) -> PCABasis:
    """Fit a ``components``-dimensional PCA basis on the feature vectors of both inputs.

    Args:
        fixed, moving: (C, ...) float feature maps of any spatial shapes, same C and device.
        components: d, 1 <= d <= C.
        max_samples: vectors used for the covariance (all of them when there are fewer).

    Returns:
        A :class:`PCABasis` on the inputs' device.

    Raises:
        SynthgenError: d larger than the channel count, or fixed/moving channel counts differ.
    """
    channels = fixed.shape[0]
    if moving.shape[0] != channels:
        raise SynthgenError(f"fixed and moving features have {channels} and {moving.shape[0]} "
                            f"channels; joint PCA needs the same channels in both")
    if not 1 <= components <= channels:
        raise SynthgenError(f"pca={components} is not between 1 and the {channels} feature channels; "
                            f"choose pca <= {channels}")
    flat_fixed, flat_moving = _vectors(fixed), _vectors(moving)
    count = flat_fixed.shape[1]
    total = count + flat_moving.shape[1]
    mean = ((flat_fixed.sum(dim=1, dtype=torch.float64) + flat_moving.sum(dim=1, dtype=torch.float64))
            / total).float()
    if total > max_samples:
        generator = torch.Generator().manual_seed(SEED)
        picks = torch.randint(total, (max_samples,), generator=generator).to(fixed.device)
        sample = torch.cat([flat_fixed[:, picks[picks < count]],
                            flat_moving[:, picks[picks >= count] - count]], dim=1).float()
    else:
        sample = torch.cat([flat_fixed, flat_moving], dim=1).float()
    centred = sample - mean[:, None]
    covariance = (centred @ centred.T).double() / max(centred.shape[1] - 1, 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    order = torch.argsort(eigenvalues, descending=True)[:components]
    basis = eigenvectors[:, order].T
    peak = basis.abs().argmax(dim=1, keepdim=True)
    basis = basis * torch.sign(basis.gather(1, peak))
    return PCABasis(mean, basis.float(), eigenvalues[order].clamp_min(0).float())


def project(features: torch.Tensor, basis: PCABasis) -> torch.Tensor:
    """Project (C, *S) float features onto ``basis``: (d, *S) float32, ``components @ (x - mean)``."""
    flat = _vectors(features).float()
    reduced = basis.components @ flat - (basis.components @ basis.mean)[:, None]
    return reduced.reshape(basis.components.shape[0], *features.shape[1:])


def joint_pca(fixed: torch.Tensor, moving: torch.Tensor, components: int,
              max_samples: int = MAX_SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit one basis on both (C, ...) inputs and project both: ((d, ...), (d, ...)) float32."""
    basis = fit_joint_pca(fixed, moving, components, max_samples)
    return project(fixed, basis), project(moving, basis)
