"""Expected padding waste of the trainer's batches, exactly, from a length histogram.

The model is the sampler's (`oasst_data.shards.buckets`): rows shuffled and cut into batches
of B, the last holding the rest, each padded to its longest row. Only the distinct lengths
and their counts are needed, never the rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..shards.buckets import combined_waste, rows_per_token_budget, waste_of_histogram

BATCH_SIZES = (1, 4, 8)


def expected_waste(histogram: Mapping[int, int], batch_size: int) -> float:
    """Expected padding share for random batches of `batch_size` rows; {length: rows} in."""
    items = sorted((int(length), int(rows)) for length, rows in histogram.items() if rows > 0)
    if not items:
        return 0.0
    distinct, counts = zip(*items)
    return waste_of_histogram(np.array(distinct), np.array(counts), batch_size)


def bucketed_waste(histograms: Sequence[Mapping[int, int]], batch_size: int | None = None, batch_tokens: int | None = None) -> float:
    """Waste over all buckets when every batch is drawn from one bucket (token-weighted): batches
    of `batch_size` rows, or token-budget batches (as many rows as fit in `batch_tokens`,
    counted against the bucket's longest row, the trainer's rule)."""
    parts = []
    for histogram in histograms:
        tokens = float(sum(length * rows for length, rows in histogram.items()))
        if tokens == 0:
            continue
        if batch_tokens:
            longest = max(length for length, rows in histogram.items() if rows > 0)
            waste = expected_waste(histogram, rows_per_token_budget(batch_tokens, longest))
        else:
            waste = expected_waste(histogram, batch_size or 1)
        parts.append((tokens, waste))
    return combined_waste(parts)
