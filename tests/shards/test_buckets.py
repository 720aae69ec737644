"""Automatic length buckets: tuned for fixed-row batches or for token-budget batches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oasst_data.shards.buckets import (
    assign_buckets,
    choose_buckets,
    expected_padding_waste,
    padding_report,
    rows_per_token_budget,
)
from oasst_data.train.sampler import BucketBatchSampler, TokenBudget, padding_share

LENGTHS_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "en100_lengths.json"
BUDGET = 16384


def realistic_lengths(n: int, seed: int = 0) -> np.ndarray:
    """n lengths drawn from the recorded distribution of the real en_100 threads."""
    real = np.array(json.loads(LENGTHS_FILE.read_text())["lengths"])
    return np.random.default_rng(seed).choice(real, size=n)


def measured_budget_padding(lengths: np.ndarray, buckets, epochs: int = 10) -> float:
    sampler = BucketBatchSampler(lengths, assign_buckets(lengths, buckets), TokenBudget(BUDGET), seed=1)
    return float(np.mean([padding_share(sampler.epoch_plan(epoch), lengths) for epoch in range(epochs)]))


@settings(max_examples=60, deadline=None)
@given(
    # Dense enough that buckets end on the waste target, not on min_rows.
    st.lists(st.integers(1, 400), min_size=200, max_size=1500),
    st.sampled_from([512, 4096, 16384]),
    st.sampled_from([0.02, 0.05, 0.1]),
)
def test_token_budget_buckets_stay_within_the_waste_target_unless_too_small(lengths, tokens, max_waste):
    lengths = np.array(lengths)
    min_rows = 8
    buckets = choose_buckets(lengths, 2048, max_waste=max_waste, min_rows=min_rows, batch_tokens=tokens)
    assert buckets[0].min_length == 1 and buckets[-1].max_length == 2048
    assert all(a.max_length + 1 == b.min_length for a, b in zip(buckets, buckets[1:]))
    for bucket in buckets[:-1]:  # the last one takes whatever is left
        rows = lengths[(lengths >= bucket.min_length) & (lengths <= bucket.max_length)]
        waste = expected_padding_waste(rows, rows_per_token_budget(tokens, int(rows.max())))
        below_longest = rows[rows < rows.max()]
        # Over the target only when the bucket had to grow to min_rows.
        assert waste <= max_waste + 1e-12 or below_longest.size < min_rows


@pytest.mark.parametrize("rows", [533, 5000])
def test_buckets_tuned_for_the_token_budget_pad_less_under_it(rows):
    lengths = realistic_lengths(rows)
    for_rows = choose_buckets(lengths, 2048, batch_size=4, max_waste=0.05)
    for_tokens = choose_buckets(lengths, 2048, max_waste=0.05, batch_tokens=BUDGET)
    by_rows, by_tokens = measured_budget_padding(lengths, for_rows), measured_budget_padding(lengths, for_tokens)
    assert by_tokens < by_rows - 0.01
    # The build's prediction (exact expectation, rows drawn with replacement) is close to the sampler's.
    report = padding_report(lengths, assign_buckets(lengths, for_tokens), for_tokens, [4], batch_tokens=BUDGET)
    assert report["token_budget"]["bucketed"] == pytest.approx(by_tokens, abs=0.01)


def test_without_a_budget_the_report_has_no_token_budget_entry():
    lengths = realistic_lengths(200)
    buckets = choose_buckets(lengths, 2048)
    report = padding_report(lengths, assign_buckets(lengths, buckets), buckets, [4])
    assert "token_budget" not in report and all("token_budget" not in entry for entry in report["per_bucket"])


def bucket_rows(lengths: np.ndarray, buckets) -> list[int]:
    return [int(((lengths >= b.min_length) & (lengths <= b.max_length)).sum()) for b in buckets]


def test_a_last_bucket_of_exactly_min_rows_is_kept_and_a_smaller_one_folded():
    short = [100] * 10
    kept = choose_buckets(np.array(short + [1000] * 4), 2048, batch_size=4, max_waste=0.01, min_rows=4)
    assert [(b.min_length, b.max_length) for b in kept] == [(1, 100), (101, 2048)]
    assert bucket_rows(np.array(short + [1000] * 4), kept) == [10, 4]
    folded = choose_buckets(np.array(short + [1000] * 3), 2048, batch_size=4, max_waste=0.01, min_rows=4)
    assert [(b.min_length, b.max_length) for b in folded] == [(1, 2048)]


@pytest.mark.parametrize("rows", [5000, 20000])
def test_on_big_data_no_automatic_bucket_holds_fewer_than_a_200th_of_the_rows(rows):
    lengths = realistic_lengths(rows)
    floor = min(256, rows // 200)
    for batch_tokens in (None, BUDGET):
        buckets = choose_buckets(lengths, 2048, batch_size=4, max_waste=0.05, batch_tokens=batch_tokens)
        counts = bucket_rows(lengths, buckets)
        assert len(buckets) > 1 and min(counts) >= floor, counts
