"""The self-distillation term of random-image pretraining (Chen et al. 2025 §2): each decoder
level's Gaussian flow is pulled towards the ensemble's."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def gaussian_kl(mean_p: torch.Tensor, log_sigma_p: torch.Tensor, mean_q: torch.Tensor,
                log_sigma_q: torch.Tensor) -> torch.Tensor:
    """Mean over elements of KL(N(mean_p, s_p) || N(mean_q, s_q)) with scales ``s = exp(log_sigma)``
    (as the published code passes them to ``torch.distributions.Normal``, although the head's
    sampling reads ``log_sigma`` as a log-variance), in closed form:
    ``log(s_q / s_p) + (s_p^2 + (mean_p - mean_q)^2) / (2 s_q^2) - 1/2``. Tensors of one shape."""
    ratio = torch.exp(2 * (log_sigma_p - log_sigma_q))
    return torch.mean(log_sigma_q - log_sigma_p + (ratio + (mean_p - mean_q) ** 2 * torch.exp(-2 * log_sigma_q)) / 2
                      - 0.5)


def distillation_kl(stats: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The mean over levels of ``gaussian_kl(level, ensemble)``; ``stats`` lists the levels'
    (mean, log_sigma) and the ensemble's last."""
    mean_q, log_sigma_q = stats[-1]
    terms = [gaussian_kl(mean, log_sigma, mean_q, log_sigma_q) for mean, log_sigma in stats[:-1]]
    return torch.stack(terms).mean()
