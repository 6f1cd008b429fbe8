"""The datasets a training run reads: one dataset, or several mixed in proportions.

``data.path`` is one dataset (a store, a URL or a ``generate:`` spec) or a mix,
``"synth.zarr:0.8,real.zarr:0.2"`` (:func:`synthgen.stream.mixed.parse_mix`). For each dataset
the recipe maps its fields onto the recipe's (:meth:`pretrain.recipe.Recipe.field_map`: an
ingested ``image`` fills both views of the contrastive recipe) and checks it; the crop must fit
each; the last ``data.val_shards`` committed shards of each are held out for validation.

A single dataset that has the recipe's own fields streams through ShardStream, a mix or a
dataset whose fields are mapped through MixedStream, and a dataset of single volumes for a
recipe of pairs (``Recipe.pairs_from_volumes``) through PairStream; DeviceStage renders on the
training device what a dataset derives (``--store labels`` views, a ``generate:`` spec).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pretrain.batches import Split, resolve_crop, split_shards, stream_fields
from pretrain.config import RunConfig
from pretrain.recipe import Recipe
from synthgen.errors import SynthgenError
from synthgen.store import Dataset, open_dataset
from synthgen.stream import DeviceStage, PairStream, ShardStream
from synthgen.stream.mixed import MixedStream, MixSource, parse_mix


@dataclasses.dataclass(frozen=True)
class Source:
    """One dataset of a run: its share of an epoch, the recipe field -> dataset field map, and
    its shards for training and validation."""

    dataset: Dataset
    proportion: float
    fields: dict[str, str]
    split: Split

    def mix_source(self, shards: list[int] | None) -> MixSource:
        renamed = {name: stored for name, stored in self.fields.items() if name != stored}
        return MixSource(self.dataset.path, self.proportion, renamed, None if shards is None else tuple(shards))


class RunData:
    """What a run reads (module docstring), checked before anything is written.

    Args:
        recipe: the run's recipe (its fields, field sources and checks).
        config: the run's config (``data.path``, ``data.crop``, ``data.val_shards``,
            ``train.val_every``).
        saved_split: the checkpoint's ``"split"`` when resuming (the shards the run began with).

    Raises:
        SynthgenError: a dataset the recipe cannot read, a crop that does not fit, too few
            shards to hold out, or datasets a mix cannot combine.
    """

    def __init__(self, recipe: Recipe, config: RunConfig, saved_split: dict[str, Any] | list[dict[str, Any]] | None
                 ) -> None:
        self.recipe, self.data = recipe, config.data
        entries = parse_mix(str(config.data.path))
        held_out = config.data.val_shards if config.train.val_every else 0
        saved = saved_split if isinstance(saved_split, list) else [saved_split] * len(entries)
        self.sources = []
        for entry, split in zip(entries, saved):
            dataset = open_dataset(entry.path)
            recipe.check_dataset(dataset)
            crop = resolve_crop(config.crop, dataset)
            recipe.check_crop(crop or tuple(dataset.info.shape))
            split = Split(**split) if split is not None else split_shards(dataset, held_out)
            self.sources.append(Source(dataset, entry.proportion, recipe.field_map(dataset), split))
        self.paired = any(recipe.pairs_volumes(s.dataset) for s in self.sources)
        if self.paired and len(self.sources) > 1:
            raise SynthgenError("a dataset of single volumes is paired on the fly and cannot be mixed yet; train on "
                                "it alone, or ingest its pairs (synthgen ingest --pairs) to mix them")
        self.mixed = len(self.sources) > 1 or any(name != stored for name, stored in self.sources[0].fields.items())
        crops = [resolve_crop(config.crop, source.dataset) for source in self.sources]
        self.crop = None if all(crop is None for crop in crops) else config.crop
        self.train_stream = self.stream(validation=False)  # what a mix cannot combine is refused before the run starts

    @property
    def path(self) -> str:
        return str(self.data.path)

    @property
    def has_validation(self) -> bool:
        return any(source.split.val for source in self.sources)

    def split_state(self) -> dict[str, Any] | list[dict[str, Any]]:
        """The checkpoint's ``"split"``: one dataset's ``{"train", "val"}``, a list for a mix."""
        splits = [dataclasses.asdict(source.split) for source in self.sources]
        return splits if len(splits) > 1 else splits[0]

    def held_out(self) -> str:
        """The held-out shards, for messages (empty without validation)."""
        if not self.has_validation:
            return ""
        if len(self.sources) == 1:
            return f"shards {self.sources[0].split.val}"
        return "; ".join(f"{source.dataset.path} shards {source.split.val}" for source in self.sources)

    def stream(self, validation: bool) -> ShardStream:
        """A new training (or validation: held-out shards, no shuffle) stream with ``data``'s
        seed, batch size, block size and error handling (the training one is :attr:`train_stream`)."""
        data = self.data
        options: dict[str, Any] = {"seed": data.seed, "on_error": data.on_error, "batch_size": data.batch_size,
                                   "block_shards": data.block_shards}
        shuffle = data.shuffle and not validation
        if self.paired:
            source = self.sources[0]
            fields = ["image"] + (["labels"] if "moving_labels" in self.recipe.fields else [])
            return PairStream(source.dataset.path, fields=fields, crop=self.crop, shuffle=shuffle,
                              shards=source.split.val if validation else source.split.train, **options)
        if not self.mixed:
            source = self.sources[0]
            shards = source.split.val if validation else source.split.train
            fields = stream_fields(self.recipe.fields, source.dataset)
            return ShardStream(source.dataset.path, fields=fields, crop=self.crop, shuffle=shuffle, shards=shards,
                               **options)
        if options.get("on_error") == "skip":
            raise SynthgenError("data.on_error skip is for one unmapped dataset; a mixed or mapped stream raises "
                                "on damaged samples (repair with synthgen verify, or set data.on_error raise)")
        options.pop("on_error", None)
        sources = [s.mix_source(s.split.val if validation else s.split.train) for s in self.sources]
        if validation:
            sources = [s for s in sources if s.shards]
        return MixedStream(sources, fields=list(self.recipe.fields), crop=self.crop, shuffle=shuffle, **options)

    def stage(self, stream: ShardStream, augment_config: dict[str, Any] | None) -> DeviceStage:
        """The on-device stage of ``stream`` (with the recipe's augmentation)."""
        target = stream if self.paired or self.mixed else stream.path  # by path: derived fields are rendered
        return DeviceStage(target, augment=self.recipe.augment, augment_config=augment_config, seed=self.data.seed)
