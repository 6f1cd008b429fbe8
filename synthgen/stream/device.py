"""The on-device stage: what happens to a collated batch on the training device.

1. Fields the dataset does not store are rendered from the ones it does (the views of a
   ``--store labels`` dataset, per sample from its label map, seed and index), so a consumer
   receives the same batch whatever the storage mode; in a mix, row by row for the rows of the
   datasets that render them. For a ``generate:`` spec nothing is
   stored and every field is generated here, on the training device (online generation).
2. Crops deferred by the stream (views must be rendered from whole label maps) are applied,
   at the corners and size the batch carries (``"crop_start"``, ``"crop_size"``): the crop is
   stated once, to the stream.
3. Optionally, the label-ensemble online augmentation (shared flips and affine, per-view blur,
   noise, bias field, gamma, motion), with parameters drawn from the named stream
   ``AUGMENT_STREAM`` of the stream seed, keyed by the epoch and the batch's sample indices
   (a mixed stream's items, source and index together): the same batch of the same epoch gets
   the same augmentation, and the augmentation never draws from a generator that made a sample
   (see :mod:`synthgen.seeding`).

Volumes leave the stage as (B, 1, D, H, W): images float32, labels int64.
"""

from __future__ import annotations

from typing import Any

import torch

from synthgen.errors import SynthgenError
from synthgen.ops.augment.online import OnlineAugment
from synthgen.seeding import AUGMENT_STREAM, named_generator
from synthgen.store.reader import open_dataset
from synthgen.stream.crop import apply_crop
from synthgen.stream.dataset import ShardStream
from synthgen.stream.mixed import SOURCE_SHIFT, MixedStream


class DeviceStage:
    """``stage(batch, device) -> batch``; see the module docstring.

    Args:
        path: the dataset the stream reads (for its engine, seed and schema): a store or a
            ``generate:`` spec; or a MixedStream or PairStream itself (for its batch fields'
            kinds, and a mix's rendering).
        crop: optional, the stream's crop; deferred crops take their size from the batch, and
            a ``crop`` that differs from it is refused (SynthgenError).
        augment: apply the online augmentation (needs ``labels``, ``view1`` and ``view2``).
        augment_config: overrides of the online augmentation's probabilities and ranges.
        seed: the augmentation's seed (use the stream's).
    """

    def __init__(self, path: str | ShardStream, crop: tuple[int, int, int] | None = None, augment: bool = False,
                 augment_config: dict[str, Any] | None = None, seed: int = 0) -> None:
        self.mix = path if isinstance(path, MixedStream) else None
        if isinstance(path, ShardStream):  # the stream's batch names (renamed by pair and mixed streams)
            self.dataset, self.derived, self.volume_fields = None, {}, path.volume_schema
        else:
            self.dataset = open_dataset(path)
            self.derived = dict(self.dataset.derived_schema)
            self.volume_fields = {**self.dataset.info.schema, **self.derived}
        self.crop = crop
        self.augment = OnlineAugment(augment_config) if augment else None
        self.seed, self.epoch = int(seed), 0

    def __call__(self, batch: dict[str, torch.Tensor], device: torch.device | str) -> dict[str, torch.Tensor]:
        indices = batch["index"].tolist()
        keys = indices if "source" not in batch else ((batch["source"] << SOURCE_SHIFT) | batch["index"]).tolist()
        batch = {name: value.to(device, non_blocking=True) for name, value in batch.items()}
        if self.mix is not None:
            self.mix.render(batch, device)
        if self.derived:
            rendered = [self.dataset.derive({name: batch[name][i] for name in batch if name in self.volume_fields},
                                            index, device=device)
                        for i, index in enumerate(indices)]
            for name in self.derived:
                batch[name] = torch.stack([r[name] for r in rendered])
        if "crop_start" in batch:
            starts, crop = batch.pop("crop_start").tolist(), self._deferred_crop(batch.pop("crop_size", None))
            for name in self.volume_fields:
                if name in batch:
                    batch[name] = torch.stack([apply_crop(batch[name][i], starts[i], crop)
                                               for i in range(len(indices))])
        for name, spec in self.volume_fields.items():
            if name in batch:
                value = batch[name].unsqueeze(1) if batch[name].dim() == 4 else batch[name]
                batch[name] = value.long() if spec.kind == "labels" else value.float()
        if self.augment is not None:
            batch = self.augment(batch, self.batch_generator(keys))
        return batch

    def _deferred_crop(self, sizes: torch.Tensor | None) -> tuple[int, ...]:
        """The crop size of a batch whose crop the stream deferred: its ``"crop_size"`` rows
        (B, 3), checked against the stage's ``crop`` when both are given."""
        crop = None if sizes is None else tuple(int(n) for n in sizes[0].tolist())
        given = None if self.crop is None else tuple(int(n) for n in self.crop)
        if crop is None and given is None:
            raise SynthgenError("the batch has crop_start but no crop_size; pass the stream's batches unchanged, "
                                "or give DeviceStage(..., crop=stream.crop)")
        if crop is not None and given is not None and crop != given:
            raise SynthgenError(f"DeviceStage crop {given} differs from the stream's crop {crop}; leave crop out "
                                f"of DeviceStage (it takes the stream's)")
        return crop if crop is not None else given

    def set_epoch(self, epoch: int) -> None:
        """Augment epoch ``epoch``'s batches (a sample is augmented differently in each epoch)."""
        self.epoch = int(epoch)

    def batch_generator(self, indices: list[int]) -> torch.Generator:
        """The augmentation's CPU generator for a batch: named stream ``AUGMENT_STREAM`` of the
        seed, keyed by (epoch, the batch's sample indices in order; a mixed stream's items)."""
        return named_generator(self.seed, AUGMENT_STREAM, self.epoch, *indices)
