"""Streaming a synthgen dataset into training: ShardStream (order, partitioning, resume,
reading) and DeviceStage (derived views and online augmentation on the training device)."""

from synthgen.stream.dataset import ShardStream
from synthgen.stream.device import DeviceStage

__all__ = ["DeviceStage", "ShardStream"]
