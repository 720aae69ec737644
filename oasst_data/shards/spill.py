"""Stage 1 of a build: tokenized rows appended, in arrival order, to an Arrow IPC spill file.

Buckets depend on the length distribution of *all* rows, so rows are parked on disk (not in
memory) until every input has been read; only their lengths, splits and sizes stay in RAM.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..atomic import naming_failed_writes
from ..conversation import Thread
from .schema import SPILL_SCHEMA
from .tokenize import TokenizedBatch


def shuffle_key(seed: int, row_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"shuffle:{seed}:{row_id}".encode("utf-8"), digest_size=8).digest(), "big")


class SpillWriter:
    def __init__(self, path: Path, seed: int):
        self.path = path
        self.seed = seed
        self._sink = pa.OSFile(str(path), "wb")
        self._writer = pa.ipc.new_file(self._sink, SPILL_SCHEMA, options=pa.ipc.IpcWriteOptions(compression="lz4"))
        self.rows = 0
        self.lengths: list[np.ndarray] = []
        self.splits: list[np.ndarray] = []
        self.row_bytes: list[np.ndarray] = []
        self.keys: list[np.ndarray] = []

    def write(self, batch: TokenizedBatch) -> None:
        threads: list[Thread] = batch.threads
        if not threads:
            return
        count = len(threads)
        lengths = np.asarray(batch.lengths, dtype=np.int32)
        offsets = np.zeros(count + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        texts = pa.array([t.text() for t in threads], pa.string())
        keys = np.fromiter((shuffle_key(self.seed, t.id) for t in threads), dtype=np.uint64, count=count)
        columns = [
            pa.array([t.id for t in threads], pa.string()),
            pa.array([t.tree_id for t in threads], pa.string()),
            pa.array([t.source.value for t in threads], pa.string()),
            pa.array([t.lang for t in threads], pa.string()),
            pa.array([t.split.value for t in threads], pa.string()),
            texts,
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(batch.input_ids, pa.int32())),
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(batch.loss_mask, pa.uint8())),
            pa.array(lengths, pa.int32()),
            pa.array([t.num_turns for t in threads], pa.int32()),
            pa.array(batch.truncated, pa.bool_()),
            pa.array(keys, pa.uint64()),
            pa.array(np.arange(self.rows, self.rows + count, dtype=np.int64)),
        ]
        record_batch = pa.RecordBatch.from_arrays(columns, schema=SPILL_SCHEMA)
        with naming_failed_writes(self.path):
            self._writer.write_batch(record_batch)
        self.rows += count
        self.lengths.append(lengths)
        self.splits.append(np.array([t.split.value == "validation" for t in threads], dtype=np.bool_))
        text_bytes = np.diff(np.frombuffer(texts.buffers()[1], dtype=np.int32, count=count + 1, offset=texts.offset * 4)).astype(np.int64)
        self.row_bytes.append(text_bytes + 5 * lengths.astype(np.int64) + 64)
        self.keys.append(keys)

    def close(self) -> None:
        with naming_failed_writes(self.path):
            self._writer.close()
            self._sink.close()

    def all_lengths(self) -> np.ndarray:
        return np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int32)

    def all_is_validation(self) -> np.ndarray:
        return np.concatenate(self.splits) if self.splits else np.zeros(0, np.bool_)

    def all_row_bytes(self) -> np.ndarray:
        return np.concatenate(self.row_bytes) if self.row_bytes else np.zeros(0, np.int64)

    def all_keys(self) -> np.ndarray:
        return np.concatenate(self.keys) if self.keys else np.zeros(0, np.uint64)
