"""Decompressing inputs: in bounded memory (one read never holds more than a few MiB of output),
and never letting a damaged line through a run that goes on."""

from __future__ import annotations

import gzip
import io
import json
import random

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oasst_data.errors import BadRecordError, CorruptStreamError
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


def _lines_of(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["gzip-stored", "gzip", "zstd"]),
    seed=st.integers(0, 2**32 - 1),
    where=st.floats(0.0, 1.0, exclude_max=True),
    flip=st.integers(1, 255),
)
def test_a_damaged_stream_never_lets_a_changed_line_through_a_run_that_goes_on(tmp_path, kind, seed, where, flip):
    """Property: after one changed byte anywhere in the compressed file, every line read before
    an error a run may skip past (or before a clean end) is a line of the original; a change
    found only later in its unit stops the run (CorruptStreamError), whatever was read."""
    rng = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"kappa", b"omega"]
    data = b"".join(b" ".join(rng.choice(words) for _ in range(rng.randint(5, 400))) + b"\n" for _ in range(rng.randint(200, 2500)))
    if kind == "zstd":
        compressed = bytearray(zstandard.ZstdCompressor(level=1, write_checksum=True).compress(data))
        suffix = ".zst"
    else:
        compressed = bytearray(gzip.compress(data, compresslevel=0 if kind == "gzip-stored" else 6, mtime=0))
        suffix = ".gz"
    compressed[int(where * len(compressed))] ^= flip
    path = tmp_path / f"damaged{seed}{suffix}"
    path.write_bytes(bytes(compressed))
    original = _lines_of(data)
    read: list[bytes] = []
    try:
        for line in files.iter_lines(path):
            read.append(line.data)
    except CorruptStreamError:
        return  # the run stops: nothing it read is kept
    except BadRecordError as error:
        assert "cannot read further" in error.reason
    assert read == original[: len(read)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    stored=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    where=st.floats(0.0, 1.0, exclude_max=True),
    flip=st.integers(1, 255),
)
def test_a_damaged_alpaca_array_never_lets_a_changed_record_through_a_run_that_goes_on(tmp_path, stored, seed, where, flip):
    """Property, for the array reader (found by a review: a changed byte that broke the JSON ended
    the reading before the gzip CRC was checked, and the changed element before it was kept)."""
    from oasst_data.quarantine import BadRecordHandler, OnBadRecord
    from oasst_data.readers.alpaca import AlpacaReader

    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz "
    records = [{"instruction": "".join(rng.choice(letters) for _ in range(rng.randint(5, 200))), "output": "".join(rng.choice(letters) for _ in range(rng.randint(5, 200)))} for _ in range(rng.randint(50, 1500))]
    compressed = bytearray(gzip.compress(("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n").encode(), compresslevel=0 if stored else 6, mtime=0))
    compressed[int(where * len(compressed))] ^= flip
    path = tmp_path / f"alpaca{seed}.json.gz"
    path.write_bytes(bytes(compressed))
    original = {(r["instruction"], r["output"]) for r in records}
    try:
        read = [(located.record.instruction, located.record.output) for located in AlpacaReader(str(path), BadRecordHandler(OnBadRecord.SKIP))]
    except CorruptStreamError:
        return  # the run stops
    assert all(record in original for record in read)


def test_a_changed_byte_that_breaks_a_compressed_array_part_way_stops_the_run():
    """The review's case: one flipped bit in a deflate stream changes an element (still valid JSON),
    then breaks the JSON; the reader used to stop there, 1 MiB short of the member's CRC, and under
    skip kept the changed element."""
    import tempfile
    from pathlib import Path

    from oasst_data.quarantine import BadRecordHandler, OnBadRecord
    from oasst_data.readers.alpaca import AlpacaReader

    rng = random.Random(3)
    text = lambda: "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(rng.randint(20, 300)))  # noqa: E731
    records = [{"instruction": text(), "input": "", "output": text()} for _ in range(8000)]
    compressed = bytearray(gzip.compress(("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n").encode(), mtime=0))
    compressed[330490] ^= 1 << 1
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "alpaca.json.gz"
        path.write_bytes(bytes(compressed))
        with pytest.raises(CorruptStreamError, match="corrupt gzip member"):
            list(AlpacaReader(str(path), BadRecordHandler(OnBadRecord.SKIP)))


def test_an_unreadable_input_is_refused_before_any_work(tmp_path, monkeypatch):
    """Found by an audit: an unreadable last input stopped a build only once the inputs before it
    had been read and tokenized (20-30 s); it is refused when the inputs are expanded."""
    import builtins
    import errno

    from oasst_data.errors import OasstDataError
    from oasst_data.readers.files import expand_inputs

    first, last = tmp_path / "a.jsonl", tmp_path / "z.jsonl"
    first.write_text("")
    last.write_text("")
    real_open = builtins.open

    def no_permission(file, *args, **kwargs):  # chmod 000 does not stop root, who runs CI here
        if str(file) == str(last):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_permission)
    with pytest.raises(OasstDataError, match=r"z.jsonl: cannot open: Permission denied"):
        expand_inputs([str(first), str(tmp_path / "z*.jsonl")])


def test_a_file_name_that_is_not_utf8_is_refused_with_its_bytes_shown(tmp_path):
    """Found by an audit: a Latin-1 name (byte 0xE9) went through tokenizing, then `build` died with
    UnicodeEncodeError writing the manifest; stats and the quarantine likewise."""
    import os
    import subprocess
    import sys

    from oasst_data.errors import OasstDataError
    from oasst_data.readers.files import expand_inputs

    from ..conftest import FIXTURES, REPO

    name = os.fsdecode(b"caf\xe9.jsonl")
    (tmp_path / name).write_bytes((FIXTURES / "oasst" / "trees.jsonl").read_bytes())
    with pytest.raises(OasstDataError, match=r"caf\\xe9\.jsonl: the file name is not valid UTF-8 \(written in another encoding\?\): rename it"):
        expand_inputs([str(tmp_path / "*.jsonl")])  # a glob reaches it without the command line spelling it
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "oasst_data_cli", "threads", os.fsencode(tmp_path / name), "--out", tmp_path / "t.jsonl"],
        capture_output=True, env=env, timeout=120,
    )
    assert done.returncode == 1 and b"Traceback" not in done.stderr
    assert done.stderr.decode().strip().endswith("caf\\xe9.jsonl: not valid UTF-8 (a file name in another encoding?): rename it")
    assert not (tmp_path / "t.jsonl").exists()


def test_a_file_name_that_is_not_utf8_inside_an_alpaca_folder_is_refused(tmp_path):
    """A review: the check covered inputs and the command line, not a dataset folder's files; the
    build then died writing the manifest."""
    import os

    from oasst_data.errors import OasstDataError
    from oasst_data.readers.alpaca import AlpacaReader

    from ..conftest import FIXTURES

    folder = tmp_path / "alpaca" / "data"
    folder.mkdir(parents=True)
    (folder / os.fsdecode(b"train-caf\xe9.json")).write_bytes((FIXTURES / "alpaca" / "alpaca.json").read_bytes())
    with pytest.raises(OasstDataError, match=r"train-caf\\xe9\.json: the file name is not valid UTF-8"):
        list(AlpacaReader(str(tmp_path / "alpaca")))
