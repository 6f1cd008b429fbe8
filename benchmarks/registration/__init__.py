"""The registration harness: score a feature extractor by driving ConvexAdam with it on pairs.

``synthgen-bench register --pairs PAIRS --features SPEC --out DIR`` (see :mod:`.cli`). Pairs come
from a pairs CSV or a Learn2Reg ``dataset.json`` (:mod:`registration.datasets`), or are synthetic
with a known transform (:mod:`.sources`).
"""
