"""Turns "make N samples" into shard tasks and runs them in-process or on Ray."""

from synthgen.runner.generate import GenerateReport, generate
from synthgen.store.plan import plan_dataset

__all__ = ["GenerateReport", "generate", "plan_dataset"]
