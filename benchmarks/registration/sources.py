"""Where the harness's pairs come from, each loaded lazily so one bad pair fails alone.

``--pairs`` takes one of:

- a pairs CSV or a Learn2Reg ``dataset.json`` (read by :mod:`registration.datasets`);
- a synthgen dataset made by the random-shapes engine (a path or URL): each sample is a pair
  with its true transform, so the end-point error is reported;
- ``random-shapes:N[,size=S,seed=K,start=I]``: N random-shapes pairs generated in memory (no
  store), samples ``start .. start+N-1`` of seed K (defaults: size 128, seed 1000, start 0; seed
  1000 keeps them apart from datasets generated with the default seed 0).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import torch

from registration.datasets import RegistrationPair, load_pair, read_pairs
from synthgen.errors import SynthgenError

SYNTHETIC_PREFIX = "random-shapes:"
SYNTHETIC_DEFAULTS = {"size": 128, "seed": 1000, "start": 0}
PAIR_FIELDS = ("fixed", "moving", "fixed_labels", "moving_labels", "displacement")


@dataclasses.dataclass
class BenchPair:
    """A pair to register, and its true displacement (3, D, H, W) float32 in voxels when known."""

    pair: RegistrationPair
    true_displacement: torch.Tensor | None = None


@dataclasses.dataclass(frozen=True)
class PairSource:
    """A named pair that is read (or generated) only when :attr:`load` is called; ``images`` are
    its (fixed, moving) image files, None for generated or stored pairs."""

    name: str
    load: Callable[[], BenchPair]
    images: tuple[Path, Path] | None = None


def open_pairs(spec: str) -> list[PairSource]:
    """The pairs named by a ``--pairs`` value (see the module docstring), in order."""
    if spec.startswith(SYNTHETIC_PREFIX):
        return _synthetic_sources(spec)
    if _is_dataset(spec):
        return _dataset_sources(spec)
    if not os.path.exists(spec):
        raise SynthgenError(f"--pairs {spec}: no such file; give a pairs CSV, a Learn2Reg "
                            f"dataset.json, a random-shapes dataset or {SYNTHETIC_PREFIX}N")
    return [PairSource(s.name, _file_loader(s), (s.fixed, s.moving)) for s in read_pairs(spec)]


def _file_loader(spec) -> Callable[[], BenchPair]:
    return lambda: BenchPair(load_pair(spec))


def _is_dataset(spec: str) -> bool:
    return "://" in spec or os.path.isfile(os.path.join(spec, "zarr.json"))


def _synthetic_sources(spec: str) -> list[PairSource]:
    count_text, *options = spec[len(SYNTHETIC_PREFIX):].split(",")
    settings = dict(SYNTHETIC_DEFAULTS)
    try:
        count = int(count_text)
        for option in options:
            key, _, value = option.partition("=")
            if key not in settings:
                raise KeyError(key)
            settings[key] = int(value)
    except (ValueError, KeyError):
        raise SynthgenError(f"--pairs {spec!r}: expected {SYNTHETIC_PREFIX}N[,size=S,seed=K,start=I] "
                            f"with integer values") from None
    if count < 1:
        raise SynthgenError(f"--pairs {spec!r}: N must be at least 1")
    from synthgen.engines import get_engine

    engine = get_engine("random-shapes", size=settings["size"])
    seed, start = settings["seed"], settings["start"]
    return [PairSource(f"random-shapes-s{seed}-{index}",
                       _engine_loader(engine, seed, index))
            for index in range(start, start + count)]


def _engine_loader(engine, seed: int, index: int) -> Callable[[], BenchPair]:
    def load() -> BenchPair:
        sample = engine.sample(seed, index)
        return synthetic_pair(f"random-shapes-s{seed}-{index}", sample, engine.spacing)
    return load


def _dataset_sources(path: str) -> list[PairSource]:
    from synthgen.store import open_dataset

    dataset = open_dataset(path)
    missing = [name for name in PAIR_FIELDS if name not in dataset.info.schema]
    if missing:
        raise SynthgenError(f"--pairs {path}: a {dataset.info.engine} dataset has no "
                            f"{', '.join(missing)}; registration pairs come from random-shapes "
                            f"datasets (synthgen generate --engine random-shapes)")
    spacing = tuple(dataset.info.spacing)

    def loader(index: int) -> Callable[[], BenchPair]:
        def load() -> BenchPair:
            sample = {k: torch.from_numpy(v) for k, v in dataset[index].items() if k in PAIR_FIELDS}
            return synthetic_pair(f"sample-{index}", sample, spacing)
        return load

    return [PairSource(f"sample-{index}", loader(index)) for index in range(len(dataset))]


def synthetic_pair(name: str, sample: dict[str, torch.Tensor], spacing) -> BenchPair:
    """A random-shapes sample as a pair: images float32, labels int64, every label present in the
    fixed image evaluated (label 0 is a shape like the others, not background), and the stored
    transform as the ground truth."""
    fixed_labels = sample["fixed_labels"].long()
    label_ids = [int(v) for v in torch.unique(fixed_labels)]
    pair = RegistrationPair(
        name=name, fixed=sample["fixed"].float(), moving=sample["moving"].float(),
        fixed_labels=fixed_labels, moving_labels=sample["moving_labels"].long(),
        label_ids=label_ids, spacing=tuple(float(s) for s in spacing))
    return BenchPair(pair, sample["displacement"].float())
