"""Stages 2 and 3 of a build: route spilled rows to (split, bucket, part) groups, then write
each group as one Parquet shard with its rows in shuffled order.

A group never exceeds the target shard size, so memory is bounded by one shard, whatever
the input size. Row order inside a bucket is the order of a seeded hash of the row id:
deterministic, independent of arrival order, worker count and PYTHONHASHSEED.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..atomic import naming_failed_writes
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


# Group files open at once while routing. Each group may get several segment files (one per
# time it is reopened), so a build with thousands of shards stays far below a common soft
# RLIMIT_NOFILE of 1024 instead of failing with "Too many open files".
MAX_OPEN_GROUP_FILES = 128
# File descriptors left for everything else while routing (the spill file, logging, the tokenizer).
_SPARE_DESCRIPTORS = 16


def group_files_allowed(wanted: int = MAX_OPEN_GROUP_FILES) -> int:
    """How many group files may be open at once under this process's descriptor limit: a low
    `ulimit -n` (64) failed a build with "Too many open files" that fewer open files would pass."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # no resource module on Windows
        return wanted
    if soft == resource.RLIM_INFINITY:
        return wanted
    try:
        in_use = len(os.listdir("/proc/self/fd"))
    except OSError:
        in_use = 32  # a guess where /proc is not there (macOS)
    return max(1, min(wanted, soft - in_use - _SPARE_DESCRIPTORS))


class GroupFiles:
    """Appends record batches to the IPC stream files of each group, with at most `max_open`
    files open; a group whose file was closed to make room continues in a new segment file."""

    def __init__(self, folder: Path, max_open: int = MAX_OPEN_GROUP_FILES):
        self.folder = folder
        self.max_open = max(1, max_open)
        self.segments: dict[GroupKey, list[Path]] = {}
        self._open: OrderedDict[GroupKey, tuple] = OrderedDict()

    def write(self, key: GroupKey, batch: pa.RecordBatch) -> None:
        entry = self._open.get(key)
        if entry is None:
            if len(self._open) >= self.max_open:
                _, oldest = self._open.popitem(last=False)
                _close_stream(oldest)
            paths = self.segments.setdefault(key, [])
            path = self.folder / f"{key.split}-{key.bucket}-{key.part}.{len(paths)}.arrow"
            paths.append(path)
            sink = pa.OSFile(str(path), "wb")
            entry = self._open[key] = (path, sink, pa.ipc.new_stream(sink, SPILL_SCHEMA))
        else:
            self._open.move_to_end(key)
        with naming_failed_writes(entry[0]):
            entry[2].write_batch(batch)

    def close(self) -> None:
        while self._open:
            _close_stream(self._open.popitem(last=False)[1])


def _close_stream(entry: tuple) -> None:
    path, sink, writer = entry
    with naming_failed_writes(path):
        writer.close()
        sink.close()


def route_to_groups(
    spill_path: Path,
    groups_dir: Path,
    is_validation: np.ndarray,
    bucket_of_row: np.ndarray,
    parts: np.ndarray,
    max_open: int | None = None,
) -> dict[GroupKey, list[Path]]:
    """Stream the spill file once, appending each row to its group's files; returns each
    group's segment files, groups in (split, bucket, part) order."""
    groups_dir.mkdir(parents=True, exist_ok=True)
    files = GroupFiles(groups_dir, group_files_allowed() if max_open is None else max_open)
    start = 0
    try:
        with pa.OSFile(str(spill_path), "rb") as source:
            reader = pa.ipc.open_file(source)
            for index in range(reader.num_record_batches):
                batch = reader.get_batch(index)
                stop = start + batch.num_rows
                if not batch.num_rows:
                    continue
                # Group by (split, bucket, part) as separate columns: packing them into one
                # integer would cap how many parts a bucket can have.
                split_flags = is_validation[start:stop].astype(np.int8)
                batch_buckets = bucket_of_row[start:stop]
                batch_parts = parts[start:stop]
                order = np.lexsort((batch_parts, batch_buckets, split_flags))
                changes = (
                    (np.diff(split_flags[order]) != 0)
                    | (np.diff(batch_buckets[order]) != 0)
                    | (np.diff(batch_parts[order]) != 0)
                )
                for chunk in np.split(order, np.flatnonzero(changes) + 1):
                    first = chunk[0]
                    key = GroupKey(SPLITS[int(split_flags[first])], int(batch_buckets[first]), int(batch_parts[first]))
                    files.write(key, batch.take(pa.array(chunk)))
                start = stop
    finally:
        files.close()
    ordered = sorted(files.segments, key=lambda k: (SPLITS.index(k.split), k.bucket, k.part))
    return {key: files.segments[key] for key in ordered}


def write_shard(group_files: Sequence[Path], target: Path, bucket_index: int) -> dict:
    """Read one group, order its rows by shuffle key, write the Parquet shard; returns its stats."""
    tables = []
    for group_file in group_files:
        with pa.OSFile(str(group_file), "rb") as source:
            tables.append(pa.ipc.open_stream(source).read_all())
    table = pa.concat_tables(tables)
    del tables
    order = pc.sort_indices(table, sort_keys=[("shuffle_key", "ascending"), ("arrival", "ascending")])
    table = table.take(order)
    table = table.drop_columns(["shuffle_key", "arrival"])
    table = table.append_column(pa.field("bucket", pa.int32(), nullable=False), pa.array(np.full(table.num_rows, bucket_index, np.int32)))
    table = table.select(ROW_SCHEMA.names).cast(ROW_SCHEMA)
    target.parent.mkdir(parents=True, exist_ok=True)
    with naming_failed_writes(target), open(target, "wb") as handle:
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
    for group_file in group_files:
        group_file.unlink()
    return stats


def write_all_shards(
    groups: dict[GroupKey, list[Path]],
    out_dir: Path,
    buckets: Sequence[Bucket],
    on_shard: Callable[[dict], None] | None = None,
) -> list[dict]:
    entries = []
    numbering: dict[tuple[str, int], int] = {}
    for key, group_files in groups.items():
        bucket = buckets[key.bucket]
        number = numbering.get((key.split, key.bucket), 0)
        numbering[(key.split, key.bucket)] = number + 1
        relative = f"data/{key.split}/b{bucket.max_length:05d}-{number:05d}.parquet"
        stats = write_shard(group_files, out_dir / relative, bucket.index)
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
