"""Stages 2 and 3 of a build: route spilled rows to (split, bucket, part) groups, then write
each group as one Parquet shard with its rows in shuffled order.

A group never exceeds the target shard size, so memory is bounded by one shard, whatever
the input size. Row order inside a bucket is the order of a seeded hash of the row id:
deterministic, independent of arrival order, worker count and PYTHONHASHSEED.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .buckets import Bucket, assign_buckets
from .hashing import sha256_file
from .schema import ROW_SCHEMA, SPILL_SCHEMA

SPLITS = ("train", "validation")
_ROW_GROUP_ROWS = 4096


@dataclass(frozen=True)
class GroupKey:
    split: str
    bucket: int
    part: int


def plan_parts(
    is_validation: np.ndarray,
    bucket_of_row: np.ndarray,
    row_bytes: np.ndarray,
    keys: np.ndarray,
    buckets: Sequence[Bucket],
    target_bytes: int,
    target_rows: int | None,
) -> np.ndarray:
    """The part (shard number within its split and bucket) of every row.

    Rows are dealt in the order of their seeded hash key into `count` runs of equal size (within
    one row), so no part exceeds `target_rows` and which part a row lands in does not depend on
    the order the rows were read in.
    """
    parts = np.zeros(len(keys), dtype=np.int32)
    for split_flag in (False, True):
        for bucket in buckets:
            selected = np.flatnonzero((is_validation == split_flag) & (bucket_of_row == bucket.index))
            rows = len(selected)
            if rows == 0:
                continue
            count = max(1, math.ceil(int(row_bytes[selected].sum()) / target_bytes))
            if target_rows:
                count = max(count, math.ceil(rows / target_rows))
            rank = np.empty(rows, dtype=np.int64)
            rank[np.argsort(keys[selected], kind="stable")] = np.arange(rows)
            parts[selected] = (rank * count // rows).astype(np.int32)
    return parts


def route_to_groups(
    spill_path: Path,
    groups_dir: Path,
    is_validation: np.ndarray,
    bucket_of_row: np.ndarray,
    parts: np.ndarray,
) -> list[GroupKey]:
    """Stream the spill file once, appending each row to its group's IPC file."""
    groups_dir.mkdir(parents=True, exist_ok=True)
    writers: dict[GroupKey, tuple] = {}
    start = 0
    with pa.OSFile(str(spill_path), "rb") as source:
        reader = pa.ipc.open_file(source)
        for index in range(reader.num_record_batches):
            batch = reader.get_batch(index)
            stop = start + batch.num_rows
            split_codes = is_validation[start:stop].astype(np.int64)
            group_codes = (split_codes * 1_000_000 + bucket_of_row[start:stop].astype(np.int64)) * 100_000 + parts[start:stop]
            order = np.argsort(group_codes, kind="stable")
            sorted_codes = group_codes[order]
            boundaries = np.flatnonzero(np.diff(sorted_codes)) + 1
            for chunk in np.split(order, boundaries):
                code = int(group_codes[chunk[0]])
                key = GroupKey(SPLITS[code // 100_000_000_000], (code // 100_000) % 1_000_000, code % 100_000)
                if key not in writers:
                    sink = pa.OSFile(str(groups_dir / f"{key.split}-{key.bucket}-{key.part}.arrow"), "wb")
                    writers[key] = (sink, pa.ipc.new_stream(sink, SPILL_SCHEMA))
                writers[key][1].write_batch(batch.take(pa.array(chunk)))
            start = stop
    for sink, writer in writers.values():
        writer.close()
        sink.close()
    return sorted(writers, key=lambda k: (SPLITS.index(k.split), k.bucket, k.part))


def write_shard(group_file: Path, target: Path, bucket_index: int) -> dict:
    """Read one group, order its rows by shuffle key, write the Parquet shard; returns its stats."""
    with pa.OSFile(str(group_file), "rb") as source:
        table = pa.ipc.open_stream(source).read_all()
    order = pc.sort_indices(table, sort_keys=[("shuffle_key", "ascending"), ("arrival", "ascending")])
    table = table.take(order)
    table = table.drop_columns(["shuffle_key", "arrival"])
    table = table.append_column(pa.field("bucket", pa.int32(), nullable=False), pa.array(np.full(table.num_rows, bucket_index, np.int32)))
    table = table.select(ROW_SCHEMA.names).cast(ROW_SCHEMA)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as handle:
        pq.write_table(
            table,
            handle,
            compression="zstd",
            compression_level=3,
            write_page_checksum=True,
            row_group_size=_ROW_GROUP_ROWS,
            use_dictionary=["source", "lang", "split"],
            write_statistics=["length", "num_turns", "bucket"],
        )
        handle.flush()
        os.fsync(handle.fileno())
    lengths = table.column("length").to_numpy()
    trainable = pc.sum(pc.list_flatten(table.column("loss_mask")).cast(pa.int64())).as_py() or 0
    stats = {
        "rows": table.num_rows,
        "tokens": int(lengths.sum()),
        "trainable_tokens": int(trainable),
        "truncated_rows": int(pc.sum(table.column("truncated").cast(pa.int64())).as_py() or 0),
        "sha256": sha256_file(target),
    }
    del table
    group_file.unlink()
    return stats


def write_all_shards(
    groups: Sequence[GroupKey],
    groups_dir: Path,
    out_dir: Path,
    buckets: Sequence[Bucket],
    on_shard: Callable[[dict], None] | None = None,
) -> list[dict]:
    entries = []
    numbering: dict[tuple[str, int], int] = {}
    for key in groups:
        bucket = buckets[key.bucket]
        number = numbering.get((key.split, key.bucket), 0)
        numbering[(key.split, key.bucket)] = number + 1
        relative = f"data/{key.split}/b{bucket.max_length:05d}-{number:05d}.parquet"
        stats = write_shard(groups_dir / f"{key.split}-{key.bucket}-{key.part}.arrow", out_dir / relative, bucket.index)
        entry = {
            "path": relative,
            "split": key.split,
            "bucket": bucket.index,
            "min_length": bucket.min_length,
            "max_length": bucket.max_length,
        } | stats
        entries.append(entry)
        if on_shard is not None:
            on_shard(entry)
    return entries


def bucket_rows(lengths: np.ndarray, buckets: Sequence[Bucket]) -> np.ndarray:
    return assign_buckets(lengths, buckets)
