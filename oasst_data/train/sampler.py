"""Length-bucket batch sampler: every batch from one bucket, batch order shuffled per epoch.

The batch size comes from a policy:

* `FixedRows(n)`: n rows per batch (the seed: 4 per device);
* `TokenBudget(n)`: as many rows of a bucket as fit in n padded tokens, counted against the
  bucket's longest row, so short rows come in large batches; no batch exceeds the budget except
  one of a single row wider than it, which comes alone (the trainer warns about such rows).

Both give a fixed number of batches per epoch (rows per batch depend on the bucket, not on the
shuffle), which the Trainer's step and learning-rate schedule rely on.

The plan of an epoch is a pure function of (seed, epoch): within each bucket the rows are
permuted and cut into batches, then the batches of all buckets are permuted together. Rank r of
w takes batches r, r+w, r+2w, ...; when the count does not divide, the first batches are
reused so every rank runs the same number of steps (accelerate's `BatchSamplerShard` deals
batches by the same rule, which is how the Trainer shards this sampler). `state_dict` /
`load_state_dict` resume in the middle of an epoch for a loop of one's own; the Trainer does not
call them: it resumes by skipping the batches of the steps already trained (accelerate's
`skip_first_batches`), which is right only on the same plan, so the trainer records the plan in
each checkpoint (`trainer.batch_plan`) and refuses to resume on another. No torch needed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import ConfigError, OasstDataError
from ..shards.buckets import rows_per_token_budget


def round_up(value: int, multiple: int | None) -> int:
    if not multiple or multiple <= 1:
        return int(value)
    return int(math.ceil(value / multiple) * multiple)


class BatchPolicy(Protocol):
    def rows_per_batch(self, longest: int) -> int:
        """Rows per batch for a bucket whose longest row has `longest` tokens."""

    def describe(self) -> str: ...


@dataclass(frozen=True)
class FixedRows:
    """A fixed number of rows per batch."""

    rows: int

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise ConfigError(f"rows per batch must be at least 1, got {self.rows}")

    def rows_per_batch(self, longest: int) -> int:
        return self.rows

    def describe(self) -> str:
        return f"{self.rows} rows per batch"


@dataclass(frozen=True)
class TokenBudget:
    """As many rows as fit in `tokens` padded tokens (at least one row)."""

    tokens: int
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise ConfigError(f"the token budget must be at least 1, got {self.tokens}")

    def rows_per_batch(self, longest: int) -> int:
        return rows_per_token_budget(self.tokens, round_up(longest, self.pad_to_multiple_of))

    def describe(self) -> str:
        return f"up to {self.tokens:,} padded tokens per batch"


class BucketBatchSampler:
    """Yields lists of row indices; use as `DataLoader(dataset, batch_sampler=...)`."""

    # accelerate reads these: variable-size batches, never dropped.
    batch_size = None
    drop_last = False

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        buckets: Sequence[int] | np.ndarray,
        policy: BatchPolicy,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        bucket_of_row = np.asarray(buckets, dtype=np.int64)
        if self.lengths.shape != bucket_of_row.shape or self.lengths.ndim != 1:
            raise ConfigError("lengths and buckets must be 1-D and of the same size")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is not in [0, {world_size})")
        self.policy = policy
        self.seed = int(seed)
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._skip = 0  # batches of the current epoch to skip (set by load_state_dict)
        self._yielded = 0
        order = np.argsort(bucket_of_row, kind="stable")
        ids, starts = np.unique(bucket_of_row[order], return_index=True)
        self._groups = [order[s:e] for s, e in zip(starts, list(starts[1:]) + [len(order)])]
        self.bucket_ids = ids.tolist()
        self.rows_per_batch = [policy.rows_per_batch(int(self.lengths[g].max())) for g in self._groups]
        self.num_batches = sum(math.ceil(len(g) / k) for g, k in zip(self._groups, self.rows_per_batch))

    # accelerate's DataLoaderShard.set_epoch reaches a wrapped batch sampler through `.sampler`.
    @property
    def sampler(self) -> BucketBatchSampler:
        return self

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:  # a new epoch starts at its first batch
            self._skip = 0
            self._yielded = 0
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        return math.ceil(self.num_batches / self.world_size) if self.num_batches else 0

    def epoch_plan(self, epoch: int | None = None) -> list[np.ndarray]:
        """All ranks' batches of an epoch, in order (rank r takes every world_size-th)."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        batches: list[np.ndarray] = []
        for group, size in zip(self._groups, self.rows_per_batch):
            rows = rng.permutation(group) if self.shuffle else group
            batches.extend(rows[i : i + size] for i in range(0, len(rows), size))
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def rank_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        batches = self.epoch_plan(epoch)
        if not batches:
            return []
        total = len(self) * self.world_size
        while len(batches) < total:  # reuse the first batches so every rank has len(self)
            batches = batches + batches[: total - len(batches)]
        return batches[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.rank_batches()
        start, self._skip = self._skip, 0
        for index in range(start, len(batches)):
            self._yielded = index + 1
            yield batches[index].tolist()

    def state_dict(self, batches_done: int | None = None) -> dict:
        """Where this rank stands: the epoch and how many of its batches were handed out.

        A DataLoader takes batches ahead of the loop (its workers prefetch, an accelerate loader
        holds one more), so "handed out" may be more than "trained on": pass the count your
        loop consumed as `batches_done` unless the loader has num_workers=0 and no lookahead.
        """
        return {
            "epoch": self.epoch,
            "batches_done": self._yielded if batches_done is None else int(batches_done),
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_batches": self.num_batches,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue after the batches recorded in `state` (same data, seed and world size)."""
        for key in ("seed", "rank", "world_size", "num_batches"):
            if state.get(key) != getattr(self, key):
                raise OasstDataError(
                    f"cannot resume the batch order: {key} was {state.get(key)!r}, now {getattr(self, key)!r}"
                )
        self.epoch = int(state["epoch"])
        self._skip = int(state["batches_done"])
        self._yielded = self._skip

    def describe(self) -> str:
        return f"{len(self.bucket_ids)} bucket(s), {self.policy.describe()}, {self.num_batches:,} batches per epoch"


def padding_share(batches: Sequence[Sequence[int]], lengths: np.ndarray, pad_to_multiple_of: int | None = None) -> float:
    """Padded tokens / all tokens of these batches when each is padded to its longest row."""
    lengths = np.asarray(lengths)
    real = padded = 0
    for batch in batches:
        if len(batch) == 0:
            continue
        rows = lengths[np.asarray(batch)]
        real += int(rows.sum())
        padded += len(rows) * round_up(int(rows.max()), pad_to_multiple_of)
    return 1.0 - real / padded if padded else 0.0
