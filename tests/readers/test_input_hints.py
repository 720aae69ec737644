"""Input in the wrong form gets a reason that says what it looks like: Open-Assistant records in a
JSON array or given with --alpaca, compressed data under a plain name or the other compressor's
name, plain JSON under a compressed name, a pretty-printed object.
Under --on-bad-record skip, only the reason changes: every bad line is still counted and quarantined.
"""

from __future__ import annotations

import gzip
import json
import re

import pytest
import zstandard

from oasst_data.errors import BadRecordError, OasstDataError
from oasst_data.quarantine import BadRecordHandler, OnBadRecord
from oasst_data.readers.alpaca import AlpacaReader
from oasst_data.readers.oasst import OasstExportReader

from ..conftest import FIXTURES

OASST = FIXTURES / "oasst"
ALPACA_LINES = (FIXTURES / "alpaca" / "alpaca.jsonl").read_text().splitlines()
OASST_JSONL = ("trees.jsonl", "messages.jsonl", "threads.jsonl")


def first_records(name: str, count: int = 2) -> list[dict]:
    return [json.loads(line) for line in (OASST / name).read_text().splitlines()[:count]]


def export_error(path) -> str:
    with pytest.raises(BadRecordError) as raised:
        list(OasstExportReader([path]))
    return str(raised.value)


def alpaca_error(path) -> str:
    with pytest.raises(BadRecordError) as raised:
        list(AlpacaReader(str(path)))
    return str(raised.value)


@pytest.mark.parametrize("name", OASST_JSONL)
def test_open_assistant_records_in_a_json_array_are_told_to_be_json_lines(tmp_path, name):
    source = tmp_path / "export.json"
    source.write_text(json.dumps(first_records(name)) + "\n")
    message = export_error(source)
    assert message == (
        f"{source}:1: invalid record: Expected `object`, got `array` (a JSON array of Open-Assistant records? "
        "exports are JSON Lines, one record a line: write each element on a line of its own, e.g. with jq -c '.[]')"
    )
    assert "--alpaca" not in message  # following that hint failed


def test_alpaca_data_in_a_json_array_keeps_the_alpaca_hint(tmp_path):
    source = tmp_path / "alpaca.json"
    source.write_text(json.dumps([json.loads(line) for line in ALPACA_LINES]) + "\n")
    assert export_error(source).endswith("(a JSON array: Alpaca data? give it with --alpaca)")


def test_an_array_opened_alone_on_line_1_names_both_formats(tmp_path):
    """Its records start on later lines: the line read says nothing about their kind."""
    source = tmp_path / "export.json"
    source.write_text(json.dumps(first_records("trees.jsonl"), indent=2) + "\n")
    assert export_error(source).endswith(
        "(a JSON array: Alpaca data? give it with --alpaca; Open-Assistant exports are JSON Lines, one record a line)"
    )


@pytest.mark.parametrize(
    ("compress", "shown", "suffix", "kind"),
    [(gzip.compress, "1f 8b", ".gz", "gzip"), (zstandard.compress, "28 b5 2f fd", ".zst", "zstandard")],
)
@pytest.mark.parametrize("alpaca", [False, True])
def test_compressed_data_under_a_plain_name_is_named(tmp_path, compress, shown, suffix, kind, alpaca):
    source = tmp_path / "x.jsonl"
    text = "\n".join(ALPACA_LINES) + "\n" if alpaca else (OASST / "trees.jsonl").read_text()
    source.write_bytes(compress(text.encode()))
    message = alpaca_error(source) if alpaca else export_error(source)
    assert message == f"{source}:1: looks {kind}-compressed (it starts with the bytes {shown}) but its name does not say so: name it x.jsonl{suffix}"
    named = tmp_path / f"x.jsonl{suffix}"
    source.rename(named)
    assert len(list(AlpacaReader(str(named)) if alpaca else OasstExportReader([named]))) > 0  # the hint's name reads


COMPRESSORS = {".gz": ("gzip", "1f 8b", lambda data: gzip.compress(data, mtime=0)), ".zst": ("zstandard", "28 b5 2f fd", zstandard.compress)}


@pytest.mark.parametrize(("named", "holds"), [(".gz", ".zst"), (".zst", ".gz"), (".zstd", ".gz")])
@pytest.mark.parametrize("alpaca", [False, True])
def test_a_compressed_file_named_for_the_other_compressor_is_named(tmp_path, named, holds, alpaca):
    kind, shown, compress = COMPRESSORS[holds]
    text = "\n".join(ALPACA_LINES) + "\n" if alpaca else (OASST / "trees.jsonl").read_text()
    source = tmp_path / f"x.jsonl{named}"
    source.write_bytes(compress(text.encode()))
    message = alpaca_error(source) if alpaca else export_error(source)
    assert message.startswith(f"{source}:1: cannot read further: ")
    assert message.endswith(f" (the file holds {kind} data (it starts with {shown}), not what its name says: name it x.jsonl{holds})")
    renamed = tmp_path / f"x.jsonl{holds}"
    source.rename(renamed)
    assert len(list(AlpacaReader(str(renamed)) if alpaca else OasstExportReader([renamed]))) > 0  # the hint's name reads


@pytest.mark.parametrize("named", [".gz", ".zst"])
def test_uncompressed_json_under_a_compressed_name_is_named(tmp_path, named):
    source = tmp_path / f"x.jsonl{named}"
    source.write_bytes((OASST / "trees.jsonl").read_bytes())
    assert export_error(source).endswith(" (the file holds uncompressed JSON, not what its name says: name it x.jsonl)")


@pytest.mark.parametrize("named", [".gz", ".zst"])
def test_other_bytes_under_a_compressed_name_say_what_the_format_starts_with(tmp_path, named):
    kind, shown, _ = COMPRESSORS[named]
    source = tmp_path / f"x.jsonl{named}"
    source.write_bytes(b"hello, world\n")
    assert export_error(source).endswith(f" (not {kind} data: {kind} files start with the bytes {shown})")


@pytest.mark.parametrize("named", [".gz", ".zst"])
def test_a_stream_of_the_named_format_broken_further_on_gets_no_hint(tmp_path, named):
    _, _, compress = COMPRESSORS[named]
    source = tmp_path / f"x.jsonl{named}"
    source.write_bytes(compress((OASST / "trees.jsonl").read_bytes() * 50)[:40])
    message = export_error(source)
    assert "cannot read further" in message
    assert "name it" not in message and "not gzip" not in message and "not zstandard" not in message


def test_data_compressed_twice_is_named(tmp_path):
    source = tmp_path / "x.jsonl.gz"
    source.write_bytes(gzip.compress(gzip.compress((OASST / "trees.jsonl").read_bytes(), mtime=0), mtime=0))
    assert "gzip-compressed data inside the decompressed file (it starts with 1f 8b): compressed twice?" in export_error(source)


@pytest.mark.parametrize("alpaca", [False, True])
def test_a_pretty_printed_object_is_told_to_be_one_record_a_line(tmp_path, alpaca):
    source = tmp_path / "x.jsonl"
    record = json.loads(ALPACA_LINES[0]) if alpaca else first_records("trees.jsonl", 1)[0]
    source.write_text(json.dumps(record, indent=2) + "\n")
    message = alpaca_error(source) if alpaca else export_error(source)
    assert message == f"{source}:1: malformed JSON: Input data was truncated (one record per line (JSON Lines): a pretty-printed JSON file?)"


@pytest.mark.parametrize("alpaca", [False, True])
def test_a_lone_surrogate_on_line_one_is_no_pretty_printed_object(tmp_path, alpaca):
    """msgspec calls a lone surrogate escape "truncated" too; the Alpaca reader once added the hint."""
    source = tmp_path / "x.jsonl"
    lines = ALPACA_LINES if alpaca else (OASST / "trees.jsonl").read_text().splitlines()
    first = lines[0].removesuffix("}") + ', "note": "\\ud800"}'  # at the end of the line, as a cut line ends
    source.write_text("\n".join([first, *lines[1:]]) + "\n")
    message = alpaca_error(source) if alpaca else export_error(source)
    assert re.fullmatch(rf"{re.escape(str(source))}:1: lone surrogate escape \\ud800 at byte \d+ of the line \(half a UTF-16 pair, not valid Unicode text\)", message), message


def test_a_line_cut_at_the_end_of_the_file_is_no_pretty_printed_object(tmp_path):
    source = tmp_path / "x.jsonl"
    source.write_bytes((OASST / "trees.jsonl").read_bytes().splitlines()[0][:-20])  # no newline: the file ends there
    assert export_error(source) == f"{source}:1: malformed JSON: Input data was truncated"


@pytest.mark.parametrize("name", OASST_JSONL)
def test_open_assistant_lines_given_with_alpaca_are_named(tmp_path, name):
    source = tmp_path / name
    source.write_bytes((OASST / name).read_bytes())
    message = alpaca_error(source)
    assert message == (
        f"{source}:1: invalid record: Object missing required field `instruction`"
        " (an Open-Assistant record? give the file as an input, not with --alpaca)"
    )


def test_open_assistant_records_in_an_array_given_with_alpaca_are_named(tmp_path):
    source = tmp_path / "export.json"
    source.write_text(json.dumps(first_records("trees.jsonl")))
    assert alpaca_error(source).endswith(
        "(array element 1) (Open-Assistant records? give them as an input, not with --alpaca, written as JSON Lines: one record a line)"
    )


def test_an_alpaca_record_missing_a_field_gets_no_open_assistant_hint(tmp_path):
    source = tmp_path / "alpaca.jsonl"
    source.write_text('{"instruction": "no output", "text": "t", "role": "r"}\n')
    assert alpaca_error(source) == f"{source}:1: invalid record: Object missing required field `output`"


def test_open_assistant_rows_of_a_dataset_given_with_alpaca_are_named(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "saved"
    rows = [{"message_id": "m1", "parent_id": None, "text": "Hi", "role": "prompter"}]
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    # Refused whole by its columns, under either policy (skip would otherwise quarantine every row).
    for policy in OnBadRecord:
        with pytest.raises(OasstDataError) as raised:
            list(AlpacaReader(str(folder), BadRecordHandler(policy)))
        assert not isinstance(raised.value, BadRecordError)
        assert str(raised.value).endswith(
            "its columns are message_id, parent_id, text, role, and Alpaca data needs `instruction` and `output` (`input` optional)"
            " (an Open-Assistant record? Open-Assistant data is read from export files given as inputs, not with --alpaca)"
        )


def test_skip_still_counts_and_quarantines_every_line_of_misnamed_gzip(tmp_path):
    source = tmp_path / "x.jsonl"
    data = gzip.compress((OASST / "trees.jsonl").read_bytes() * 20, mtime=0)
    source.write_bytes(data)
    lines = data.split(b"\n")[: -1 if data.endswith(b"\n") else None]  # only \n ends a line (splitlines also splits at \r)
    quarantine = tmp_path / "quarantine.jsonl"
    handler = BadRecordHandler(OnBadRecord.SKIP, quarantine)
    reader = OasstExportReader([source], handler)
    assert list(reader) == []
    handler.close()
    entries = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert reader.counts.lines == reader.counts.bad_lines == handler.count == len(entries) == len(lines) > 1
    assert entries[0]["reason"].startswith("looks gzip-compressed")
    # Later lines are fragments of the stream, not its start: their reasons are as before.
    assert not any(re.search("compressed", entry["reason"]) for entry in entries[1:])
