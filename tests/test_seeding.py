"""Random streams (synthgen.seeding): the online augmentation and the training loop draw from
their own named streams, which never coincide with the generator of an engine's sample stream
(they used to: the augmentation of sample i in epoch 0 was sample_generator(0, i, 0), the label
map's, and so was the loop's generator of step i on rank 0)."""

from __future__ import annotations

import pytest
import torch

from synthgen.seeding import (AUGMENT_STREAM, BUILD_STREAM, GLOBAL_STREAM, LABEL_STREAM, MIX_SOURCE_STREAM,
                              MIX_STREAM, PAIR_STREAM, PATCH_STREAM, STEP_STREAM, VALIDATION_STREAM, VIEW_STREAMS, named_generator, named_seed, sample_generator,
                              sample_seed, seed_from)
from synthgen.stream import DeviceStage

SAMPLE_STREAMS = (LABEL_STREAM, *VIEW_STREAMS)
NAMED_STREAMS = (AUGMENT_STREAM, BUILD_STREAM, GLOBAL_STREAM, STEP_STREAM, VALIDATION_STREAM, MIX_STREAM,
                 MIX_SOURCE_STREAM, PAIR_STREAM)
SPEC = "generate:label-ensemble?n=3000&size=32&seed=0"


def first_draws(generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2**62, (4,), generator=generator)


@pytest.fixture(scope="module")
def stage() -> DeviceStage:
    """The augmenting DeviceStage of a 3000-sample dataset with the default seeds."""
    return DeviceStage(SPEC, augment=True, seed=0)


def test_seed_sequence_pads_short_entropy_with_zeros() -> None:
    """Why a named stream's entropy is long: numpy hashes (s, i) and (s, i, 0) alike, so a short
    tuple such as the augmentation's former (seed, index) is a sample's stream 0."""
    assert seed_from(0, 7) == seed_from(0, 7, 0) == sample_seed(0, 7, LABEL_STREAM)
    assert named_seed(0, AUGMENT_STREAM, 0) != named_seed(0, AUGMENT_STREAM, 0, 0)


def test_augmentation_never_draws_from_a_sample_stream_of_the_same_sample(stage: DeviceStage) -> None:
    """For 3 epochs x 3000 samples (batches of one, and of two), the augmentation's first draws
    differ from those of every engine stream of the samples in the batch."""
    samples = [[first_draws(sample_generator(0, index, stream)) for stream in SAMPLE_STREAMS]
               for index in range(3000)]
    for epoch in range(3):
        stage.set_epoch(epoch)
        for index in range(3000):
            for batch in ([index], [index, (index + 1) % 3000]):
                augment = first_draws(stage.batch_generator(batch))
                assert not any(torch.equal(augment, draws) for draws in samples[index]), (epoch, batch)


def test_named_seeds_are_disjoint_from_every_sample_seed_and_from_each_other() -> None:
    """No seed of a named stream (the augmentation's, the training loop's, the mixed and pair
    streams') with one- or two-integer keys below 200 equals a sample seed of any index below
    200 and stream up to PATCH_STREAM (seeds 0 and 5), and no two streams or keys share a seed."""
    keys = [(k,) for k in range(200)] + [(k, r) for k in range(200) for r in range(200)]
    for seed in (0, 5):
        samples = {sample_seed(seed, index, stream) for index in range(200) for stream in range(PATCH_STREAM + 1)}
        named = [named_seed(seed, stream, *key) for stream in NAMED_STREAMS for key in keys]
        assert len(set(named)) == len(named)
        assert not samples & set(named)


def test_augmentation_generator_is_a_pure_function_of_seed_epoch_and_indices(stage: DeviceStage) -> None:
    other = DeviceStage(SPEC, augment=True, seed=0)
    stage.set_epoch(2)
    other.set_epoch(2)
    assert torch.equal(first_draws(stage.batch_generator([4, 9])), first_draws(other.batch_generator([4, 9])))
    assert torch.equal(first_draws(stage.batch_generator([4, 9])),
                       first_draws(named_generator(0, AUGMENT_STREAM, 2, 4, 9)))
    different = [first_draws(stage.batch_generator([9, 4])),
                 first_draws(DeviceStage(SPEC, seed=1).batch_generator([4, 9]))]
    stage.set_epoch(3)
    different.append(first_draws(stage.batch_generator([4, 9])))
    reference = first_draws(named_generator(0, AUGMENT_STREAM, 2, 4, 9))
    assert not any(torch.equal(reference, draws) for draws in different)


def test_augmented_batches_repeat_per_epoch_and_differ_between_epochs(stage: DeviceStage) -> None:
    batch = {"index": torch.tensor([3, 8])}  # a generate: spec's stage renders the samples
    stage.set_epoch(0)
    first, again = stage(dict(batch), "cpu"), stage(dict(batch), "cpu")
    stage.set_epoch(1)
    later = stage(dict(batch), "cpu")
    assert torch.equal(first["view1"], again["view1"]) and torch.equal(first["view2"], again["view2"])
    assert not torch.equal(first["view1"], later["view1"])


def test_named_seed_rejects_an_empty_key_and_negative_numbers() -> None:
    with pytest.raises(ValueError, match="needs a key"):
        named_seed(0, AUGMENT_STREAM)
    with pytest.raises(ValueError, match="non-negative"):
        named_seed(0, AUGMENT_STREAM, -1)
