"""BucketTrainer's loaders under accelerate's multi-process wrappers (no processes started)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
data_loader = pytest.importorskip("accelerate.data_loader")

from oasst_data.train.sampler import BucketBatchSampler, FixedRows  # noqa: E402
from oasst_data.train.trainer import keep_epoch_reachable  # noqa: E402

LENGTHS = np.arange(1, 41)
BUCKETS = LENGTHS // 10


def sampler(**rank) -> BucketBatchSampler:
    return BucketBatchSampler(LENGTHS, BUCKETS, FixedRows(2), seed=5, **rank)


def rank_one_loader(ours: BucketBatchSampler, reachable: bool):
    """What accelerator.prepare makes of our loader on rank 1 of 2."""
    shard = data_loader.BatchSamplerShard(ours, num_processes=2, process_index=1)
    loader = data_loader.DataLoaderShard(list(range(len(LENGTHS))), batch_sampler=shard)
    if reachable:
        keep_epoch_reachable(loader, ours)
    return loader


@pytest.mark.parametrize("skip", [0, 3], ids=["whole-epoch", "resumed-mid-epoch"])
def test_the_epoch_reaches_the_sampler_through_the_shard_and_skip_wrappers(skip):
    # Without keep_epoch_reachable the resumed case keeps epoch 0's order (accelerate 1.15): a
    # resumed 2-rank DeepSpeed run diverged from the uninterrupted one that way.
    ours = sampler()
    loader = rank_one_loader(ours, reachable=True)
    if skip:  # what the Trainer does to the first epoch after a mid-epoch resume
        loader = data_loader.skip_first_batches(loader, skip)
    loader.set_epoch(2)
    got = [batch.tolist() for batch in loader]
    want = [batch.tolist() for batch in sampler(rank=1, world_size=2).rank_batches(epoch=2)][skip:]
    assert ours.epoch == 2 and got == want


def test_a_loader_without_a_shard_is_left_alone():
    ours = sampler()
    loader = data_loader.DataLoaderShard(list(range(len(LENGTHS))), batch_sampler=ours)
    keep_epoch_reachable(loader, ours)
    assert loader.batch_sampler is ours and ours.sampler is ours
