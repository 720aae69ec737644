"""Decompressing inputs in bounded memory: one read never holds more than a few MiB of output."""

from __future__ import annotations

import gzip
import io

import pytest
import zstandard

from oasst_data.readers import files

LINE = b'{"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat well."}\n'


@pytest.mark.parametrize("kind", ["zstd", "gzip"])
def test_highly_compressible_input_is_decompressed_a_bounded_piece_at_a_time(kind):
    data = LINE * 400_000  # ~37 MB of lines that compress about 1000:1
    if kind == "zstd":
        raw = files._ZstdRaw(io.BytesIO(zstandard.ZstdCompressor().compress(data)))
    else:
        raw = files._GzipRaw(io.BytesIO(gzip.compress(data)))
    largest = 0
    out = bytearray()
    buffer = bytearray(1 << 20)
    while True:
        size = raw.readinto(buffer)
        if not size:
            break
        largest = max(largest, len(raw._pending))
        out += buffer[:size]
    assert bytes(out) == data
    # zstd's decompress() has no output cap: a whole 1 MiB compressed chunk gave the whole 37 MB.
    assert largest <= 4 * files._MAX_INFLATE, largest
