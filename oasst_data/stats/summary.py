"""Distribution summaries (count, sum, mean, min, quantiles, max) from value histograms.

polars groups rows by (key, value) and counts them; the summary is then exact and computed
from the distinct values only, so memory does not grow with the number of rows (lengths
and label means have few distinct values). Quantiles interpolate linearly between order
statistics, as numpy's default does: the median of [2, 4] is 3.0.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

import polars as pl

QUANTILES: tuple[tuple[str, float], ...] = (("p10", 0.1), ("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
SUMMARY_KEYS = ("count", "sum", "mean", "min", *(name for name, _ in QUANTILES), "max")
COUNT = "__rows"


def number(value):
    """A JSON-friendly number: floats rounded to 6 decimals, everything else unchanged."""
    if isinstance(value, float):
        return round(value, 6)
    return value


def empty_summary() -> dict:
    return {key: (0 if key in ("count", "sum") else None) for key in SUMMARY_KEYS}


def summary_from_counts(pairs: Iterable[tuple[float, int]]) -> dict:
    """The summary of a multiset given as (value, how many times) pairs; None values ignored."""
    items = sorted((value, int(n)) for value, n in pairs if value is not None and n > 0)
    if not items:
        return empty_summary()
    values = [v for v, _ in items]
    cumulative: list[int] = []
    running = 0
    for _, n in items:
        running += n
        cumulative.append(running)
    total = running
    value_sum = sum(v * n for v, n in items)

    def order_statistic(k: int) -> float:  # the k-th smallest value, 0-based
        return values[bisect.bisect_right(cumulative, k)]

    out = {"count": total, "sum": number(value_sum), "mean": number(value_sum / total), "min": values[0]}
    for name, q in QUANTILES:
        position = (total - 1) * q
        low = int(position)
        fraction = position - low
        lower = order_statistic(low)
        upper = order_statistic(min(low + 1, total - 1))
        out[name] = number(lower + (upper - lower) * fraction)
    out["max"] = values[-1]
    return out


def value_counts(frame: pl.LazyFrame, keys: Sequence[str], column: str) -> pl.LazyFrame:
    """Rows per (keys..., value) of `column`, nulls left out: the input of `summaries`."""
    return frame.filter(pl.col(column).is_not_null()).group_by(*keys, column).agg(pl.len().alias(COUNT))


def summaries(counts: pl.DataFrame, keys: Sequence[str], column: str) -> dict[tuple, dict]:
    """{key tuple: summary} from a `value_counts` result."""
    grouped: dict[tuple, list[tuple[float, int]]] = {}
    for row in counts.iter_rows(named=True):
        grouped.setdefault(tuple(row[k] for k in keys), []).append((row[column], row[COUNT]))
    return {key: summary_from_counts(pairs) for key, pairs in grouped.items()}
