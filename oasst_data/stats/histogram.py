"""Token-length histograms with fixed bins: 32 equal bins from 1 to max_length.

The same bins serve an export (thread lengths as a build would count them) and a build
(row lengths), so the two can be compared bin by bin. Longer lengths land in the last bin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

HISTOGRAM_BINS = 32
SPLIT_ORDER = ("train", "validation")


def split_key(split: str) -> tuple:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def length_histogram(per_split: Mapping[str, Mapping[int, int]], max_length: int, bins: int = HISTOGRAM_BINS) -> dict:
    """{split: {length: rows}} -> {"bin_width", "max_length", "bins": [{min_length, max_length, rows: {split: n}}]}."""
    width = max(1, math.ceil(max_length / bins))
    count = math.ceil(max_length / width)
    splits = sorted(per_split, key=split_key)
    counts = {split: [0] * count for split in splits}
    for split, histogram in per_split.items():
        for length, rows in histogram.items():
            index = min(max(int(length) - 1, 0) // width, count - 1)
            counts[split][index] += int(rows)
    return {
        "bin_width": width,
        "max_length": max_length,
        "bins": [
            {"min_length": i * width + 1, "max_length": min((i + 1) * width, max_length), "rows": {s: counts[s][i] for s in splits}}
            for i in range(count)
        ],
    }
