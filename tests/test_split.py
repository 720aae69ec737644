"""Train/validation assignment by (seed, id): the seed matters, the result is stable, the share is val_split."""

from __future__ import annotations

import pytest

from oasst_data.config import ThreadConfig
from oasst_data.conversation import Split
from oasst_data.split import assign_split, unit_hash

KEYS = [f"tree-{index}" for index in range(4000)]


def validation_keys(seed: int, val_split: float = 0.2) -> set[str]:
    return {key for key in KEYS if assign_split(key, val_split, seed) is Split.VALIDATION}


def test_the_same_seed_gives_the_same_assignment_every_time():
    assert validation_keys(seed=5) == validation_keys(seed=5)
    assert unit_hash(5, "tree-1") == unit_hash(5, "tree-1")


def test_different_seeds_give_different_assignments():
    """--seed (ThreadConfig.seed) must change which trees land in validation."""
    default = ThreadConfig().seed
    chosen = [validation_keys(seed) for seed in (default, 1, 2)]
    for a in range(len(chosen)):
        for b in range(a + 1, len(chosen)):
            assert chosen[a] != chosen[b]
            # Independent draws: the overlap is near 0.2 * 0.2 of the keys, far from all of them.
            assert len(chosen[a] & chosen[b]) < 0.5 * len(chosen[a])
    assert unit_hash(1, "tree-1") != unit_hash(2, "tree-1")


@pytest.mark.parametrize("val_split", [0.05, 0.2, 0.5])
def test_the_validation_share_is_near_val_split(val_split):
    share = len(validation_keys(seed=3, val_split=val_split)) / len(KEYS)
    assert share == pytest.approx(val_split, abs=0.03)


def test_no_validation_without_a_val_split():
    assert validation_keys(seed=3, val_split=0.0) == set()
