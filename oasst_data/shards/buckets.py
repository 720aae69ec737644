"""Length buckets: chosen from the token-length distribution, or given explicitly.

Padding waste = padded tokens / all tokens, each batch padded to its longest row. The expected
waste is that of the trainer's sampler, exactly, with no sampling: a bucket's N rows are
shuffled and cut into N // B batches of B rows and one of N % B. Each batch of k rows is a
uniform k-subset, so P(max <= v) = C(c_v, k) / C(N, k) with c_v the rows of length <= v, and
E[padded tokens] = (N // B) * B * E[max_B] + (N % B) * E[max_{N % B}]. (Drawing rows with
replacement instead reads small buckets low: it may miss the bucket's longest row, a real
batch of the whole bucket never does.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError


@dataclass(frozen=True)
class Bucket:
    index: int
    min_length: int  # inclusive
    max_length: int  # inclusive

    def to_dict(self) -> dict:
        return {"index": self.index, "min_length": self.min_length, "max_length": self.max_length}


def expected_padding_waste(lengths: np.ndarray | Sequence[int], batch_size: int) -> float:
    """Expected share of padded tokens when these rows are shuffled and cut into batches of
    `batch_size` (the last one holding the rest), as the trainer's sampler batches a bucket."""
    values = np.asarray(lengths, dtype=np.int64)
    if values.size == 0:
        return 0.0
    distinct, counts = np.unique(values, return_counts=True)
    return waste_of_histogram(distinct, counts, batch_size)


# log(n!) = lgamma(n + 1), elementwise: only at the few counts a histogram needs (a table up to
# the row count would hold 8 bytes a row, 400 MB for 5e7 rows).
_lgamma = np.frompyfunc(math.lgamma, 1, 1)


def _log_factorial(counts: np.ndarray | int) -> np.ndarray:
    return np.asarray(_lgamma(np.asarray(counts, dtype=np.float64) + 1.0), dtype=np.float64)


def _expected_max(distinct: np.ndarray, cumulative: np.ndarray, total: int, k: int) -> float:
    """E[max length] of k rows drawn without replacement; `cumulative[i]` rows are <= distinct[i]."""
    enough = cumulative >= k
    # C(c, k) / C(total, k) = c! (total - k)! / ((c - k)! total!); zero while c < k.
    log_p = (
        _log_factorial(cumulative) - _log_factorial(np.where(enough, cumulative - k, 0))
        + _log_factorial(total - k) - _log_factorial(total)
    )
    p_at_most = np.where(enough, np.exp(np.minimum(log_p, 0.0)), 0.0)
    p_at_most[-1] = 1.0  # every row is <= the longest: exact, not exp of a rounded 0
    previous = np.concatenate(([0.0], p_at_most[:-1]))
    return float(np.sum(distinct * (p_at_most - previous)))


def waste_of_histogram(distinct: np.ndarray, counts: np.ndarray, batch_size: int) -> float:
    """`expected_padding_waste` of the rows given as ascending distinct lengths and their counts."""
    distinct = np.asarray(distinct, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0 or batch_size <= 1:
        return 0.0
    k = min(int(batch_size), total)
    full_batches, rest = divmod(total, k)
    cumulative = np.cumsum(counts)
    padded = full_batches * k * _expected_max(distinct, cumulative, total, k)
    if rest:
        padded += rest * _expected_max(distinct, cumulative, total, rest)
    real = float(np.sum(distinct * counts))
    # padded >= real; clamp the rounding noise of equal lengths (never report -0.0%).
    return max(0.0, 1.0 - real / padded) if padded > 0 else 0.0


def rows_per_token_budget(batch_tokens: int, longest: int) -> int:
    """Rows of a token-budget batch whose longest row has `longest` (padded) tokens: the one rule
    the trainer's TokenBudget, the build's bucket choice and the stats all use."""
    return max(1, batch_tokens // max(1, longest))


def choose_buckets(
    lengths: np.ndarray,
    max_length: int,
    batch_size: int = 4,
    max_waste: float = 0.05,
    min_rows: int | None = None,
    batch_tokens: int | None = None,
) -> list[Bucket]:
    """Greedy left-to-right buckets over the sorted distinct lengths.

    A bucket grows while its expected waste stays within `max_waste`, and in any case until it
    holds `min_rows` rows (tiny buckets give ragged last batches). The waste is that of batches
    of `batch_size` rows or, with `batch_tokens`, of token-budget batches: as many rows as fit
    in `batch_tokens` padded to the bucket's longest row, so short buckets, whose batches hold
    many rows and nearly always contain the bucket's longest length, are cut narrower.
    The last bucket always ends at `max_length`, the first starts at 1.
    """
    if len(lengths) == 0:
        return [Bucket(0, 1, max_length)]
    distinct, counts = np.unique(np.asarray(lengths, dtype=np.int64), return_counts=True)
    if min_rows is None:
        # Enough rows for a few batches; more on big data, so buckets stay few and full.
        min_rows = max(batch_size * 2, min(256, len(lengths) // 200))
    bounds: list[int] = []
    start = 0
    while start < len(distinct):
        end = start + 1  # exclusive
        rows = int(counts[start])
        while end < len(distinct):
            candidate_rows = rows + int(counts[end])
            rows_per_batch = rows_per_token_budget(batch_tokens, int(distinct[end])) if batch_tokens else batch_size
            waste = waste_of_histogram(distinct[start : end + 1], counts[start : end + 1], rows_per_batch)
            if waste > max_waste and rows >= min_rows:
                break
            rows = candidate_rows
            end += 1
        bounds.append(int(distinct[end - 1]))
        start = end
    # Too few rows left for a bucket of their own: fold them into the previous one.
    if len(bounds) > 1:
        last_rows = int(counts[distinct > bounds[-2]].sum())
        if last_rows < min_rows:
            bounds.pop(-2)
    bounds[-1] = max(bounds[-1], max_length)
    return buckets_from_bounds(bounds, max_length)


def buckets_from_bounds(upper_bounds: Sequence[int], max_length: int) -> list[Bucket]:
    """Buckets from ascending inclusive upper bounds; the last one is raised to max_length."""
    bounds = sorted({int(b) for b in upper_bounds if int(b) > 0})
    if not bounds:
        raise ConfigError("--buckets needs at least one positive upper bound")
    bounds = [b for b in bounds if b < max_length] + [max_length]
    buckets = []
    low = 1
    for index, high in enumerate(bounds):
        buckets.append(Bucket(index, low, high))
        low = high + 1
    return buckets


def assign_buckets(lengths: np.ndarray, buckets: Sequence[Bucket]) -> np.ndarray:
    uppers = np.array([b.max_length for b in buckets], dtype=np.int64)
    return np.searchsorted(uppers, np.asarray(lengths, dtype=np.int64), side="left").astype(np.int32)


def combined_waste(parts: Iterable[tuple[float, float]]) -> float:
    """Padding share over several buckets, each batched on its own, from (tokens, waste) of
    each: padded tokens over all tokens (a bucket of more tokens weighs more)."""
    real = padded = 0.0
    for tokens, waste in parts:
        if tokens > 0:
            real += tokens
            padded += tokens / (1.0 - waste)
    return max(0.0, 1.0 - real / padded) if padded else 0.0


def padding_report(
    lengths: np.ndarray,
    bucket_of_row: np.ndarray,
    buckets: Sequence[Bucket],
    batch_sizes: Sequence[int],
    batch_tokens: int | None = None,
) -> dict:
    """Expected padding waste per bucket and overall, against random batching over all rows;
    with `batch_tokens`, also for token-budget batches (rows per batch set by each bucket's longest row)."""
    report: dict = {"batch_sizes": list(batch_sizes), "random": {}, "bucketed": {}, "per_bucket": []}
    parts = []  # (tokens, {batch size: waste}, token-budget waste or None) of each bucket
    for bucket in buckets:
        rows = lengths[bucket_of_row == bucket.index]
        wastes = {size: expected_padding_waste(rows, size) for size in batch_sizes}
        entry = bucket.to_dict() | {"rows": int(rows.size)}
        entry["expected_waste"] = {str(size): round(waste, 6) for size, waste in wastes.items()}
        budget_waste = None
        if batch_tokens and rows.size:
            per_batch = rows_per_token_budget(batch_tokens, int(rows.max()))
            budget_waste = expected_padding_waste(rows, per_batch)
            entry["token_budget"] = {"rows_per_batch": per_batch, "expected_waste": round(budget_waste, 6)}
        report["per_bucket"].append(entry)
        parts.append((float(rows.sum()), wastes, budget_waste))
    for size in batch_sizes:
        report["random"][str(size)] = round(expected_padding_waste(lengths, size), 6)
        report["bucketed"][str(size)] = round(combined_waste((tokens, wastes[size]) for tokens, wastes, _ in parts), 6)
    if batch_tokens:
        bucketed = combined_waste((tokens, budget) for tokens, _, budget in parts if budget is not None)
        report["token_budget"] = {"batch_tokens": batch_tokens, "bucketed": round(bucketed, 6)}
    return report
