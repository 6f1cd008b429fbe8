"""Losses of the pretraining recipes and their helpers."""

from pretrain.losses.heads import ProjectionHeads, projection_mlp
from pretrain.losses.sampling import gather_locations, labels_at, sample_locations
from pretrain.losses.supcon import supcon_loss

__all__ = ["ProjectionHeads", "gather_locations", "labels_at", "projection_mlp", "sample_locations",
           "supcon_loss"]
