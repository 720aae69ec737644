"""The Arrow schema of a shard row (schemas/shard_row.schema.json describes the same row)."""

from __future__ import annotations

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
