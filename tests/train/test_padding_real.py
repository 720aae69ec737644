"""Padding of the trainer's batches on the real data (../shared), against random batching."""

from __future__ import annotations

import numpy as np
import pytest

from oasst_data.tokenizer import load_tokenizer
from oasst_data.train.sampler import (
    BucketBatchSampler,
    FixedRows,
    TokenBudget,
    padding_share,
)
from oasst_data.train.shards import open_build

from ..conftest import REAL_TOKENIZER
from .conftest import MEASURED


def mean_share(rows, buckets, policy, epochs=20, multiple=None) -> float:
    sampler = BucketBatchSampler(rows.lengths, buckets, policy, seed=0)
    shares = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        shares.append(padding_share(list(sampler), rows.lengths, multiple))
    return float(np.mean(shares))


def test_bucketed_batches_of_the_real_build_pad_far_less_than_random_ones(real_shards):
    tokenizer = load_tokenizer(str(REAL_TOKENIZER))
    build = open_build(real_shards, tokenizer.fingerprint, vocab_size=len(tokenizer.tokenizer), max_length=2048)
    rows = build.train
    one_bucket = np.zeros_like(rows.buckets)
    random4 = mean_share(rows, one_bucket, FixedRows(4))
    bucketed4 = mean_share(rows, rows.buckets, FixedRows(4))
    budget = mean_share(rows, rows.buckets, TokenBudget(16384, 8), multiple=8)
    batches = BucketBatchSampler(rows.lengths, rows.buckets, TokenBudget(16384, 8)).num_batches
    expected = build.manifest["padding"]["bucketed"]["4"]  # the build's own prediction (exact expectation)
    MEASURED.append(
        f"padding share, real en_100 train split ({len(rows)} rows, {len(build.buckets)} buckets), mean of 20 epochs: "
        f"random 4-row {random4:.1%}, bucketed 4-row {bucketed4:.1%} (build predicted {expected:.1%}), "
        f"bucketed 16,384-token budget {budget:.1%} at {len(rows) / batches:.1f} rows per batch"
    )
    assert random4 > 0.40
    assert bucketed4 < 0.08 and bucketed4 < random4 / 5
    assert budget < 0.15
    assert bucketed4 == pytest.approx(expected, abs=0.02)
