"""ConvexAdam and everything around it: MIND-SSC, warps, Learn2Reg metrics, pair readers and
feature extractors (see README "Registration benchmark")."""

from registration.convexadam import ConvexAdamParams, convex_adam
from registration.mind import mind_ssc

__all__ = ["ConvexAdamParams", "convex_adam", "mind_ssc"]
