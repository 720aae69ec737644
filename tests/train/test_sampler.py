"""BucketBatchSampler: one bucket per batch, every row once per epoch, per-rank shares, resume.

Rows here are lengths only. The realistic ones are drawn from the recorded length distribution
of the real Open-Assistant threads (benchmarks/data/en100_lengths.json) and bucketed with the
build's own bucket chooser: this tests the sampler, not the build.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oasst_data.errors import ConfigError, OasstDataError
from oasst_data.shards.buckets import assign_buckets, choose_buckets
from oasst_data.train.sampler import (
    BucketBatchSampler,
    FixedRows,
    TokenBudget,
    padding_share,
    round_up,
)

from .conftest import MEASURED

LENGTHS_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "en100_lengths.json"


def realistic_rows(n: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n lengths drawn (with replacement) from the real distribution, and their buckets."""
    real = np.array(json.loads(LENGTHS_FILE.read_text())["lengths"])
    lengths = np.random.default_rng(seed).choice(real, size=n)
    buckets = choose_buckets(lengths, max_length=2048, batch_size=4, max_waste=0.05)
    return lengths, assign_buckets(lengths, buckets)


@pytest.fixture(scope="module")
def rows() -> tuple[np.ndarray, np.ndarray]:
    return realistic_rows()


POLICIES = [FixedRows(4), FixedRows(7), TokenBudget(4096), TokenBudget(16384, pad_to_multiple_of=8)]


def flat(batches) -> list[int]:
    return [i for batch in batches for i in batch]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.describe())
def test_batches_never_mix_buckets_and_cover_every_row_once(rows, policy):
    lengths, buckets = rows
    sampler = BucketBatchSampler(lengths, buckets, policy, seed=3)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == sampler.num_batches
        for batch in batches:
            assert len(set(buckets[batch].tolist())) == 1
        assert sorted(flat(batches)) == list(range(len(lengths)))


def test_token_budget_bounds_padded_tokens_and_gives_short_rows_bigger_batches(rows):
    lengths, buckets = rows
    sampler = BucketBatchSampler(lengths, buckets, TokenBudget(8192, pad_to_multiple_of=8), seed=1)
    batches = list(sampler)
    for batch in batches:
        padded = len(batch) * round_up(int(lengths[batch].max()), 8)
        assert padded <= 8192 or len(batch) == 1
    assert sampler.rows_per_batch[0] > 8 * sampler.rows_per_batch[-1]  # ~280 rows of <=18 tokens vs 4 of ~2048
    partial = Counter()
    for batch in batches:
        position = sampler.bucket_ids.index(int(buckets[batch[0]]))
        if len(batch) != sampler.rows_per_batch[position]:
            partial[position] += 1
    assert all(count == 1 for count in partial.values())  # at most one short batch per bucket


def test_order_depends_on_seed_and_epoch_only(rows):
    lengths, buckets = rows
    a = BucketBatchSampler(lengths, buckets, FixedRows(4), seed=7)
    b = BucketBatchSampler(lengths, buckets, FixedRows(4), seed=7)
    assert list(a) == list(b)
    epoch0 = list(a)
    a.set_epoch(1)
    assert list(a) != epoch0
    assert list(BucketBatchSampler(lengths, buckets, FixedRows(4), seed=8)) != epoch0
    # Batches are shuffled across buckets, not served bucket after bucket.
    first = [int(buckets[batch[0]]) for batch in epoch0[:20]]
    assert first != sorted(first)


def test_no_shuffle_is_deterministic_bucket_order(rows):
    lengths, buckets = rows
    batches = list(BucketBatchSampler(lengths, buckets, FixedRows(4), shuffle=False))
    firsts = [int(buckets[b[0]]) for b in batches]
    assert firsts == sorted(firsts)


@pytest.mark.parametrize("world_size", [2, 3, 8])
def test_ranks_get_distinct_batches_and_together_cover_all_rows(rows, world_size):
    lengths, buckets = rows
    per_rank = [list(BucketBatchSampler(lengths, buckets, TokenBudget(4096), seed=5, rank=r, world_size=world_size)) for r in range(world_size)]
    assert len({len(batches) for batches in per_rank}) == 1  # every rank runs the same number of steps
    counts = Counter(flat(b for batches in per_rank for b in batches))
    assert set(counts) == set(range(len(lengths)))
    total_batches = BucketBatchSampler(lengths, buckets, TokenBudget(4096), seed=5).num_batches
    reused = len(per_rank[0]) * world_size - total_batches  # batches reused to even out the ranks
    assert reused < world_size
    assert sum(c - 1 for c in counts.values()) <= reused * max(len(b) for batches in per_rank for b in batches)
    for r in range(1, world_size):
        assert per_rank[r][: len(per_rank[r]) - 1] != per_rank[0][: len(per_rank[r]) - 1]


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_rank_share_is_what_accelerate_deals_from_the_global_plan(rows, world_size):
    """The Trainer lets accelerate's BatchSamplerShard shard the global plan; it must match our rule."""
    pytest.importorskip("torch")
    shard = pytest.importorskip("accelerate.data_loader").BatchSamplerShard
    lengths, buckets = rows
    lengths, buckets = lengths[:997], buckets[:997]  # a batch count that does not divide
    global_plan = BucketBatchSampler(lengths, buckets, FixedRows(4), seed=2)
    for rank in range(world_size):
        ours = list(BucketBatchSampler(lengths, buckets, FixedRows(4), seed=2, rank=rank, world_size=world_size))
        theirs = list(shard(global_plan, num_processes=world_size, process_index=rank))
        assert ours == theirs
        assert len(shard(global_plan, num_processes=world_size, process_index=rank)) == len(ours)


@pytest.mark.parametrize("policy", [FixedRows(4), TokenBudget(4096)], ids=lambda p: p.describe())
def test_resume_mid_epoch_continues_with_the_remaining_batches(rows, policy):
    lengths, buckets = rows
    reference = BucketBatchSampler(lengths, buckets, policy, seed=11, rank=1, world_size=2)
    reference.set_epoch(2)
    full = list(reference)

    first = BucketBatchSampler(lengths, buckets, policy, seed=11, rank=1, world_size=2)
    first.set_epoch(2)
    iterator = iter(first)
    seen = [next(iterator) for _ in range(37)]
    state = json.loads(json.dumps(first.state_dict()))  # survives a checkpoint file

    resumed = BucketBatchSampler(lengths, buckets, policy, seed=11, rank=1, world_size=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the Trainer sets the epoch again: it must not lose the position
    rest = list(resumed)
    assert seen + rest == full
    resumed.set_epoch(3)
    assert len(list(resumed)) == len(full)  # the next epoch starts from its beginning


def test_resume_refuses_a_different_world(rows):
    lengths, buckets = rows
    state = BucketBatchSampler(lengths, buckets, FixedRows(4), world_size=2).state_dict()
    with pytest.raises(Exception, match="world_size"):
        BucketBatchSampler(lengths, buckets, FixedRows(4), world_size=4).load_state_dict(state)
    with pytest.raises(Exception, match="rank was 0, now 1"):
        BucketBatchSampler(lengths, buckets, FixedRows(4), rank=1, world_size=2).load_state_dict(state)


def test_a_state_taken_at_the_start_of_an_epoch_resumes_the_whole_epoch(rows):
    lengths, buckets = rows
    sampler = BucketBatchSampler(lengths, buckets, FixedRows(4), seed=3)
    first_epoch = list(sampler)
    sampler.set_epoch(1)  # the previous epoch's count must not carry over
    state = sampler.state_dict()
    assert (state["epoch"], state["batches_done"]) == (1, 0)
    resumed = BucketBatchSampler(lengths, buckets, FixedRows(4), seed=3)
    resumed.load_state_dict(state)
    assert len(list(resumed)) == len(first_epoch)


def test_the_state_can_record_the_batches_the_loop_consumed(rows):
    """A loader runs ahead of the loop; the loop's own count is what resuming needs."""
    lengths, buckets = rows
    sampler = BucketBatchSampler(lengths, buckets, FixedRows(4), seed=3)
    full = list(BucketBatchSampler(lengths, buckets, FixedRows(4), seed=3))
    iterator = iter(sampler)
    fetched = [next(iterator) for _ in range(7)]  # a prefetching loader took 7; the loop trained on 3
    assert sampler.state_dict()["batches_done"] == 7
    resumed = BucketBatchSampler(lengths, buckets, FixedRows(4), seed=3)
    resumed.load_state_dict(sampler.state_dict(batches_done=3))
    assert fetched[:3] + list(resumed) == full


def test_padding_share_far_below_random_batching_on_the_real_length_distribution(rows):
    lengths, buckets = rows
    one_bucket = np.zeros_like(buckets)
    random4 = padding_share(list(BucketBatchSampler(lengths, one_bucket, FixedRows(4), seed=0)), lengths)
    bucketed4 = padding_share(list(BucketBatchSampler(lengths, buckets, FixedRows(4), seed=0)), lengths)
    budget = list(BucketBatchSampler(lengths, buckets, TokenBudget(16384, 8), seed=0))
    budget_share = padding_share(budget, lengths, 8)
    MEASURED.append(
        f"padding share, {len(lengths)} rows drawn from the real length distribution: random 4-row batches "
        f"{random4:.1%}, bucketed 4-row {bucketed4:.1%}, bucketed 16,384-token budget {budget_share:.1%} "
        f"({len(lengths) / len(budget):.1f} rows per batch on average)"
    )
    assert random4 > 0.35
    assert bucketed4 < 0.06
    assert budget_share < 0.10
    assert bucketed4 < random4 / 8


def test_random_batching_for_comparison_is_one_bucket(rows):
    lengths, buckets = rows
    batches = list(BucketBatchSampler(lengths, np.zeros_like(buckets), FixedRows(4), seed=0))
    mixed = sum(len(set(buckets[b].tolist())) > 1 for b in batches)
    assert mixed > len(batches) / 2


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 300), min_size=1, max_size=120),
    n_buckets=st.integers(1, 5),
    rows_or_tokens=st.one_of(st.builds(FixedRows, st.integers(1, 9)), st.builds(TokenBudget, st.integers(1, 2000), st.sampled_from([None, 8]))),
    world_size=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_invariants_hold_for_any_input(lengths, n_buckets, rows_or_tokens, world_size, seed):
    lengths = np.array(lengths)
    buckets = np.minimum(lengths * n_buckets // 301, n_buckets - 1)
    per_rank = [list(BucketBatchSampler(lengths, buckets, rows_or_tokens, seed=seed, rank=r, world_size=world_size)) for r in range(world_size)]
    assert len({len(b) for b in per_rank}) == 1
    everything = [batch for batches in per_rank for batch in batches]
    assert set(flat(everything)) == set(range(len(lengths)))
    for batch in everything:
        assert batch and len(set(buckets[batch].tolist())) == 1
    single = list(BucketBatchSampler(lengths, buckets, rows_or_tokens, seed=seed))
    assert sorted(flat(single)) == list(range(len(lengths)))


def test_resume_refuses_a_state_taken_on_a_different_number_of_batches(rows):
    """Other data (or another batch policy) means another plan: skipping its count would be wrong."""
    lengths, buckets = rows
    state = BucketBatchSampler(lengths[:1000], buckets[:1000], FixedRows(4), seed=3).state_dict()
    resumed = BucketBatchSampler(lengths, buckets, FixedRows(4), seed=3)
    assert state["num_batches"] != resumed.num_batches
    with pytest.raises(OasstDataError, match="num_batches was"):
        resumed.load_state_dict(state)


@pytest.mark.parametrize("rank, world_size", [(2, 2), (1, 1), (-1, 2)])
def test_a_rank_outside_the_world_is_refused(rows, rank, world_size):
    lengths, buckets = rows
    with pytest.raises(ConfigError, match=rf"rank {rank} is not in \[0, {world_size}\)"):
        BucketBatchSampler(lengths, buckets, FixedRows(4), rank=rank, world_size=world_size)


def test_no_shuffle_keeps_rows_of_each_bucket_in_index_order():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 500, size=2000)
    buckets = rng.integers(0, 5, size=2000)
    batches = list(BucketBatchSampler(lengths, buckets, FixedRows(4), shuffle=False))
    expected = [int(i) for bucket in range(5) for i in np.flatnonzero(buckets == bucket)]
    assert flat(batches) == expected


def test_padding_share_counts_the_padding_up_to_the_multiple():
    lengths = np.array([9, 16])
    assert padding_share([[0]], lengths) == 0.0
    assert padding_share([[0]], lengths, pad_to_multiple_of=8) == pytest.approx(7 / 16)
    assert padding_share([[0, 1]], lengths, pad_to_multiple_of=8) == pytest.approx(7 / 32)
