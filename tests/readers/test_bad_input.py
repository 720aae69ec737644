"""Bad input through `oasst-data threads`: strict runs stop with one line naming file:line and the
problem (exit 1, no traceback, no output file); `--on-bad-record skip` quarantines each bad
record raw with source, line and reason, and the funnel accounts for every record read.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
import stat
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from oasst_data.errors import BadRecordError, CorruptStreamError
from oasst_data.quarantine import BadRecordHandler, OnBadRecord
from oasst_data.readers.alpaca import AlpacaReader
from oasst_data.readers.files import open_binary
from oasst_data.readers.oasst import OasstExportReader
from oasst_data.config import ThreadConfig
from oasst_data.threads import QUARANTINED_TREE_DROPS, extract_threads
from oasst_data_cli.app import app

from ..conftest import FIXTURES, REPO

runner = CliRunner()
TREE_LINES = (FIXTURES / "oasst" / "trees.jsonl").read_bytes().splitlines(keepends=True)
MESSAGE_LINES = (FIXTURES / "oasst" / "messages.jsonl").read_bytes().splitlines(keepends=True)
GOOD_THREADS = 12  # threads of the fixture trees with the default filters
GOOD_MESSAGE_THREADS = 4  # threads of the two trees in messages.jsonl


def tree_line(tree_id: str = "bad", **prompt) -> bytes:
    root = {"message_id": f"{tree_id}-1", "text": "Hi?", "role": "prompter", "lang": "en", "review_result": True}
    root.update(prompt)
    return json.dumps({"message_tree_id": tree_id, "tree_state": "ready_for_export", "prompt": root}).encode() + b"\n"


def alternating(*roles: str) -> dict:
    """A chain of replies with the given roles (under a prompter root)."""
    node = None
    for index in range(len(roles) - 1, -1, -1):
        node = {"message_id": f"b{index + 2}", "text": "x", "role": roles[index], "replies": [node] if node else []}
    return node


DEEP = b"[" * 100_000 + b"]" * 100_000
# (case id, the bad line put at line 3 of the fixture trees, what the error must say)
BAD_TREE_LINES = [
    ("malformed_json", b'{"message_tree_id": "bad", "prompt": {\n', "malformed JSON"),
    ("missing_field", tree_line(text=None).replace(b'"text": null, ', b""), "Object missing required field `text` - at `$.prompt`"),
    ("mistyped_field", tree_line(rank="1"), "invalid record: Expected `int | float | null`, got `str` - at `$.prompt.rank`"),
    ("non_integral_rank", tree_line(rank=1.5), "at `$.prompt.rank`"),
    ("unknown_role", tree_line(replies=[{"message_id": "r", "text": "x", "role": "system"}]), "Invalid enum value 'system' - at `$.prompt.replies[0].role`"),
    ("invalid_utf8", tree_line(text="cafe").replace(b"cafe", b"caf\xe9"), "invalid UTF-8 at byte 107 of the line"),
    ("lone_surrogate", tree_line(text="cut \ud83d emoji"), "lone surrogate escape \\ud83d at byte 108 of the line"),
    # msgspec passes over unknown keys and ignored values unchecked: a corrupted key used to vanish
    # (here review_result, so the tree was dropped by the review filter), found by an audit.
    ("invalid_utf8_in_a_known_key", tree_line().replace(b'"review_result"', b'"review_\xffresult"'), "invalid UTF-8 at byte 152 of the line"),
    ("invalid_utf8_in_an_ignored_value", tree_line(note="cafe").replace(b"cafe", b"caf\xe9"), "invalid UTF-8 at byte 179 of the line"),
    ("too_deep", tree_line()[:-3] + b', "extra": ' + DEEP + b"}}\n", "nesting deeper than the JSON parser allows"),
    ("unknown_record", b'{"id": 1, "text": "x"}\n', "unknown record: expected a message tree"),
    # Vertical tab and form feed are no JSON whitespace: such a line is no blank line to skip.
    ("vertical_tab_and_form_feed", b"\x0b\x0c\n", "malformed JSON: JSON is malformed: invalid character (byte 0)"),
    # The quarantine drops the line ending only: a stray CR before it is part of the record.
    ("carriage_returns", b'{"message_tree_id": 5}\r\r\n', "Expected `str`, got `int` - at `$.message_tree_id`"),
    ("not_an_object", b"[1, 2]\n", "invalid record: Expected `object`, got `array`"),
    ("roles_do_not_alternate", tree_line(replies=[alternating("assistant", "assistant")]), "invalid tree bad: message b3 is an assistant reply to an assistant"),
    ("prompter_reply_to_prompter", tree_line(replies=[alternating("prompter")]), "message b2 is a prompter reply to a prompter"),
    ("assistant_root", tree_line(role="assistant", replies=[alternating("prompter")]), "root message bad-1 is assistant, expected prompter"),
    ("empty_thread", b'{"thread_id": "th-empty", "thread": []}\n', "thread th-empty has no messages"),
    (
        "label_without_value",
        json.dumps({"message_id": "h1", "text": "x", "role": "prompter", "labels": {"spam": {"count": 3}}}).encode() + b"\n",
        "Object missing required field `value` - at `$.labels[...]`",
    ),
    (
        "label_column_of_the_wrong_type",
        json.dumps({"message_id": "h1", "text": "x", "role": "prompter", "labels": {"name": ["a"], "value": [0.1], "count": ["1"]}}).encode() + b"\n",
        "at `$.labels.count[0]`",
    ),
    (
        "label_columns_of_different_lengths",
        json.dumps({"message_id": "h1", "text": "x", "role": "prompter", "labels": {"name": ["a", "b"], "value": [0.1], "count": [1, 1]}}).encode() + b"\n",
        "column lists of different lengths (name 2, value 1, count 2) - at `$.labels`",
    ),
]


def write_with_bad_line(path: Path, bad: bytes, lines=TREE_LINES, at: int = 3) -> Path:
    rows = list(lines)
    rows.insert(at - 1, bad)
    path.write_bytes(b"".join(rows))
    return path


def threads_cli(*args: str):
    return runner.invoke(app, ["threads", *args])


def assert_one_line_error(result, source: Path, line: int | None, fragment: str) -> str:
    assert result.exit_code == 1, result.output
    # CliRunner turns an uncaught exception into exit code 1 too: make sure it was a clean exit.
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    where = f"{source}:{line}: " if line is not None else f"{source}"
    assert lines[0].startswith(f"error: {where}"), lines[0]
    assert fragment in lines[0], lines[0]
    return lines[0]


def skip_run(out: Path, *inputs: str, extra: tuple[str, ...] = ()):
    quarantine = out.with_name("quarantine.jsonl")
    result = threads_cli(*inputs, "--out", str(out), "--on-bad-record", "skip", "--quarantine", str(quarantine), "--json", *extra)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    entries = [json.loads(line) for line in quarantine.read_text(encoding="utf-8").splitlines()] if quarantine.exists() else []
    return report, entries, result


def assert_accounted(report: dict, entries: list[dict]) -> None:
    """Nothing dropped silently: every record read is used or quarantined, every tree kept or dropped by reason."""
    assert report["quarantined"] == len(entries)
    for funnel in [report["funnel"], *report["by_source"].values()]:
        assert funnel["records_read"] == funnel["records_used"] + funnel["bad_records"]
        assert funnel["trees_read"] == funnel["trees_kept"] + sum(funnel["tree_drops"].values())
        assert funnel["candidates"] == funnel["threads"] + sum(funnel["thread_drops"].values())
        assert funnel["threads"] == sum(funnel["threads_by_split"].values())
    assert report["funnel"]["bad_records"] == len(entries)
    for entry in entries:
        assert set(entry) >= {"source", "line", "reason", "raw"}


def assert_tree_lines_accounted(funnel: dict) -> None:
    """One tree a line: read = kept + filtered (by reason) + quarantined (an invalid tree is both a drop and a bad record)."""
    filtered = sum(n for reason, n in funnel["tree_drops"].items() if reason not in QUARANTINED_TREE_DROPS)
    assert funnel["records_read"] == funnel["trees_kept"] + filtered + funnel["bad_records"]


# --- one bad line in a tree file ------------------------------------------------------------------


@pytest.mark.parametrize(("bad", "fragment"), [case[1:] for case in BAD_TREE_LINES], ids=[case[0] for case in BAD_TREE_LINES])
def test_strict_run_stops_at_the_bad_line_with_one_clear_line(tmp_path, bad, fragment):
    source = write_with_bad_line(tmp_path / "export.jsonl", bad)
    out = tmp_path / "threads.jsonl"
    assert_one_line_error(threads_cli(str(source), "--out", str(out)), source, 3, fragment)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [source]  # no temp or quarantine file left behind


@pytest.mark.parametrize(("bad", "fragment"), [case[1:] for case in BAD_TREE_LINES], ids=[case[0] for case in BAD_TREE_LINES])
def test_skip_run_quarantines_the_bad_line_and_counts_it(tmp_path, bad, fragment):
    source = write_with_bad_line(tmp_path / "export.jsonl", bad)
    out = tmp_path / "threads.jsonl"
    report, entries, result = skip_run(out, str(source))
    assert len(out.read_text().splitlines()) == GOOD_THREADS
    assert len(entries) == 1
    entry = entries[0]
    assert entry["source"] == str(source) and entry["line"] == 3
    assert fragment in entry["reason"]
    raw = bad.removesuffix(b"\n").removesuffix(b"\r")
    if b"\xe9" in raw or b"\xff" in raw:  # not UTF-8: shown with replacement characters, kept exactly in base64
        assert entry["raw"] == raw.decode("utf-8", errors="replace")
        assert base64.b64decode(entry["raw_base64"]) == bad
    else:
        assert entry["raw"] == raw.decode("utf-8")
    funnel = report["by_source"]["oasst"]
    assert (funnel["records_read"], funnel["bad_records"], funnel["threads"]) == (13, 1, GOOD_THREADS)
    assert_accounted(report, entries)
    assert_tree_lines_accounted(funnel)
    assert "1 bad records skipped" in result.stderr


def test_skip_run_with_many_bad_lines_accounts_for_each(tmp_path):
    rows = list(TREE_LINES)
    for index, (_, bad, _) in enumerate(BAD_TREE_LINES):
        rows.insert(2 * index + 1, bad)
    source = tmp_path / "export.jsonl"
    source.write_bytes(b"".join(rows))
    report, entries, _ = skip_run(tmp_path / "threads.jsonl", str(source))
    bad_lines = {case[1] for case in BAD_TREE_LINES}
    assert sorted(e["line"] for e in entries) == [number for number, row in enumerate(rows, start=1) if row in bad_lines]
    assert report["funnel"]["threads"] == GOOD_THREADS
    assert report["funnel"]["records_read"] == len(rows)
    assert_accounted(report, entries)
    assert_tree_lines_accounted(report["funnel"])


def test_failed_strict_run_leaves_an_existing_output_untouched(tmp_path):
    source = write_with_bad_line(tmp_path / "export.jsonl", b"{oops\n", at=len(TREE_LINES) + 1)
    out = tmp_path / "threads.jsonl"
    out.write_text("previous output\n")
    assert_one_line_error(threads_cli(str(source), "--out", str(out)), source, len(TREE_LINES) + 1, "malformed JSON")
    assert out.read_text() == "previous output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.jsonl", "threads.jsonl"]


def test_real_process_prints_no_traceback(tmp_path):
    source = write_with_bad_line(tmp_path / "export.jsonl", b'{"message_id": "\xff\xfe"}\n', at=5)
    out = tmp_path / "threads.jsonl"
    process = subprocess.run(
        [sys.executable, "-m", "oasst_data_cli", "threads", str(source), "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert process.returncode == 1
    assert "Traceback" not in process.stderr
    assert process.stderr.strip().splitlines() == [f"error: {source}:5: invalid UTF-8 at byte 16 of the line"]
    assert not out.exists()


# --- broken compressed streams ------------------------------------------------------------------


def varied_trees(count: int) -> bytes:
    """`count` distinct valid trees (texts vary, so the compressed stream has real content)."""
    rng = random.Random(count)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    lines = []
    for index in range(count):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(20, 80)))
        reply = {"message_id": f"a{index}", "text": text, "role": "assistant", "lang": "en"}
        lines.append(tree_line(f"t{index}", replies=[reply], message_id=f"p{index}", text=text[::-1]))
    return b"".join(lines)


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_truncated_compressed_file(tmp_path, suffix):
    data = varied_trees(3000)
    compressed = gzip.compress(data, mtime=0) if suffix == ".gz" else zstandard.ZstdCompressor(level=3).compress(data)
    source = tmp_path / f"export.jsonl{suffix}"
    source.write_bytes(compressed[: int(len(compressed) * 0.6)])
    out = tmp_path / "threads.jsonl"

    result = threads_cli(str(source), "--out", str(out))
    message = assert_one_line_error(result, source, None, "cannot read further")
    assert not out.exists()
    line = int(message.split(f"{source}:", 1)[1].split(":", 1)[0])

    report, entries, _ = skip_run(out, str(source))
    readable = line - 1  # every line before the break was read and used
    assert readable > 0
    assert [(e["source"], e["line"]) for e in entries] == [(str(source), line)]
    assert "cannot read further" in entries[0]["reason"]
    # The quarantine holds what was read of the line the break cut (an audit found it empty).
    readable_bytes = data[: len(b"".join(data.splitlines(keepends=True)[:readable]))]
    cut_line = data[len(readable_bytes) :].split(b"\n", 1)[0]
    assert entries[0]["raw"] and cut_line.startswith(entries[0]["raw"].encode())
    funnel = report["funnel"]
    assert (funnel["records_read"], funnel["bad_records"], funnel["threads"]) == (readable + 1, 1, readable)
    assert_accounted(report, entries)
    assert_tree_lines_accounted(funnel)


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
@pytest.mark.parametrize("kept", [0.999, 0.9, 0.5, 0.02])
def test_every_complete_line_before_a_break_is_read(tmp_path, suffix, kept):
    """However near the end the file breaks, each line the surviving bytes hold is read (igzip's
    reader used to lose what its last read had decompressed: with the trailer cut, the last lines)."""
    data = varied_trees(400)
    if suffix == ".gz":
        compressed = gzip.compress(data, mtime=0)
        cut = compressed[: max(20, int(len(compressed) * kept))] if kept < 0.999 else compressed[:-8]  # the trailer alone
        recoverable = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(cut)
    else:
        compressed = zstandard.ZstdCompressor(level=3).compress(data)
        cut = compressed[: int(len(compressed) * kept)] if kept < 0.999 else compressed[:-1]
        recoverable = zstandard.ZstdDecompressor().decompressobj().decompress(cut)
    complete_lines = recoverable.count(b"\n")
    source = tmp_path / f"export.jsonl{suffix}"
    source.write_bytes(cut)
    handler = BadRecordHandler(OnBadRecord.SKIP)
    reader = OasstExportReader([source], handler)
    assert sum(1 for _ in reader) == complete_lines
    assert handler.count == 1 and reader.counts.lines == complete_lines + 1
    with pytest.raises(BadRecordError) as stopped:
        list(OasstExportReader([source]))
    assert stopped.value.line == complete_lines + 1 and "cannot read further" in stopped.value.reason


def test_gzip_members_one_after_another_and_zero_padding_read_as_one_file(tmp_path):
    """`cat a.gz b.gz` is a valid gzip file (so is one padded with zeros, as tape tools leave it)."""
    lines = TREE_LINES * 3
    source = tmp_path / "export.jsonl.gz"
    source.write_bytes(b"".join(gzip.compress(line, mtime=0) for line in lines) + b"\x00" * 512)
    with open_binary(source) as handle:
        assert handle.read() == b"".join(lines)
    source.write_bytes(gzip.compress(b"".join(lines), mtime=0) + b"not gzip")
    with pytest.raises(BadRecordError, match="cannot read further"):
        list(OasstExportReader([source]))


def test_corrupt_gzip_is_a_bad_record_never_a_crash(tmp_path):
    """Flipped bytes make the inflater fail in several ways (CRC, bad block, bad distance): all are one error."""
    compressed = gzip.compress(varied_trees(200), mtime=0)
    rng = random.Random(5)
    reasons = []
    for trial in range(40):
        corrupt = bytearray(compressed)
        corrupt[rng.randrange(20, len(corrupt) - 8)] ^= rng.randrange(1, 256)
        path = tmp_path / f"corrupt{trial}.jsonl.gz"
        path.write_bytes(bytes(corrupt))
        reader = OasstExportReader([path], BadRecordHandler(OnBadRecord.FAIL))
        try:
            for _ in reader:
                pass
        except BadRecordError as error:
            assert error.source == str(path) and error.line >= 1
            reasons.append(error.reason)
    # Corrupt deflate data (isal's IsalError, not an OSError) is among them, besides CRC and EOF errors;
    # garbage that inflates without a complaint before the CRC check shows as malformed JSON.
    stream = [r for r in reasons if r.startswith("cannot read further")]
    assert any("CRC" not in r and "ended before" not in r for r in stream), reasons
    assert all(r.startswith(("cannot read further", "malformed JSON", "invalid")) for r in reasons), reasons


def test_zstd_with_garbage_and_not_gzip_at_all(tmp_path):
    for name, data in [("a.jsonl.zst", b"definitely not zstd\n"), ("b.jsonl.gz", b"plain text, not gzip\n")]:
        source = tmp_path / name
        source.write_bytes(data)
        assert_one_line_error(threads_cli(str(source), "--out", str(tmp_path / "t.jsonl")), source, 1, "cannot read further")



@pytest.mark.parametrize("damage", ["junk_after_the_last_frame", "corrupt_second_frame"])
def test_every_line_of_the_zstd_frames_before_a_bad_one_is_read(tmp_path, damage):
    """A zstd error used to drop all the output of the read call it broke: one call holds up to
    2 MiB, so a small file with junk after its one good frame lost every record."""
    data = varied_trees(120)
    frame = zstandard.ZstdCompressor(level=3).compress(data)
    if damage == "junk_after_the_last_frame":
        broken = frame + b"\x00junk"
    else:
        second = bytearray(zstandard.ZstdCompressor(level=3).compress(data))
        second[len(second) // 2] ^= 0xFF
        broken = frame + bytes(second)
    source = tmp_path / "export.jsonl.zst"
    source.write_bytes(broken)
    complete_lines = data.count(b"\n")
    handler = BadRecordHandler(OnBadRecord.SKIP)
    reader = OasstExportReader([source], handler)
    assert sum(1 for _ in reader) >= complete_lines  # the first frame's lines, and any of the second's before the break
    assert handler.count == 1
    with pytest.raises(BadRecordError) as stopped:
        list(OasstExportReader([source]))
    assert stopped.value.line > complete_lines and "cannot read further" in stopped.value.reason

def corrupt_inside_its_unit(data: bytes, suffix: str) -> bytes:
    """One compressed unit (gzip member, zstd frame with a checksum) with a byte of its text
    changed, so the damage shows only at the unit's checksum or in a later block, once lines
    from the unit were handed over."""
    if suffix == ".gz":
        stored = bytearray(gzip.compress(data, compresslevel=0, mtime=0))  # stored blocks: a changed byte inflates fine
        stored[stored.index(b"alpha", len(stored) // 20)] ^= 0x20
        return bytes(stored)
    frame = bytearray(zstandard.ZstdCompressor(level=1, write_checksum=True).compress(data))
    frame[len(frame) // 2] ^= 0xFF
    return bytes(frame)


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_a_unit_found_corrupt_after_lines_were_read_from_it_stops_even_under_skip(tmp_path, suffix):
    """Found by an audit: under skip, the lines a damaged gzip member gave before its CRC check
    failed were kept (one with the changed text), and the quarantine named only the line where
    reading stopped. They cannot be taken back, so the run stops under either policy."""
    data = varied_trees(6000)
    assert len(data) > 2 * (2 << 20)  # more than one read's worth of output before the break
    source = tmp_path / f"export.jsonl{suffix}"
    source.write_bytes(corrupt_inside_its_unit(data, suffix))
    unit = "gzip member" if suffix == ".gz" else "zstd frame"
    out = tmp_path / "threads.jsonl"
    for policy in ("fail", "skip"):
        result = threads_cli(str(source), "--out", str(out), "--on-bad-record", policy)
        message = assert_one_line_error(result, source, None, f": corrupt {unit} (")
        assert "the lines already read from this" in message and "even under --on-bad-record skip" in message
        assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]  # no output, no quarantine
    handler = BadRecordHandler(OnBadRecord.SKIP)
    with pytest.raises(CorruptStreamError) as stopped:
        list(OasstExportReader([source], handler))
    assert stopped.value.line > 1 and handler.count == 0


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
@pytest.mark.parametrize("array", [False, True])
def test_a_corrupt_unit_stops_alpaca_reading_even_under_skip(tmp_path, suffix, array):
    rows = [json.dumps({"instruction": f"alpha question {i} " + "x" * 900, "output": f"answer {i}"}) for i in range(6000)]
    data = ("[\n" + ",\n".join(rows) + "\n]\n" if array else "\n".join(rows) + "\n").encode()
    source = tmp_path / (f"alpaca.json{suffix}" if array else f"alpaca.jsonl{suffix}")
    source.write_bytes(corrupt_inside_its_unit(data, suffix))
    with pytest.raises(CorruptStreamError, match="corrupt (gzip member|zstd frame)"):
        list(AlpacaReader(str(source), BadRecordHandler(OnBadRecord.SKIP)))


def test_a_unit_broken_before_it_gave_anything_stays_a_skippable_bad_record(tmp_path):
    """Corrupt from its start (nothing read from it is suspect): one bad record, as before."""
    source = tmp_path / "export.jsonl.zst"
    good = zstandard.ZstdCompressor(level=3).compress(b"".join(TREE_LINES))
    source.write_bytes(good + b"\x28\xb5\x2f\xfd" + b"\xff" * 64)  # a frame header, then garbage
    handler = BadRecordHandler(OnBadRecord.SKIP)
    reader = OasstExportReader([source], handler)
    assert sum(1 for _ in reader) == len(TREE_LINES) and handler.count == 1


@pytest.mark.parametrize("tail", [b"not gzip", b"garbage! more than ten bytes of it\n", b"\x1f\x8b\x08"])
def test_bytes_after_the_last_gzip_member_are_named_as_such_not_as_a_truncated_file(tmp_path, tail):
    """`gzip -t` says "trailing garbage ignored", Python's gzip refuses them: refused here, but
    the reason was "truncated file" or "invalid wrapper"."""
    source = tmp_path / "export.jsonl.gz"
    source.write_bytes(gzip.compress(b"".join(TREE_LINES), mtime=0) + tail)
    handler = BadRecordHandler(OnBadRecord.SKIP)
    reader = OasstExportReader([source], handler)
    assert sum(1 for _ in reader) == len(TREE_LINES) and handler.count == 1  # every member's line kept
    with pytest.raises(BadRecordError) as stopped:
        list(OasstExportReader([source]))
    assert stopped.value.line == len(TREE_LINES) + 1
    assert "the bytes after the last complete gzip member are no gzip member" in stopped.value.reason
    assert "truncated" not in stopped.value.reason


@pytest.mark.parametrize(("suffix", "kind"), [(".gz", "gzip"), (".zst", "zstd")])
def test_an_empty_compressed_file_is_a_bad_record(tmp_path, suffix, kind):
    """0 bytes is no gzip or zstd stream (`gzip -t` and `zstd -t` say so): often a copy cut short.
    It was read as an empty export, unmentioned."""
    source = tmp_path / f"export.jsonl{suffix}"
    source.write_bytes(b"")
    with pytest.raises(BadRecordError) as stopped:
        list(OasstExportReader([source]))
    assert str(stopped.value) == f"{source}:1: cannot read further: the file is empty (0 bytes), yet even an empty {kind} stream has a header: a copy cut short?"
    source.write_bytes(gzip.compress(b"", mtime=0) if suffix == ".gz" else zstandard.ZstdCompressor().compress(b""))
    assert list(OasstExportReader([source])) == []  # an empty stream, properly compressed, holds no record


def test_an_input_without_records_is_warned_about(tmp_path, caplog):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"\n\n")
    (tmp_path / "full.jsonl").write_bytes(b"".join(TREE_LINES))
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text("[]\n")
    with caplog.at_level("WARNING"):
        assert len(list(OasstExportReader([empty, tmp_path / "full.jsonl"]))) == len(TREE_LINES)
        assert list(AlpacaReader(str(alpaca))) == []
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [f"{empty}: holds no record", f"{alpaca}: holds no record"]


def test_replies_nested_in_a_thread_record_are_warned_about(tmp_path, caplog):
    """Found by an audit: a thread record's path is its list; replies inside its messages vanished unsaid."""
    lines = (FIXTURES / "oasst" / "threads.jsonl").read_text().splitlines()
    record = json.loads(lines[0])
    record["thread"][-1]["replies"] = [{"message_id": "nested", "text": "x", "role": "prompter"}]
    source = tmp_path / "threads.jsonl"
    source.write_text("\n".join([json.dumps(record), *lines[1:]]) + "\n")
    with caplog.at_level("WARNING"):
        trees = list(OasstExportReader([source]))
    assert len(trees) == len(lines)
    assert "nested" not in {reply.message_id for tree in trees for reply in tree.tree.prompt.replies}
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned == [f"{source}: 1 thread record(s) carry replies inside their messages: a thread record is the path its list holds, so they were ignored (give whole trees as message trees)"]


def test_an_error_deep_in_a_tree_names_its_path_in_a_line_of_bounded_length(tmp_path):
    """Found by an audit: a bad field 1,500 replies deep (within msgspec's depth) made a 16 KB error line."""
    node = {"message_id": "leaf", "text": "t", "role": "robot"}
    for index in range(300):
        node = {"message_id": f"m{index}", "text": "t", "role": "prompter" if index % 2 else "assistant", "replies": [node]}
    node["role"] = "prompter"
    source = tmp_path / "deep.jsonl"
    source.write_text(json.dumps({"message_tree_id": "T", "tree_state": "ready_for_export", "prompt": node}) + "\n")
    with pytest.raises(BadRecordError) as stopped:
        list(OasstExportReader([source]))
    assert stopped.value.reason == (
        "invalid record: Invalid enum value 'robot' - at `$.prompt.replies[0].replies[0].replies[0] ... 294 more .replies[i] ... "
        ".replies[0].replies[0].replies[0].role`"
    )


# --- flat messages: orphans, duplicates, cycles -----------------------------------------------------


def message_line(message_id: str, parent_id: str | None, role: str, tree_id: str = "t-flat") -> bytes:
    row = {"message_id": message_id, "parent_id": parent_id, "text": f"text of {message_id}", "role": role, "lang": "en",
           "review_result": True, "message_tree_id": tree_id, "tree_state": "ready_for_export"}
    return json.dumps(row).encode() + b"\n"


FLAT_CASES = [
    # (case id, extra lines appended after the fixture messages, (line, fragment) of the first error, lines quarantined)
    ("orphan", [message_line("o1", "nowhere", "assistant")], (13, "message o1: its parent nowhere is not a flat message of this file"), [13]),
    (
        "orphan_with_a_reply",
        [message_line("o2", "o1", "prompter"), message_line("o1", "nowhere", "assistant")],
        (14, "message o1: its parent nowhere is not a flat message of this file"),
        [13, 14],
    ),
    ("duplicate", [MESSAGE_LINES[4]], (13, "duplicate message_id p3 (first seen on line 5)"), [13]),
    (
        "cycle",
        [message_line("cy1", "cy2", "prompter"), message_line("cy2", "cy1", "assistant")],
        (13, "message cy1: part of a parent_id cycle"),
        [13, 14],
    ),
    ("self_parent", [message_line("me", "me", "prompter")], (13, "message me: part of a parent_id cycle"), [13]),
]


@pytest.mark.parametrize(("extra", "first", "quarantined"), [c[1:] for c in FLAT_CASES], ids=[c[0] for c in FLAT_CASES])
def test_flat_message_errors_name_the_id(tmp_path, extra, first, quarantined):
    source = tmp_path / "messages.jsonl"
    source.write_bytes(b"".join(MESSAGE_LINES + extra))
    out = tmp_path / "threads.jsonl"
    line, fragment = first
    assert_one_line_error(threads_cli(str(source), "--out", str(out)), source, line, fragment)
    assert not out.exists()

    report, entries, _ = skip_run(out, str(source))
    assert sorted(e["line"] for e in entries) == quarantined
    assert all(e["raw"] for e in entries)  # the message line itself, raw
    funnel = report["funnel"]
    assert funnel["threads"] == GOOD_MESSAGE_THREADS
    assert (funnel["records_read"], funnel["bad_records"]) == (len(MESSAGE_LINES) + len(extra), len(quarantined))
    assert funnel["records_used"] == len(MESSAGE_LINES)  # the two good trees' 12 messages
    assert_accounted(report, entries)


# --- a tree set aside whole (repeated, roles that do not alternate): every one of its lines ----------


def flat_tree(tree_id: str, roles: list[str]) -> list[bytes]:
    """A chain of flat message lines with the given roles, replies before their parents."""
    lines = [message_line(f"{tree_id}-{i}", f"{tree_id}-{i - 1}" if i else None, role, tree_id) for i, role in enumerate(roles)]
    return lines[::-1]


def quarantined_lines(entries: list[dict], source: Path) -> list[tuple[int, dict]]:
    """(line, the raw line parsed) of each quarantine entry of `source`, checking raw is that input line exactly."""
    lines = source.read_bytes().splitlines()
    got = []
    for entry in entries:
        if entry["source"] == str(source):
            assert entry["raw"].encode("utf-8") == lines[entry["line"] - 1]
            got.append((entry["line"], json.loads(entry["raw"])))
    return sorted(got, key=lambda pair: pair[0])


def test_a_flat_tree_read_twice_is_quarantined_line_by_line(tmp_path):
    """Each of the repeated copy's message lines is quarantined raw (was: one entry, empty raw, counted once)."""
    first = tmp_path / "a.jsonl"
    first.write_bytes(b"".join(flat_tree("t-dup", ["prompter", "assistant", "prompter", "assistant"])))
    second = tmp_path / "b.jsonl"
    other = flat_tree("t-other", ["prompter", "assistant"])
    repeated = flat_tree("t-dup", ["prompter", "assistant", "prompter", "assistant"])
    # Interleaved with a tree of its own, so the set-aside lines are 1, 3, 5, 6.
    rows = [repeated[0], other[0], repeated[1], other[1], repeated[2], repeated[3]]
    second.write_bytes(b"".join(rows))
    out = tmp_path / "t.jsonl"
    message = assert_one_line_error(threads_cli(str(first), str(second), "--out", str(out)), second, 6, "tree t-dup was already read")
    assert f"{first}:4" in message  # the root's line in each file

    report, entries, result = skip_run(out, str(first), str(second))
    assert [(line, row) for line, row in quarantined_lines(entries, second)] == [
        (number, json.loads(rows[number - 1])) for number in (1, 3, 5, 6)
    ]
    assert len(entries) == 4 and len({e["reason"] for e in entries}) == 1
    assert entries[0]["reason"].startswith(f"tree t-dup was already read at {first}:4")
    funnel = report["funnel"]
    assert (funnel["records_read"], funnel["bad_records"], funnel["records_used"]) == (10, 4, 6)
    assert funnel["tree_drops"] == {"duplicate_tree": 1} and funnel["threads"] == 2
    assert_accounted(report, entries)
    assert "4 bad records skipped" in result.stderr


INVALID_ROLES = ["prompter", "assistant", "assistant"]  # b-2 is an assistant reply to an assistant


@pytest.mark.parametrize("layout", ["flat", "tree", "nested_message"])
def test_a_tree_with_invalid_roles_is_quarantined_one_entry_per_input_line(tmp_path, layout):
    """Flat messages: one entry per message line; a tree in one line (tree record, or a root with its
    replies nested): that one line."""
    good = flat_tree("t-good", ["prompter", "assistant"])
    if layout == "flat":
        bad = flat_tree("t-bad", INVALID_ROLES)
        rows = [bad[0], good[0], bad[1], good[1], bad[2]]
        set_aside = [1, 3, 5]
    else:
        chain = None
        for index in range(len(INVALID_ROLES) - 1, -1, -1):
            chain = {"message_id": f"t-bad-{index}", "text": "x", "role": INVALID_ROLES[index], "lang": "en",
                     "review_result": True, "replies": [chain] if chain else []}
        if layout == "tree":
            line = {"message_tree_id": "t-bad", "tree_state": "ready_for_export", "prompt": chain}
        else:
            line = dict(chain, message_tree_id="t-bad", tree_state="ready_for_export")
        rows = [good[0], json.dumps(line).encode() + b"\n", good[1]]
        set_aside = [2]
    source = tmp_path / "export.jsonl"
    source.write_bytes(b"".join(rows))
    out = tmp_path / "t.jsonl"
    report, entries, _ = skip_run(out, str(source))
    assert quarantined_lines(entries, source) == [(number, json.loads(rows[number - 1])) for number in set_aside]
    assert all(e["reason"] == "invalid tree t-bad: message t-bad-2 is an assistant reply to an assistant (t-bad-1); roles must alternate"
               for e in entries)
    funnel = report["funnel"]
    assert (funnel["records_read"], funnel["bad_records"]) == (len(rows), len(set_aside))
    assert funnel["tree_drops"] == {"invalid_tree": 1} and funnel["threads"] == 1
    assert_accounted(report, entries)


def _message(message_id: str, role: str, parent: str | None, **fields) -> dict:
    return {"message_id": message_id, "text": f"text of {message_id}", "role": role, "lang": "en",
            "review_result": True, "parent_id": parent, **fields}


def _thread(*messages: dict, **fields) -> dict:
    return {"thread_id": f"th-{messages[-1]['message_id']}", "thread": list(messages), **fields}


BROKEN_SHAPES = {
    # A reply that answers the first prompt trained as the answer to the second one.
    "a broken chain": (
        _thread(_message("p1", "prompter", None), _message("a1", "assistant", "p1"),
                _message("p2", "prompter", "a1"), _message("a2", "assistant", "p1"), message_tree_id="p1"),
        "message a2 has parent_id p1 but follows p2",
    ),
    # A thread that starts mid-tree: its context is missing.
    "a root with a parent": (
        _thread(_message("p2", "prompter", "a1"), _message("a2", "assistant", "p2"), message_tree_id="p1"),
        "root message p2 has parent_id a1: the tree or thread does not start at its root",
    ),
    # Faults below the first branch: every branch is checked, not only the first.
    "roles broken in a later branch": (
        {"message_tree_id": "p1", "prompt": dict(_message("p1", "prompter", None), replies=[
            dict(_message("a1", "assistant", "p1"), replies=[]),
            dict(_message("a2", "assistant", "p1"), replies=[dict(_message("a3", "assistant", "a2"), replies=[])])])},
        "message a3 is an assistant reply to an assistant (a2); roles must alternate",
    ),
    "an id repeated in a later branch": (
        {"message_tree_id": "p1", "prompt": dict(_message("p1", "prompter", None), replies=[
            dict(_message("a1", "assistant", "p1"), replies=[dict(_message("p2", "prompter", "a1"), replies=[])]),
            dict(_message("a2", "assistant", "p1"), replies=[dict(_message("p2", "prompter", "a2"), replies=[])])])},
        "message id p2 appears twice in the tree",
    ),
    "a nested reply naming another parent": (
        {"message_tree_id": "p1", "prompt": dict(_message("p1", "prompter", None), replies=[
            dict(_message("a1", "assistant", "p1"), replies=[]), dict(_message("a2", "assistant", "a1"), replies=[])])},
        "message a2 has parent_id a1 but follows p1",
    ),
}


@pytest.mark.parametrize("shape", BROKEN_SHAPES)
def test_a_record_whose_parent_ids_contradict_its_shape_is_an_invalid_tree(tmp_path, shape):
    record, says = BROKEN_SHAPES[shape]
    record = dict(record, tree_state="ready_for_export")
    source = tmp_path / "export.jsonl"
    source.write_text(json.dumps(record) + "\n")
    out = tmp_path / "t.jsonl"
    assert_one_line_error(threads_cli(str(source), "--out", str(out)), source, 1, f"invalid tree p1: {says}")
    report, entries, _ = skip_run(out, str(source))
    assert report["funnel"]["tree_drops"] == {"invalid_tree": 1} and report["funnel"]["threads"] == 0
    assert_accounted(report, entries)


def test_a_thread_record_without_a_tree_state_takes_its_roots(tmp_path):
    ready = {"tree_state": "ready_for_export"}
    record = _thread(_message("p1", "prompter", None, **ready), _message("a1", "assistant", "p1", **ready))
    growing = _thread(_message("q1", "prompter", None, tree_state="growing"), _message("b1", "assistant", "q1"))
    source = tmp_path / "threads.jsonl"
    source.write_text(json.dumps(record) + "\n" + json.dumps(growing) + "\n")
    threads, funnel = extract_threads([source], config=ThreadConfig(val_split=0.0))
    assert [t.id for t in threads] == ["a1"] and dict(funnel.tree_drops) == {"tree_state": 1}


# --- Alpaca -----------------------------------------------------------------------------------------

ALPACA_ARRAY = (FIXTURES / "alpaca" / "alpaca.json").read_text(encoding="utf-8")


def test_alpaca_array_syntax_error_names_the_line(tmp_path):
    text = ALPACA_ARRAY.replace('"output": "5"', '"output": "5",,', 1)
    bad_line = text[: text.index(",,")].count("\n") + 1
    source = tmp_path / "alpaca.json"
    source.write_text(text, encoding="utf-8")
    out = tmp_path / "threads.jsonl"
    assert_one_line_error(threads_cli("--alpaca", str(source), "--out", str(out)), source, bad_line - 3, "malformed JSON")
    # An array cannot be resynchronised after a syntax error: skip keeps what came before and says so.
    report, entries, _ = skip_run(out, extra=("--alpaca", str(source)))
    assert [e["line"] for e in entries] == [bad_line - 3] and report["funnel"]["threads"] == 1
    assert_accounted(report, entries)


def test_alpaca_array_invalid_utf8_names_the_line_of_the_bad_byte(tmp_path):
    data = ALPACA_ARRAY.encode("utf-8").replace(b"Translate to French.", b"Translate to Fr\xe9nch.")
    bad_line = data[: data.index(b"\xe9")].count(b"\n") + 1
    source = tmp_path / "alpaca.json"
    source.write_bytes(data)
    out = tmp_path / "threads.jsonl"
    assert_one_line_error(threads_cli("--alpaca", str(source), "--out", str(out)), source, bad_line, "invalid UTF-8")
    report, entries, _ = skip_run(out, extra=("--alpaca", str(source)))
    # The three records before the bad byte are still used.
    assert report["funnel"]["threads"] == 3 and [e["line"] for e in entries] == [bad_line]
    assert_accounted(report, entries)


@pytest.mark.parametrize("padding", [0, 3 << 20], ids=["small", "across-read-chunks"])
def test_a_too_deep_alpaca_array_element_is_one_bad_record_and_the_array_reads_on(tmp_path, padding):
    """Found by a fuzz audit: it stopped the array (tens of thousands of records after it lost,
    counted as one bad record); in JSON Lines such a line is one bad record."""
    deep_element = b'{"instruction": "c", "output": "d", "meta": ' + DEEP[:50_000] + b'"' + b"]" * padding + b'"' + DEEP[50_000:] + b"}"
    after = b",\n".join(b'{"instruction": "q%d", "output": "a%d"}' % (i, i) for i in range(300))
    deep = tmp_path / "deep.json"
    deep.write_bytes(b'[\n{"instruction": "a", "output": "b"},\n' + deep_element + b",\n" + after + b"\n]\n")
    assert_one_line_error(threads_cli("--alpaca", str(deep), "--out", str(tmp_path / "t.jsonl")), deep, 3, "nesting deeper than the JSON parser allows (array element 2)")
    report, entries, _ = skip_run(tmp_path / "t.jsonl", extra=("--alpaca", str(deep)))
    funnel = report["funnel"]
    assert (funnel["records_read"], funnel["bad_records"], funnel["threads"]) == (302, 1, 301)
    assert [e["line"] for e in entries] == [3] and entries[0]["raw"].encode() == deep_element


def test_a_too_deep_element_that_is_malformed_names_its_offset_in_the_element(tmp_path):
    """The offset was into the reader's sliding buffer, re-based at every read (a review)."""
    before = b",\n".join(b'{"instruction": "q%d", "output": "a%d"}' % (i, i) for i in range(30_000))
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" + before + b",\n" + DEEP[:60_000] + b"}" + DEEP[60_001:] + b"\n]\n")
    message = assert_one_line_error(threads_cli("--alpaca", str(deep), "--out", str(tmp_path / "t.jsonl")), deep, 30_001, "")
    assert "malformed JSON: unexpected '}' (character 60000 of the element)" in message


def test_alpaca_array_too_deep_and_truncated(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_bytes(b'[\n{"instruction": "a", "output": "b"},\n' + DEEP[:-10])
    assert_one_line_error(threads_cli("--alpaca", str(deep), "--out", str(tmp_path / "t.jsonl")), deep, 3, "array not closed (truncated file?)")
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(gzip.compress(ALPACA_ARRAY.encode() * 1)[:-30])
    result = threads_cli("--alpaca", str(cut), "--out", str(tmp_path / "t.jsonl"))
    assert_one_line_error(result, cut, None, "")
    assert "cannot read further" in result.stderr or "array not closed" in result.stderr


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (b'{"instruction": "no output"}\n', "invalid record: Object missing required field `output`"),
        (b'{"instruction": "x", "output": "y", "input": 3}\n', "at `$.input`"),
        (b'{"instruction": "x", "output": \n', "malformed JSON"),
        (b'{"instruction": "x\\udc00", "output": "y"}\n', "lone surrogate escape \\udc00 at byte 18"),
        (b'{"instruction": "x", "output": "y", "note": "caf\xe9"}\n', "invalid UTF-8 at byte 48 of the line"),
    ],
)
def test_alpaca_jsonl_bad_lines(tmp_path, line, fragment):
    lines = (FIXTURES / "alpaca" / "alpaca.jsonl").read_bytes().splitlines(keepends=True)
    source = write_with_bad_line(tmp_path / "alpaca.jsonl", line, lines=lines, at=2)
    out = tmp_path / "threads.jsonl"
    assert_one_line_error(threads_cli("--alpaca", str(source), "--out", str(out)), source, 2, fragment)
    report, entries, _ = skip_run(out, extra=("--alpaca", str(source)))
    assert [e["line"] for e in entries] == [2]
    funnel = report["by_source"]["alpaca"]
    assert (funnel["records_read"], funnel["bad_records"], funnel["threads"]) == (6, 1, 4)
    assert funnel["records_read"] == funnel["trees_kept"] + sum(funnel["tree_drops"].values()) + funnel["bad_records"]
    assert_accounted(report, entries)


def test_alpaca_data_after_the_closing_bracket_is_an_error_or_quarantined(tmp_path):
    """Found by an audit: a second array after the first was silently ignored."""
    second = [{"instruction": "Second array.", "output": "Lost before."}]
    source = tmp_path / "two.json"
    source.write_text(ALPACA_ARRAY.rstrip("\n") + "\n" + json.dumps(second) + "\n", encoding="utf-8")
    line = ALPACA_ARRAY.rstrip("\n").count("\n") + 2
    out = tmp_path / "threads.jsonl"
    assert_one_line_error(threads_cli("--alpaca", str(source), "--out", str(out)), source, line, "data after the closing ']' of the array")
    assert not out.exists()
    report, entries, result = skip_run(out, extra=("--alpaca", str(source)))
    assert [(e["line"], e["raw"]) for e in entries] == [(line, json.dumps(second))]
    assert "data after the closing ']'" in entries[0]["reason"]
    funnel = report["by_source"]["alpaca"]
    assert (funnel["records_read"], funnel["bad_records"], funnel["threads"]) == (6, 1, 4)
    assert_accounted(report, entries)
    assert "1 bad records skipped" in result.stderr


def test_inputs_with_a_byte_order_mark_read_like_those_without(tmp_path):
    bom = b"\xef\xbb\xbf"
    trees = tmp_path / "trees.jsonl.gz"
    trees.write_bytes(gzip.compress(bom + b"".join(TREE_LINES), mtime=0))
    alpaca = tmp_path / "alpaca.json.zst"
    alpaca.write_bytes(zstandard.ZstdCompressor().compress(bom + ALPACA_ARRAY.encode()))
    report, entries, _ = skip_run(tmp_path / "threads.jsonl", str(trees), extra=("--alpaca", str(alpaca)))
    assert entries == [] and report["funnel"]["threads"] == GOOD_THREADS + 4
    assert_accounted(report, entries)


def test_a_directory_input_names_itself_as_a_directory(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    result = threads_cli(str(folder), "--out", str(tmp_path / "t.jsonl"))
    message = assert_one_line_error(result, folder, None, ": is a directory, not a file")
    assert "no such file" not in message
    result = threads_cli("--alpaca", str(folder), "--out", str(tmp_path / "t.jsonl"))
    assert_one_line_error(result, folder, None, ": is a directory but not a dataset")


# --- mixed inputs ---------------------------------------------------------------------------------


def test_skip_counts_per_source_across_files_and_kinds(tmp_path):
    write_with_bad_line(tmp_path / "a.jsonl", b"{broken\n")  # read through the glob below
    messages = tmp_path / "b.jsonl"
    messages.write_bytes(b"".join(MESSAGE_LINES + [message_line("o1", "nowhere", "assistant")]))
    alpaca = write_with_bad_line(tmp_path / "c.jsonl", b"[]\n", lines=(FIXTURES / "alpaca" / "alpaca.jsonl").read_bytes().splitlines(keepends=True))
    report, entries, _ = skip_run(tmp_path / "out.jsonl", str(tmp_path / "[ab].jsonl"), extra=("--alpaca", str(alpaca)))
    # b.jsonl's two flat trees are also in a.jsonl (lines 1, 2): set aside as repeats, each of their
    # 12 message lines (1-12) quarantined; line 13 is the orphan.
    assert sorted((Path(e["source"]).name, e["line"]) for e in entries) == [
        ("a.jsonl", 3), *(("b.jsonl", line) for line in range(1, 14)), ("c.jsonl", 3)
    ]
    assert report["by_source"]["oasst"]["bad_records"] == 1 + 12 + 1 and report["by_source"]["alpaca"]["bad_records"] == 1
    assert report["by_source"]["oasst"]["tree_drops"]["duplicate_tree"] == 2
    assert report["funnel"]["threads"] == GOOD_THREADS + 4  # + the Alpaca records'; no tree's threads twice
    assert_accounted(report, entries)


def test_a_tree_read_twice_is_an_error_naming_both_places_or_is_kept_once(tmp_path):
    """Overlapping exports (an "all" export and its "ready" subset) would train every shared tree twice."""
    trees = (FIXTURES / "oasst" / "trees.jsonl").read_bytes().splitlines(keepends=True)
    everything = tmp_path / "all.jsonl"
    everything.write_bytes(b"".join(trees))
    subset = tmp_path / "ready.jsonl"
    reply = {"message_id": "only-here-2", "text": "Yes.", "role": "assistant", "lang": "en", "review_result": True}
    subset.write_bytes(tree_line("only-here", replies=[reply]) + trees[4])
    out = tmp_path / "t.jsonl"
    tree_id = json.loads(trees[4])["message_tree_id"]
    message = assert_one_line_error(threads_cli(str(everything), str(subset), "--out", str(out)), subset, 2, f"tree {tree_id} was already read")
    assert f"{everything}:5" in message and "--on-bad-record skip" in message
    assert not out.exists()
    alone, _, _ = skip_run(tmp_path / "alone.jsonl", str(everything))
    report, entries, _ = skip_run(out, str(everything), str(subset))
    assert [(Path(e["source"]).name, e["line"]) for e in entries] == [("ready.jsonl", 2)]
    assert report["funnel"]["tree_drops"]["duplicate_tree"] == 1
    assert report["funnel"]["threads"] == alone["funnel"]["threads"] + 1  # + "only-here"'s one thread
    assert_accounted(report, entries)
    assert_tree_lines_accounted(report["funnel"])
    # The same tree twice in one file, too.
    twice = tmp_path / "twice.jsonl"
    twice.write_bytes(trees[0] + trees[1] + trees[0])
    assert_one_line_error(threads_cli(str(twice), "--out", str(out)), twice, 3, f"was already read at {twice}:1")


def test_thread_records_of_one_tree_are_not_repeats(tmp_path):
    """Thread records carry their tree's id, and one tree has several threads."""
    record = json.loads((FIXTURES / "oasst" / "threads.jsonl").read_text().splitlines()[0])
    lines = []
    for number in range(3):
        for position, message in enumerate(record["thread"]):
            message["message_id"] = f"{number}-{position}"
            message["parent_id"] = f"{number}-{position - 1}" if position else None
        lines.append(json.dumps(dict(record, thread_id=f"th-{number}")) + "\n")
    threads = tmp_path / "threads.jsonl"
    threads.write_text("".join(lines))
    extracted, funnel = extract_threads([threads], config=ThreadConfig(val_split=0.0))
    assert "duplicate_tree" not in funnel.tree_drops and len(extracted) == funnel.threads == 3


def test_a_thread_record_read_twice_is_a_repeat(tmp_path):
    """Two thread records ending at the same message are one conversation path, read twice."""
    fixture = (FIXTURES / "oasst" / "threads.jsonl").read_text().splitlines(keepends=True)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(fixture))
    second.write_text(fixture[0])  # the same path again, in an overlapping export
    out = tmp_path / "t.jsonl"
    leaf = json.loads(fixture[0])["thread"][-1]["message_id"]
    assert_one_line_error(threads_cli(str(first), str(second), "--out", str(out)), second, 1, f"thread ending at message {leaf}")
    report, entries, _ = skip_run(out, str(first), str(second))
    assert [(e["line"], e["raw"]) for e in entries] == [(1, fixture[0].rstrip("\n"))]
    assert entries[0]["reason"].startswith(f"thread ending at message {leaf} was already read at {first}:1")
    assert report["funnel"]["tree_drops"].get("duplicate_thread") == 1
    alone = skip_run(tmp_path / "alone.jsonl", str(first))[0]["funnel"]
    assert report["funnel"]["threads"] == alone["threads"]  # trained on once, as from the first file alone
    assert_accounted(report, entries)


def test_error_text_with_brackets_is_printed_verbatim(tmp_path):
    """User data in an error (ids, file names) may hold rich markup such as [/]: printed as is."""
    source = tmp_path / "messages.jsonl"
    source.write_bytes(message_line("[/]", "[bold]gone", "prompter"))
    result = threads_cli(str(source), "--out", str(tmp_path / "t.jsonl"))
    assert_one_line_error(result, source, 1, "message [/]: its parent [bold]gone is not a flat message of this file")


# --- fuzzing: any damage to any input is an error or a counted bad record, never a traceback --------

FUZZ_SOURCES = {
    "trees.jsonl": FIXTURES / "oasst" / "trees.jsonl",
    "messages.jsonl": FIXTURES / "oasst" / "messages.jsonl",
    "threads.jsonl": FIXTURES / "oasst" / "threads.jsonl",
    "alpaca.json": FIXTURES / "alpaca" / "alpaca.json",
    "alpaca.jsonl": FIXTURES / "alpaca" / "alpaca.jsonl",
}
FUZZ_PIECES = [b"{", b"}", b"[", b"]", b'"', b"\\", b",", b":", b"\n", b"null", b"1e999", b"-0", b"\\ud800", b"\xff", b"\x00",
               b'"replies": [', b'"role": "assistant"', b'"parent_id": "m1"', b'"output": 3', b"true", b"1.5",
               b"\xef\xbb\xbf", b'] [{"instruction": "x", "output": "y"}']


@settings(max_examples=500, deadline=None)
@given(
    name=st.sampled_from(sorted(FUZZ_SOURCES)),
    edits=st.lists(st.tuples(st.sampled_from(["delete", "insert", "cut", "flip"]), st.floats(0, 1), st.sampled_from(FUZZ_PIECES)), min_size=1, max_size=4),
    compress=st.sampled_from(["", ".gz"]),
)
def test_damaged_inputs_give_clean_errors_or_counted_bad_records(tmp_path_factory, name, edits, compress):
    """Found once: a lone surrogate escape in an Alpaca array key raised UnicodeEncodeError."""
    from oasst_data.config import ThreadConfig
    from oasst_data.errors import OasstDataError
    from oasst_data.threads import extract_threads

    data = bytearray(FUZZ_SOURCES[name].read_bytes())
    for op, where, piece in edits:
        at = int(where * len(data))
        if op == "delete":
            del data[at : at + 1 + len(piece)]
        elif op == "insert":
            data[at:at] = piece
        elif op == "cut":
            data = data[:at]
        elif data:
            data[min(at, len(data) - 1)] ^= piece[0] or 1
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / (name + compress)
    path.write_bytes(gzip.compress(bytes(data)) if compress else bytes(data))
    inputs, alpaca = ([], [str(path)]) if name.startswith("alpaca") else ([path], [])
    try:
        extract_threads(inputs, alpaca, ThreadConfig(lang="*", tree_states="*"))
    except OasstDataError:
        pass  # strict: one clear error
    _, funnel = extract_threads(inputs, alpaca, ThreadConfig(lang="*", tree_states="*", on_bad_record="skip", quarantine=folder / "q.jsonl"))
    assert funnel.records_read == funnel.records_used + funnel.bad_records
    assert not funnel.check()


def test_a_clean_run_removes_only_a_quarantine_file_it_can_recognise(tmp_path):
    """--quarantine pointed at some other file used to delete it when the run skipped nothing."""
    precious = tmp_path / "notes.txt"
    precious.write_text("not a quarantine\n")
    old = tmp_path / "old-quarantine.jsonl"
    old.write_text(json.dumps({"source": "x.jsonl", "line": 3, "reason": "malformed JSON", "raw": "{"}) + "\n")
    for path, kept in ((precious, True), (old, False)):
        result = threads_cli(str(FIXTURES / "oasst" / "trees.jsonl"), "--out", str(tmp_path / "t.jsonl"), "--on-bad-record", "skip", "--quarantine", str(path))
        assert result.exit_code == 0, result.output
        assert path.exists() is kept
    assert precious.read_text() == "not a quarantine\n"


def test_a_quarantine_can_go_to_a_device(tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text("{broken\n")
    result = threads_cli(str(source), "--out", str(tmp_path / "t.jsonl"), "--on-bad-record", "skip", "--quarantine", os.devnull)
    assert result.exit_code == 0, result.output
    assert stat.S_ISCHR(os.lstat(os.devnull).st_mode)


def test_a_message_id_twice_in_one_tree_is_an_invalid_tree(tmp_path):
    """Flat messages refused a repeated id; a nested tree took it, and the shards got two rows of one id."""
    def message(message_id, role, replies=()):
        return {"message_id": message_id, "text": f"text of {message_id}", "role": role, "lang": "en",
                "review_result": True, "replies": list(replies)}

    repeated = {"message_tree_id": "t-repeat", "tree_state": "ready_for_export",
                "prompt": message("r1", "prompter", [message("r2", "assistant"), message("r2", "assistant")])}
    deeper = {"message_tree_id": "t-deeper", "tree_state": "ready_for_export",
              "prompt": message("d1", "prompter", [message("d2", "assistant", [message("d1", "prompter", [message("d3", "assistant")])])])}
    rows = [TREE_LINES[0], (json.dumps(repeated) + "\n").encode(), (json.dumps(deeper) + "\n").encode()]
    source = tmp_path / "export.jsonl"
    source.write_bytes(b"".join(rows))
    result = threads_cli(str(source), "--out", str(tmp_path / "t.jsonl"))
    assert_one_line_error(result, source, 2, "invalid tree t-repeat: message id r2 appears twice in the tree")
    report, entries, _ = skip_run(tmp_path / "t.jsonl", str(source))
    assert [(e["line"], e["reason"]) for e in entries] == [
        (2, "invalid tree t-repeat: message id r2 appears twice in the tree"),
        (3, "invalid tree t-deeper: message id d1 appears twice in the tree"),
    ]
    assert report["funnel"]["tree_drops"] == {"invalid_tree": 2}
    assert_accounted(report, entries)


def test_a_pipe_given_as_input_says_so_not_no_such_file(tmp_path):
    fifo = tmp_path / "export.jsonl"
    os.mkfifo(fifo)
    for options in ([str(fifo)], ["--alpaca", str(fifo)]):
        result = threads_cli(*options, "--out", str(tmp_path / "t.jsonl"))
        message = assert_one_line_error(result, fifo, None, ": is not a regular file (a pipe or a device?); write it to a file first")
        assert "no such file" not in message


def test_a_quarantine_whose_first_record_is_huge_is_still_recognised(tmp_path):
    from oasst_data.quarantine import is_quarantine_file

    quarantine = tmp_path / "q.jsonl"
    handler = BadRecordHandler(OnBadRecord.SKIP, quarantine)
    handler(BadRecordError('in "1".jsonl', 1, "malformed JSON", b"{" + b"x" * (2 << 20)))
    handler.close()
    assert quarantine.stat().st_size > 2 << 20 and is_quarantine_file(quarantine)
    BadRecordHandler(OnBadRecord.SKIP, quarantine).close()  # a clean rerun
    assert not quarantine.exists()
    for text in ('{"line": 3}\n', "notes\n", ""):
        quarantine.write_text(text)
        assert not is_quarantine_file(quarantine)


def test_two_outputs_on_one_device_are_not_a_conflict(tmp_path):
    source = tmp_path / "bad.jsonl"
    source.write_text("{broken\n")
    result = threads_cli(str(source), "--on-bad-record", "skip", "--out", os.devnull, "--quarantine", os.devnull)
    assert result.exit_code == 0, result.output


def test_blank_lines_hold_no_record_and_are_skipped_as_datasets_skips_them(tmp_path):
    """A blank line (empty, or whitespace) is no record: datasets, pyarrow and pandas skip it, so a
    file they read must not stop here. Nothing is lost, nothing is quarantined, and a record's line
    number stays its line in the file."""
    blank_lines = [b"\n", b"  \t\r\n", b"\r\n"]
    rows = [TREE_LINES[0], *blank_lines, *TREE_LINES[1:], b"\n"]
    source = tmp_path / "export.jsonl"
    source.write_bytes(b"".join(rows))
    clean = tmp_path / "clean.jsonl"
    clean.write_bytes(b"".join(TREE_LINES))
    strict = threads_cli(str(source), "--out", str(tmp_path / "t.jsonl"))
    assert strict.exit_code == 0, strict.output
    assert threads_cli(str(clean), "--out", str(tmp_path / "c.jsonl")).exit_code == 0
    assert (tmp_path / "t.jsonl").read_bytes() == (tmp_path / "c.jsonl").read_bytes()
    report, entries, _ = skip_run(tmp_path / "skipped.jsonl", str(source))
    assert entries == [] and report["funnel"]["records_read"] == len(TREE_LINES) and report["funnel"]["bad_records"] == 0
    # Line numbers count the blank lines: a bad record after them is named by its line in the file.
    source.write_bytes(b"".join([*rows[:4], b"{oops\n", *rows[4:]]))
    assert_one_line_error(threads_cli(str(source), "--out", str(tmp_path / "t.jsonl")), source, 5, "malformed JSON")
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca_lines = (FIXTURES / "alpaca" / "alpaca.jsonl").read_bytes().splitlines(keepends=True)
    alpaca.write_bytes(b"\n".join(alpaca_lines) + b"\n \n")
    report, entries, _ = skip_run(tmp_path / "a.jsonl", extra=("--alpaca", str(alpaca)))
    funnel = report["by_source"]["alpaca"]
    assert entries == [] and (funnel["records_read"], funnel["bad_records"]) == (len(alpaca_lines), 0)
