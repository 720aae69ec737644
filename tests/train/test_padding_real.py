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


def test_buckets_built_for_the_token_budget_pad_less_under_it(real_shards, tmp_path):
    from ..conftest import REAL_TREES
    from .conftest import build_with_cli

    tuned = build_with_cli(tmp_path / "tuned", str(REAL_TREES), "--tokenizer", str(REAL_TOKENIZER), "--lang", "en", "--bucket-batch-tokens", "16384")
    tokenizer = load_tokenizer(str(REAL_TOKENIZER))
    shares = {}
    for name, folder in (("4-row buckets", real_shards), ("token-budget buckets", tuned)):
        build = open_build(folder, tokenizer.fingerprint, vocab_size=len(tokenizer.tokenizer), max_length=2048)
        shares[name] = (mean_share(build.train, build.train.buckets, TokenBudget(16384, 8), multiple=8), len(build.buckets))
    predicted = build.manifest["padding"]["token_budget"]["bucketed"]
    MEASURED.append(
        "padding share of 16,384-token batches, real en_100 train split, mean of 20 epochs: "
        + ", ".join(f"{name} ({count}) {share:.1%}" for name, (share, count) in shares.items())
        + f" (build predicted {predicted:.1%})"
    )
    assert shares["token-budget buckets"][0] < shares["4-row buckets"][0] - 0.01
    assert shares["token-budget buckets"][0] == pytest.approx(predicted, abs=0.02)
