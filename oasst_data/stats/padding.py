"""Expected padding waste of random batches, exactly, from a length histogram.

A batch of B rows pads every row to the batch's longest: waste = 1 - sum(lengths) / (B * max).
For B rows drawn at random with replacement from lengths with empirical CDF F,
E[max] = sum_v v * (F(v)^B - F(v-)^B), and the expected waste is taken as
1 - mean / E[max] (the share of padded tokens over many batches). No sampling, and only the
distinct lengths and their counts are needed, never the rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..shards.buckets import rows_per_token_budget

BATCH_SIZES = (1, 4, 8)


def expected_waste(histogram: Mapping[int, int], batch_size: int) -> float:
    """Expected padding share for random batches of `batch_size` rows; {length: rows} in."""
    items = sorted((int(length), int(rows)) for length, rows in histogram.items() if rows > 0)
    total = sum(rows for _, rows in items)
    if total == 0 or batch_size <= 1:
        return 0.0
    cumulative = 0
    previous_cdf = 0.0
    expected_max = 0.0
    weighted = 0
    for length, rows in items:
        cumulative += rows
        cdf = cumulative / total
        expected_max += length * (cdf**batch_size - previous_cdf**batch_size)
        previous_cdf = cdf
        weighted += length * rows
    mean = weighted / total
    # E[max] >= mean; clamp the rounding noise of equal lengths (never report -0.0%).
    return max(0.0, 1.0 - mean / expected_max) if expected_max > 0 else 0.0


def bucketed_waste(histograms: Sequence[Mapping[int, int]], batch_size: int | None = None, batch_tokens: int | None = None) -> float:
    """Waste over all buckets when every batch is drawn from one bucket (token-weighted): batches
    of `batch_size` rows, or token-budget batches (as many rows as fit in `batch_tokens`,
    counted against the bucket's longest row, the trainer's rule)."""
    real = 0.0
    padded = 0.0
    for histogram in histograms:
        tokens = float(sum(length * rows for length, rows in histogram.items()))
        if tokens == 0:
            continue
        if batch_tokens:
            longest = max(length for length, rows in histogram.items() if rows > 0)
            waste = expected_waste(histogram, rows_per_token_budget(batch_tokens, longest))
        else:
            waste = expected_waste(histogram, batch_size or 1)
        real += tokens
        padded += tokens / (1.0 - waste)
    return max(0.0, 1.0 - real / padded) if padded else 0.0
