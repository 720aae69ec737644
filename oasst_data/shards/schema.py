"""The Arrow schema of a shard row (schemas/shard_row.schema.json describes the same row), and
the shape of manifest.json that readers of a build rely on."""

from __future__ import annotations

from typing import Optional

import msgspec
import pyarrow as pa

FORMAT_VERSION = 1
# Folder of a build's output holding the tokenizer (markers included) its rows were made with.
TOKENIZER_FOLDER = "tokenizer"

_COMMON = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("tree_id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("lang", pa.string()),
    pa.field("split", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
    pa.field("loss_mask", pa.list_(pa.uint8()), nullable=False),
    pa.field("length", pa.int32(), nullable=False),
    pa.field("num_turns", pa.int32(), nullable=False),
]

ROW_SCHEMA = pa.schema(
    _COMMON + [pa.field("bucket", pa.int32(), nullable=False), pa.field("truncated", pa.bool_(), nullable=False)]
)

# Rows as first written, before buckets are known: the shuffle key orders rows inside a
# bucket, and the arrival index breaks ties (the same id given twice).
SPILL_SCHEMA = pa.schema(
    _COMMON
    + [
        pa.field("truncated", pa.bool_(), nullable=False),
        pa.field("shuffle_key", pa.uint64(), nullable=False),
        pa.field("arrival", pa.int64(), nullable=False),
    ]
)


class _ShardEntry(msgspec.Struct):
    path: str
    split: str
    bucket: int
    min_length: int
    max_length: int
    rows: int
    tokens: int
    trainable_tokens: int
    sha256: str


class _SplitTotals(msgspec.Struct):
    rows: int
    tokens: int
    trainable_tokens: int
    shards: int


class _SavedTokenizer(msgspec.Struct):
    folder: str
    files: dict[str, str]


class _TokenizerEntry(msgspec.Struct):
    fingerprint: str
    name: Optional[str] = None
    saved: Optional[_SavedTokenizer] = None


class ManifestShape(msgspec.Struct):
    """What `verify`, `stats` and the trainer read from manifest.json (other keys pass): checked on
    loading, so a damaged manifest is one clear error instead of a KeyError deep inside them."""

    format_version: int
    config: dict
    tokenizer: _TokenizerEntry
    buckets: list[dict]
    padding: dict
    shards: list[_ShardEntry]
    totals: dict[str, _SplitTotals]
    funnel: dict
