"""Streaming a synthgen dataset into training: ShardStream (order, partitioning, resume,
reading), PairStream (random pairs of a single-volume dataset), MixedStream (several datasets
in proportions) and DeviceStage (derived views and online augmentation on the training device)."""

from synthgen.stream.dataset import ShardStream
from synthgen.stream.device import DeviceStage
from synthgen.stream.mixed import MixedStream, MixSource
from synthgen.stream.pairs import PairStream

__all__ = ["DeviceStage", "MixSource", "MixedStream", "PairStream", "ShardStream"]
