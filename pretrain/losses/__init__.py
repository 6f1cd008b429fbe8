"""Losses of the pretraining recipes and their helpers."""

from pretrain.losses.distillation import distillation_kl, gaussian_kl
from pretrain.losses.heads import ProjectionHeads, projection_mlp
from pretrain.losses.sampling import gather_locations, labels_at, sample_locations
from pretrain.losses.supcon import supcon_loss

__all__ = ["ProjectionHeads", "distillation_kl", "gather_locations", "gaussian_kl", "labels_at", "projection_mlp",
           "sample_locations", "supcon_loss"]
