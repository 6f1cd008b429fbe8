"""Multi-positive supervised contrastive loss (Khosla et al. 2020, ``contrast_mode="all"``), as the
spatial loss of anatomix (Dey et al. §3, Eq. 1).

Every embedding is an anchor; its positives are all *other* embeddings with the same label (across
both views), and its denominator runs over all other embeddings, positives included. The loss is
the mean over anchors of ``-mean_{p in P(i)} log softmax_{q != i}(z_i . z_q / tau)[p]`` with
cosine similarity (embeddings are L2-normalised here). Unlike the SupCon reference code there
is no ``tau / base_tau`` factor (the paper's Eq. 1 and anatomix have none). Anchors without a
positive are left out of the mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supcon_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """The multi-positive SupCon loss of independent groups, averaged over all their anchors.

    Args:
        embeddings: (G, N, C) float, any scale: G groups (e.g. samples of a batch) of N anchors;
            only anchors of the same group are contrasted.
        labels: (G, N) integer labels; equal labels in a group are positives.
        temperature: tau > 0.

    Returns:
        () float32 loss (0 when no anchor has a positive).
    """
    if embeddings.ndim != 3 or labels.shape != embeddings.shape[:2]:
        raise ValueError(f"supcon_loss expects embeddings (G, N, C) and labels (G, N), got "
                         f"{tuple(embeddings.shape)} and {tuple(labels.shape)}")
    z = F.normalize(embeddings.float(), dim=-1)
    n = z.shape[1]
    self_pairs = torch.eye(n, dtype=torch.bool, device=z.device)
    logits = (z @ z.transpose(1, 2) / temperature).masked_fill(self_pairs, float("-inf"))
    log_prob = logits - logits.logsumexp(dim=-1, keepdim=True)
    positives = (labels[:, :, None] == labels[:, None, :]) & ~self_pairs
    counts = positives.sum(dim=-1)
    mean_log_prob = torch.where(positives, log_prob, 0.0).sum(dim=-1) / counts.clamp(min=1)
    has_positive = counts > 0
    return -(mean_log_prob * has_positive).sum() / has_positive.sum().clamp(min=1)
