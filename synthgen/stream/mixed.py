"""MixedStream: several datasets as one stream, in given proportions (synthetic with real).

An epoch of E items (``epoch_size``, default: the datasets' committed samples together) takes
``round(E * p_k)`` items from dataset k (largest remainders, so the counts sum to E exactly):
the first ones of its own epoch order (ShardStream's order with a seed of its own), continued
with further independent orders when it must repeat (a small real set mixed into a large
synthetic one), and never more than needed. The sources are interleaved by a permutation drawn
from (seed, epoch) (without ``shuffle``, evenly). The sources' seeds and the interleaving are
named streams of the stream's seed (``MIX_SOURCE_STREAM``, ``MIX_STREAM``). Items are the epoch's order like samples in
ShardStream, so ranks, workers, equal counts and exact mid-epoch resume are ShardStream's own;
the state also records the sources, proportions and epoch size, and a stream with others refuses
it (MosaicML Streaming's ``Stream(proportion=...)`` resumed wrongly when the mix changed).

Fields are named by the consumer: ``fields`` maps each source's stored names onto the batch's
(``{"view1": "image", "view2": "image"}`` lets an ingested ``image`` fill both views of a
recipe; a stored field is read once and copied to every batch field it fills). Every batch field
must have one row shape and dtype across the sources (give a ``crop`` to mix volumes of other
sizes). Batches add ``"source"`` (B,) int64, which dataset each row came from, beside
``"index"``, its sample index there.

Fields a dataset renders on the training device (the views of ``--store labels``, everything
of a ``generate:`` spec) leave their rows empty here; ``DeviceStage`` renders them row by row
(:meth:`MixedStream.render`) from the row's stored fields, which must all be batch fields. With
such a dataset in the mix a crop is deferred to the stage for every row (views are rendered
from whole label maps), so all datasets of the mix must then have one volume shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from synthgen.errors import SynthgenError
from synthgen.seeding import MIX_SOURCE_STREAM, MIX_STREAM, named_seed
from synthgen.engines.base import FieldSpec
from synthgen.store.reader import Dataset, open_dataset
from synthgen.stream.dataset import ShardStream
from synthgen.stream.order import epoch_order, sample_count
from synthgen.stream.reading import fill_batch

SOURCE_SHIFT = 40  # an item is source << SOURCE_SHIFT | sample index


@dataclasses.dataclass(frozen=True)
class MixSource:
    """One dataset of a mix: its path, its share of every epoch, where the batch's fields
    come from (batch name -> stored name; unnamed fields keep their names), and optionally the
    only shard ids to read (default: every committed shard, re-listed each epoch)."""

    path: str
    proportion: float
    fields: Mapping[str, str] = dataclasses.field(default_factory=dict)
    shards: tuple[int, ...] | None = None

    def stored(self, name: str) -> str:
        return self.fields.get(name, name)


def parse_mix(text: str) -> list[MixSource]:
    """``"synth.zarr:0.8,real.zarr:0.2"`` -> MixSources (a path without ``:P`` gets 1; the
    proportions are relative). Raises SynthgenError for a non-positive or unreadable share."""
    sources = []
    for part in text.split(","):
        path, _, share = part.strip().rpartition(":")
        try:
            proportion = float(share)
        except ValueError:
            path, proportion = part.strip(), 1.0
        if not path or not proportion > 0:
            raise SynthgenError(f"mix entry {part!r} needs PATH:PROPORTION with a proportion > 0, e.g. "
                                f"synth.zarr:0.8,real.zarr:0.2")
        sources.append(MixSource(path, proportion))
    return sources


def apportion(total: int, proportions: Sequence[float]) -> list[int]:
    """Integer counts summing to ``total`` in ``proportions`` (largest remainders, ties to the
    earlier source)."""
    shares = np.asarray(proportions, dtype=np.float64) / float(np.sum(proportions)) * total
    counts = np.floor(shares).astype(np.int64)
    for k in np.argsort(-(shares - counts), kind="stable")[: total - int(counts.sum())]:
        counts[k] += 1
    return [int(c) for c in counts]


class MixedStream(ShardStream):
    """ShardStream over a mix of datasets (module docstring).

    Args:
        sources: the datasets, as MixSources or ``(path, proportion)`` pairs.
        fields: the batch's field names (default: those all sources store under one name).
        epoch_size: items per epoch (default: the committed samples of all sources).
        seed, shuffle, rank, world_size, drop_last, crop, batch_size, float32, block_shards: as
            ShardStream. Damaged samples always raise (``synthgen verify`` names the shard).
    """

    def __init__(self, sources: Sequence[MixSource | tuple[str, float]], fields: Sequence[str] | None = None,
                 epoch_size: int | None = None, **options: Any) -> None:
        self.sources = [s if isinstance(s, MixSource) else MixSource(*s) for s in sources]
        if not self.sources or any(not s.proportion > 0 for s in self.sources):
            raise SynthgenError("a mix needs at least one dataset, each with a proportion > 0")
        if options.get("on_error", "raise") != "raise":
            raise SynthgenError("a mixed stream raises on damaged samples; repair the dataset (synthgen verify)")
        if "shards" in options:
            raise SynthgenError("give a mixed stream's shards per dataset: MixSource(path, proportion, shards=...)")
        if epoch_size is not None and epoch_size < 1:
            raise SynthgenError(f"epoch_size must be >= 1, got {epoch_size}")
        names = list(fields) if fields is not None else _common_fields(self.sources)
        datasets = [open_dataset(s.path) for s in self.sources]
        self.rendered = [_rendered_fields(s, dataset, names) for s, dataset in zip(self.sources, datasets)]
        child_options = {k: v for k, v in options.items() if k not in ("rank", "world_size", "batch_size")}
        seed = int(options.get("seed", 0))
        self.children = [ShardStream(s.path, fields=sorted({s.stored(f) for f in names if f not in rendered}),
                                     rank=0, world_size=1, shards=s.shards,
                                     **{**child_options, "seed": named_seed(seed, MIX_SOURCE_STREAM, k)})
                         for k, (s, rendered) in enumerate(zip(self.sources, self.rendered))]
        self._shards = [child._shards for child in self.children]  # what the base constructor lists
        super().__init__(self.sources[0].path, fields=self.children[0].fields, **options)
        self.fields, self.epoch_size = names, epoch_size
        self.defer_crop = self.crop is not None and any(self.rendered)
        shapes = {tuple(dataset.info.shape) for dataset in datasets}
        if self.defer_crop and len(shapes) > 1:
            raise SynthgenError(f"a dataset of the mix renders fields on the training device, so every dataset's "
                                f"volumes must have one shape (they have {sorted(shapes)}); make them at one --size")
        for name in names:
            layouts = {self._row_layout_of(k, name) for k in range(len(self.sources))}
            if len(layouts) > 1:
                raise SynthgenError(f"field {name} has other shapes or dtypes in the mixed datasets "
                                    f"({sorted(map(str, layouts))}); give a crop, or map the fields onto matching ones")

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        for child in self.children:
            child.set_epoch(epoch)
        self._shards = [child._shards for child in self.children]

    def _list_shards(self, dataset: Dataset) -> list[list[int]]:  # type: ignore[override]
        return self._shards  # per source; set_epoch refreshes the children's lists

    def _epoch_size(self) -> int:
        return self.epoch_size or sum(sample_count(child.dataset.info, shards)
                                      for child, shards in zip(self.children, self._shards))

    def _source_order(self, k: int, repeat: int) -> np.ndarray:
        """Source k's samples in its ``repeat``-th independent order of this epoch."""
        child = self.children[k]
        return epoch_order(child.dataset.info, self._shards[k], named_seed(self.seed, MIX_SOURCE_STREAM, k, repeat),
                           self.epoch, self.shuffle, self.block_shards)

    def epoch_order(self) -> np.ndarray:
        """The epoch's items, ``source << SOURCE_SHIFT | sample index``, in consumption order."""
        counts = apportion(self._epoch_size(), [s.proportion for s in self.sources])
        taken = []
        for k, count in enumerate(counts):
            parts, have = [], 0
            while have < count:
                part = self._source_order(k, len(parts))
                if len(part) == 0:
                    raise SynthgenError(f"{self.sources[k].path} has no committed samples to mix")
                parts.append(part)
                have += len(part)
            taken.append(np.concatenate(parts)[:count] if parts else np.zeros(0, dtype=np.int64))
        tags = np.repeat(np.arange(len(counts)), counts)
        if self.shuffle:
            tags = tags[np.random.default_rng(named_seed(self.seed, MIX_STREAM, self.epoch)).permutation(len(tags))]
        else:
            tags = tags[np.argsort(np.concatenate([(np.arange(c) + 0.5) / c for c in counts]), kind="stable")]
        items = np.empty(len(tags), dtype=np.int64)
        for k, samples in enumerate(taken):
            items[tags == k] = (k << SOURCE_SHIFT) | samples
        return items

    def state_dict(self, samples_consumed: int) -> dict[str, Any]:
        return {**super().state_dict(samples_consumed), "mix": self._mix()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("mix") != self._mix():
            raise SynthgenError(f"stream state was saved for the mix {state.get('mix')}, this stream mixes "
                                f"{self._mix()}; create the stream with the saved mix to resume")
        super().load_state_dict(state)
        for child in self.children:
            child.epoch = self.epoch

    def _mix(self) -> dict[str, Any]:
        return {"sources": [[s.path, s.proportion, dict(s.fields), None if s.shards is None else list(s.shards)]
                            for s in self.sources],
                "epoch_size": self.epoch_size}

    @property
    def volume_schema(self) -> dict[str, FieldSpec]:
        """Each batch field's spec (the first dataset's, stored or rendered), by batch name."""
        schema = self.children[0].dataset.full_schema
        return {name: schema[self.sources[0].stored(name)] for name in self.fields}

    def render(self, batch: dict[str, torch.Tensor], device: torch.device | str) -> None:
        """Fill, in place, the rows of ``batch`` (on ``device``, rows as stored: (B, *shape))
        whose fields their dataset renders, from each row's stored fields, (seed, index)."""
        for row, (k, index) in enumerate(zip(batch["source"].tolist(), batch["index"].tolist())):
            rendered = self.rendered[k]
            if rendered:
                source = self.sources[k]
                stored = {source.stored(f): batch[f][row] for f in self.fields if f not in rendered}
                made = self.children[k].dataset.derive(stored, index, device=device)
                for name, field in rendered.items():
                    batch[name][row] = made[field]

    def _row_layout_of(self, k: int, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        spec = self.children[k].dataset.full_schema[self.sources[k].stored(name)]
        cropped = self.crop is not None and not self.defer_crop
        return ((*spec.shape[:-3], *self.crop) if cropped else tuple(spec.shape)), getattr(torch, spec.dtype)

    def _rows(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        return {name: self._row_layout_of(0, name) for name in self.fields}

    def _read_batch(self, dataset: Dataset, indices: list[int], out: dict[str, torch.Tensor]
                    ) -> tuple[dict[str, torch.Tensor], dict[int, SynthgenError]]:
        items = np.asarray(indices, dtype=np.int64)
        source, sample = items >> SOURCE_SHIFT, items & ((1 << SOURCE_SHIFT) - 1)
        for k, child in enumerate(self.children):
            rows = np.flatnonzero(source == k)
            if len(rows) == 0:
                continue
            picked, stored, rendered = sample[rows].tolist(), self.sources[k].stored, self.rendered[k]
            part = {stored(f): np.empty((len(rows), *out[f].shape[1:]), dtype=out[f].numpy().dtype)
                    for f in self.fields if f not in rendered}
            crops = [child._crop_start(i) for i in picked] if self.crop is not None and not self.defer_crop else None
            fill_batch(child.dataset, picked, part, "raise", crops, self.crop)
            for f in self.fields:
                out[f].numpy()[rows] = 0 if f in rendered else part[stored(f)]
        batch = dict(out)
        batch["index"], batch["source"] = torch.from_numpy(sample), torch.from_numpy(source)
        if self.defer_crop:
            batch["crop_start"] = torch.from_numpy(np.stack([self.children[k]._crop_start(i)
                                                             for k, i in zip(source.tolist(), sample.tolist())]))
            batch["crop_size"] = torch.tensor([self.crop] * len(items), dtype=torch.int64)
        return batch, {}


def _rendered_fields(source: MixSource, dataset: Dataset, names: Sequence[str]) -> dict[str, str]:
    """Batch name -> field for the batch fields ``dataset`` renders on the device; checks that
    every batch field exists there and that the fields rendering needs are batch fields."""
    missing = [source.stored(f) for f in names if source.stored(f) not in dataset.full_schema]
    if missing:
        raise SynthgenError(f"{source.path} has no field {', '.join(missing)} (it has "
                            f"{', '.join(dataset.full_schema)}); map the batch's fields onto its own")
    rendered = {f: source.stored(f) for f in names if source.stored(f) in dataset.derived_schema}
    needed = set(dataset.info.schema) - {source.stored(f) for f in names}
    if rendered and needed:
        raise SynthgenError(f"{source.path} renders {', '.join(rendered.values())} from {', '.join(sorted(needed))}, "
                            f"which the mix leaves out; add it to the batch's fields")
    return rendered


def _common_fields(sources: Sequence[MixSource]) -> list[str]:
    stored = [set(open_dataset(s.path).info.schema) for s in sources]
    common = sorted(set.intersection(*stored))
    if not common:
        raise SynthgenError("the mixed datasets store no field under one name; give fields and map them "
                            "(MixSource(path, proportion, {'view1': 'image'}))")
    return common
