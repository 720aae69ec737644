"""Alpaca reader: JSON array and JSON Lines (plain or compressed), the prompt rule, records without
`input`, Hugging Face datasets loaded offline from a local folder (data files or save_to_disk), text
after the closing ']', a byte order mark, and the real demo file."""

from __future__ import annotations

import gzip
import json
import logging

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from oasst_data.config import ThreadConfig
from oasst_data.errors import BadRecordError, OasstDataError
from oasst_data.quarantine import BadRecordHandler, OnBadRecord
from oasst_data.readers.alpaca import AlpacaReader, alpaca_prompt
from oasst_data.records import AlpacaRecord
from oasst_data.threads import extract_threads

from ..conftest import FIXTURES, REAL_ALPACA

ALPACA = FIXTURES / "alpaca"
FIXTURE_RECORDS = json.loads((ALPACA / "alpaca.json").read_text(encoding="utf-8"))
P, A, E = "<|prompter|>", "<|assistant|>", "<|endoftext|>"


def records(source, policy=OnBadRecord.FAIL) -> list[tuple[int, AlpacaRecord]]:
    return [(located.line, located.record) for located in AlpacaReader(str(source), BadRecordHandler(policy))]


def as_records(rows) -> list[AlpacaRecord]:
    return [AlpacaRecord(instruction=r["instruction"], output=r["output"], input=r.get("input")) for r in rows]


@pytest.fixture
def offline_datasets(tmp_path, monkeypatch):
    """`datasets` with its cache in tmp_path, recording each source handed to it (its split names,
    then its rows: one entry a source; the hub stays offline)."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    calls = []

    def recording(real):
        def call(path, *args, **kwargs):
            if not calls or calls[-1] != path:
                calls.append(path)
            return real(path, *args, **kwargs)

        return call

    monkeypatch.setattr(datasets, "load_dataset", recording(datasets.load_dataset))
    monkeypatch.setattr(datasets, "get_dataset_split_names", recording(datasets.get_dataset_split_names))
    return calls


# --- formats ------------------------------------------------------------------------------------


def test_array_and_lines_give_the_same_records():
    from_array = records(ALPACA / "alpaca.json")
    from_lines = records(ALPACA / "alpaca.jsonl")
    assert [r for _, r in from_array] == [r for _, r in from_lines] == as_records(FIXTURE_RECORDS)
    # Lines are where each record starts: the array is indented, one key a line.
    assert [line for line, _ in from_lines] == [1, 2, 3, 4, 5]
    text = (ALPACA / "alpaca.json").read_text().splitlines()
    assert [text[line - 1].strip() for line, _ in from_array] == ["{"] * 5
    assert [line for line, _ in from_array] == sorted({line for line, _ in from_array})


@pytest.mark.parametrize("name", ["alpaca.json", "alpaca.jsonl"])
@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_compressed_files(tmp_path, name, suffix):
    data = (ALPACA / name).read_bytes()
    path = tmp_path / (name + suffix)
    path.write_bytes(gzip.compress(data) if suffix == ".gz" else zstandard.ZstdCompressor().compress(data))
    assert records(path) == records(ALPACA / name)


def test_a_large_array_streams_across_read_chunks(tmp_path):
    """Elements straddle the reader's 1 MiB chunks; multi-byte characters too."""
    rows = [{"instruction": f"Q{i} é" + "x" * (i % 997), "input": "" if i % 3 else f"in {i} 😀", "output": f"A{i}"} for i in range(4000)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    assert path.stat().st_size > 2 << 20
    got = records(path)
    assert [r for _, r in got] == as_records(rows)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert all(lines[line - 1].strip() == "{" for line, _ in got)


# --- the prompt rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "prompt"),
    [
        (AlpacaRecord("Name a planet.", "Mars."), "Name a planet."),
        (AlpacaRecord("Name a planet.", "Mars.", input=None), "Name a planet."),
        (AlpacaRecord("Name a planet.", "Mars.", input=""), "Name a planet."),
        (AlpacaRecord("Add the numbers.", "5", input="2 and 3"), "Add the numbers.\n2 and 3"),
        (AlpacaRecord("Add.", "5", input=" "), "Add.\n "),  # only an empty input is left out
    ],
)
def test_prompt_rule(record, prompt):
    assert alpaca_prompt(record) == prompt


def test_threads_follow_the_prompt_rule_and_missing_input_keeps_the_others():
    threads, funnel = extract_threads(alpaca=[str(ALPACA / "alpaca.jsonl")], config=ThreadConfig(val_split=0.0))
    assert [t.to_json()["text"] for t in threads] == [
        f"{P}Give a synonym for happy.{E}{A}Joyful.{E}",
        f"{P}Add the numbers.\n2 and 3{E}{A}5{E}",
        f"{P}Name a planet.{E}{A}Mars.{E}",  # this record has no "input" key at all
        f"{P}Translate to French.\ncat{E}{A}chat{E}",
    ]
    assert (funnel.records_read, funnel.trees_read, dict(funnel.tree_drops), funnel.threads) == (5, 5, {"empty_text": 1}, 4)
    assert funnel.check() == []


# --- Hugging Face datasets, offline ------------------------------------------------------------------


def rows_with_late_input(count: int = 3000) -> list[dict]:
    """Many rows without `input` first, then rows with it: a schema inferred from the head would lose it."""
    rows = [{"instruction": f"Say {i}.", "output": f"{i}"} for i in range(count)]
    rows += [{"instruction": "Add.", "input": "2 and 3", "output": "5"}, {"instruction": "Echo.", "input": "", "output": "."}]
    return rows


def test_a_folder_of_json_files_is_read_by_the_file_readers(tmp_path, offline_datasets):
    """datasets would prepare the whole folder in memory first and name rows, not file lines."""
    folder = tmp_path / "my-alpaca"
    folder.mkdir()
    rows = rows_with_late_input()
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    got = records(folder)
    assert offline_datasets == []
    assert [r for _, r in got] == as_records(rows)
    assert [line for line, _ in got][:3] == [1, 2, 3]
    assert alpaca_prompt(got[-2][1]) == "Add.\n2 and 3" and alpaca_prompt(got[0][1]) == "Say 0."


def test_local_parquet_dataset_through_the_cli_path(tmp_path, offline_datasets):
    pyarrow = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    folder = tmp_path / "parquet-alpaca" / "data"
    folder.mkdir(parents=True)
    table = pyarrow.Table.from_pylist([{**r, "input": r.get("input")} for r in FIXTURE_RECORDS])
    pq.write_table(table, folder / "train-00000-of-00001.parquet")
    threads, funnel = extract_threads(alpaca=[str(folder.parent)], config=ThreadConfig(val_split=0.0))
    assert offline_datasets == []  # read with pyarrow: nothing prepared in the Hugging Face cache
    expected, _ = extract_threads(alpaca=[str(ALPACA / "alpaca.json")], config=ThreadConfig(val_split=0.0))
    assert [t.to_json() for t in threads] == [t.to_json() for t in expected]
    assert funnel.records_read == 5


def test_dataset_rows_of_the_wrong_type_are_bad_records(tmp_path, offline_datasets):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "data.jsonl").write_text(
        json.dumps({"instruction": "ok", "output": "fine"}) + "\n" + json.dumps({"instruction": "no output", "output": None}) + "\n"
    )
    with pytest.raises(BadRecordError, match=r"ds/data.jsonl:2: invalid record: Expected `str`, got `null` - at `\$.output`"):
        records(folder)
    reader = AlpacaReader(str(folder), BadRecordHandler(OnBadRecord.SKIP))
    assert len(list(reader)) == 1 and (reader.records_read, reader.bad_records) == (2, 1)


def test_hub_name_offline_is_one_clear_error(offline_datasets):
    with pytest.raises(OasstDataError, match=r"cannot load Alpaca dataset 'no-such-user/no-such-alpaca'.* -- offline, and it is neither a local file or folder nor in the Hugging Face cache .*hf download no-such-user/no-such-alpaca --repo-type dataset"):
        records("no-such-user/no-such-alpaca")
    assert offline_datasets == ["no-such-user/no-such-alpaca"]


def test_missing_file_is_not_mistaken_for_a_hub_name(tmp_path, offline_datasets):
    with pytest.raises(OasstDataError, match="no such file"):
        records(tmp_path / "missing.json")
    assert offline_datasets == []


# --- bad input ----------------------------------------------------------------------------------


def test_bad_json_in_an_array_names_its_line(tmp_path):
    text = (ALPACA / "alpaca.json").read_text(encoding="utf-8")
    broken = text.replace('"output": "Mars."', '"output": Mars.')
    path = tmp_path / "broken.json"
    path.write_text(broken, encoding="utf-8")
    line = broken[: broken.index("Mars.")].count("\n") + 1
    start = broken[: broken.index("Name a planet.")].count("\n")  # the record's "{" line
    with pytest.raises(BadRecordError) as caught:
        records(path)
    assert caught.value.source == str(path) and caught.value.line == start
    assert "malformed JSON" in caught.value.reason and start < line
    # Skip mode keeps the records before the break and counts the rest as one bad record.
    reader = AlpacaReader(str(path), BadRecordHandler(OnBadRecord.SKIP))
    assert [loc.record.output for loc in reader] == ["Joyful.", "5"]
    assert (reader.records_read, reader.bad_records) == (3, 1)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('[{"instruction": "a", "output": "b"},\n{"instruction": "c", "output": "d"}\n', 2, "expected ',' or ']' after an element, got end of file"),
        ('[{"instruction": "a", "output": "b"},\n\n\n', 1, "array not closed (truncated file?)"),
        ('[\n  {"instruction": "a", "output": "b"}\n\n', 2, "expected ',' or ']' after an element, got end of file"),
    ],
)
def test_an_array_cut_short_names_its_last_line_of_text(tmp_path, text, line, reason):
    """Found by a fuzz audit: the line after the file's final line break was named (line 3 of 2)."""
    path = tmp_path / "cut.json"
    path.write_text(text)
    with pytest.raises(BadRecordError) as caught:
        records(path)
    assert (caught.value.line, caught.value.reason) == (line, f"malformed JSON: {reason}")


def test_wrong_record_in_an_array_is_skipped_alone(tmp_path):
    rows = FIXTURE_RECORDS[:2] + [{"instruction": 5, "output": "x"}, ["not", "an", "object"]] + FIXTURE_RECORDS[2:]
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    with pytest.raises(BadRecordError, match=r"invalid record: Expected `str`, got `int` - at `\$.instruction`"):
        records(path)
    reader = AlpacaReader(str(path), BadRecordHandler(OnBadRecord.SKIP))
    assert [loc.record for loc in reader] == as_records(FIXTURE_RECORDS)
    assert (reader.records_read, reader.bad_records) == (7, 2)


@pytest.mark.parametrize(
    ("element", "byte"),
    [
        ('{"instruction": "bad \\ud800 x", "output": "y"}', 21),
        # An ignored field too (found by an audit: the array kept the record, JSON Lines refused it).
        ('{"instruction": "a", "output": "b", "history": "\\udc00"}', 48),
        ('{"instruction": "a", "output": "b", "meta": {"x": ["\\ud83d\\u0041"]}}', 52),
    ],
)
def test_lone_surrogate_escape_in_an_array_is_a_bad_record_as_in_json_lines(tmp_path, element, byte):
    """Python's json decodes "\\ud800" to a string UTF-8 cannot encode: a bad record, not a crash
    later, wherever it is in the element, as the JSON Lines reader refuses it anywhere in a line."""
    path = tmp_path / "surrogate.json"
    path.write_text('[{"instruction": "ok", "output": "fine"},\n ' + element + "]\n")
    with pytest.raises(BadRecordError, match=rf"surrogate.json:2: invalid record: lone surrogate escape \\u[dD]\w{{3}} at byte {byte} of the record"):
        records(path)
    threads, funnel = extract_threads(alpaca=[str(path)], config=ThreadConfig(on_bad_record="skip"))
    assert len(threads) == 1 and (funnel.records_read, funnel.bad_records) == (2, 1)
    lines = tmp_path / "surrogate.jsonl"
    lines.write_text('{"instruction": "ok", "output": "fine"}\n' + element + "\n")
    threads, funnel = extract_threads(alpaca=[str(lines)], config=ThreadConfig(on_bad_record="skip"))
    assert len(threads) == 1 and (funnel.records_read, funnel.bad_records) == (2, 1)


def test_lone_surrogate_escape_in_a_key_of_an_array_element_is_a_bad_record(tmp_path):
    """Found by fuzzing: msgspec.convert raised UnicodeEncodeError (a traceback) on such a key."""
    path = tmp_path / "surrogate-key.json"
    path.write_text('[{"instruction": "ok", "output": "fine"},\n {"instruction": "x", "outpu\\ud800t": "y", "output": "z"}]\n')
    with pytest.raises(BadRecordError, match=r"surrogate-key\.json:2: invalid record: lone surrogate escape \\ud800 at byte 27 of the record"):
        records(path)
    threads, funnel = extract_threads(alpaca=[str(path)], config=ThreadConfig(on_bad_record="skip"))
    assert len(threads) == 1 and (funnel.records_read, funnel.bad_records) == (2, 1)


# --- real data ------------------------------------------------------------------------------------


@pytest.mark.skipif(not REAL_ALPACA.exists(), reason="../shared real data not present")
def test_real_demo_file():
    got = [r for _, r in records(REAL_ALPACA)]
    assert len(got) == 999
    assert sum(1 for r in got if r.input) == 412
    with_input = next(r for r in got if r.input)
    assert alpaca_prompt(with_input) == f"{with_input.instruction}\n{with_input.input}"
    threads, funnel = extract_threads(alpaca=[str(REAL_ALPACA)], config=ThreadConfig(val_split=0.0))
    assert funnel.records_read == 999 and funnel.bad_records == 0
    assert funnel.threads + sum(funnel.tree_drops.values()) == 999
    assert len({t.id for t in threads}) == len(threads)


# --- text after the closing ']' -------------------------------------------------------------------

ROW_A = {"instruction": "a", "output": "b"}
ROW_C = {"instruction": "c", "output": "d"}


def compress(data: bytes, suffix: str) -> bytes:
    if suffix == ".gz":
        return gzip.compress(data, mtime=0)
    if suffix == ".zst":
        return zstandard.ZstdCompressor().compress(data)
    return data


class RecordingHandler(BadRecordHandler):
    """Skip mode that also keeps the errors, to check their lines and raw text."""

    def __init__(self):
        super().__init__(OnBadRecord.SKIP)
        self.errors: list[BadRecordError] = []

    def __call__(self, error: BadRecordError) -> None:
        self.errors.append(error)
        super().__call__(error)


def read_skipping(source) -> tuple[list[AlpacaRecord], AlpacaReader, list[BadRecordError]]:
    handler = RecordingHandler()
    reader = AlpacaReader(str(source), handler)
    return [located.record for located in reader], reader, handler.errors


TRAILING_CASES = [
    # (case id, file name, content, records before the trailing text, its line, what the error shows, the raw quarantined)
    (
        "two_arrays_one_a_line", "two.json", json.dumps([ROW_A]) + "\n" + json.dumps([ROW_C]) + "\n",
        1, 2, "'[{\"instruction\": \"c\"", json.dumps([ROW_C]) + "\n",
    ),
    ("garbage_on_the_same_line", "garbage.json", json.dumps([ROW_A, ROW_C]) + " garbage\n", 2, 1, "'garbage'", "garbage\n"),
    (
        "json_lines_under_json_whose_first_line_is_an_array", "mixed.json", json.dumps([ROW_A]) + "\n" + json.dumps(ROW_C) + "\n" + json.dumps(ROW_A) + "\n",
        1, 2, "JSON Lines need one object a line", json.dumps(ROW_C) + "\n" + json.dumps(ROW_A) + "\n",
    ),
    ("empty_array_then_data", "empty.json", "[]\n\n  x\n", 0, 3, "'x'", "x\n"),
    ("a_second_closing_bracket", "extra.json", json.dumps([ROW_A]) + "]\n", 1, 1, "']'", "]\n"),
    (
        "indented_array_then_an_object", "indented.json", json.dumps([ROW_A, ROW_C], indent=2) + "\n" + json.dumps(ROW_A),
        2, 11, "'{\"instruction\": \"a\"", json.dumps(ROW_A),
    ),
]


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
@pytest.mark.parametrize("name", ["mixed.jsonl", "mixed.ndjson"])
def test_a_json_lines_name_is_read_as_lines_even_when_line_1_opens_an_array(tmp_path, name, suffix):
    """Found by an audit: a stray first line `[...]` made a .jsonl file one array; under skip every
    record after it was lost (one bad record, its raw cut at 1 MiB)."""
    path = tmp_path / (name + suffix)
    path.write_bytes(compress((json.dumps([ROW_A]) + "\n" + json.dumps(ROW_C) + "\n" + json.dumps(ROW_A) + "\n").encode(), suffix))
    got, reader, seen = read_skipping(path)
    assert got == as_records([ROW_C, ROW_A])
    assert (reader.records_read, reader.bad_records) == (3, 1)
    assert [(e.line, e.raw) for e in seen] == [(1, json.dumps([ROW_A]).encode() + b"\n")]
    assert "got `array`" in seen[0].reason


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
@pytest.mark.parametrize(("name", "text", "before", "line", "shows", "raw"), [c[1:] for c in TRAILING_CASES], ids=[c[0] for c in TRAILING_CASES])
def test_data_after_the_closing_bracket_is_never_dropped(tmp_path, name, text, before, line, shows, raw, suffix):
    """Found by an audit: everything after the array's ']' was ignored (a second array, JSON Lines, garbage)."""
    path = tmp_path / (name + suffix)
    path.write_bytes(compress(text.encode(), suffix))
    with pytest.raises(BadRecordError) as caught:
        records(path)
    error = caught.value
    assert (error.source, error.line) == (str(path), line)
    assert error.reason.startswith("malformed JSON: data after the closing ']' of the array: ") and shows in error.reason
    # Skip: the records before are used, the trailing text is one bad record, quarantined raw.
    got, reader, seen = read_skipping(path)
    assert got == as_records([ROW_A, ROW_C][:before])
    assert (reader.records_read, reader.bad_records) == (before + 1, 1)
    assert [(e.line, e.raw) for e in seen] == [(line, raw.encode())]


def test_only_whitespace_may_follow_the_closing_bracket(tmp_path):
    path = tmp_path / "ws.json"
    path.write_text(json.dumps(FIXTURE_RECORDS) + " \t\r\n\n   \n")
    assert [r for _, r in records(path)] == as_records(FIXTURE_RECORDS)
    path.write_text("[] \n")
    assert records(path) == []


def test_long_trailing_text_is_quarantined_up_to_a_bound(tmp_path):
    """The trailing text is read at most 1 MiB further: the reader stays in bounded memory."""
    from oasst_data.readers import jsonarray

    second = [{"instruction": f"q{i}", "output": "x" * 200} for i in range(12000)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps([ROW_A]) + "\n" + json.dumps(second) + "\n")
    assert path.stat().st_size > 2 * jsonarray._MAX_TRAILING_RAW
    with pytest.raises(BadRecordError, match=r"big.json:2: .*data after the closing '\]'.*raw holds its first 1048576 characters"):
        records(path)
    got, reader, seen = read_skipping(path)
    assert got == as_records([ROW_A]) and (reader.records_read, reader.bad_records) == (2, 1)
    assert len(seen[0].raw) == jsonarray._MAX_TRAILING_RAW and seen[0].raw.startswith(b'[{"instruction": "q0"')


def test_a_stream_broken_after_the_closing_bracket_is_still_reported(tmp_path):
    """A zstd frame holding the whole array, then a truncated frame of blanks: the file is damaged, say so."""
    compressor = zstandard.ZstdCompressor()
    data = (ALPACA / "alpaca.json").read_bytes()
    path = tmp_path / "tail.json.zst"
    path.write_bytes(compressor.compress(data) + compressor.compress(b"\n" * 1000)[:-3])
    with pytest.raises(BadRecordError, match="cannot read further: zstd stream ended before the end of its frame"):
        records(path)
    got, reader, seen = read_skipping(path)
    assert got == as_records(FIXTURE_RECORDS) and (reader.records_read, reader.bad_records) == (6, 1)
    assert seen[0].line > data.count(b"\n")


def test_records_before_a_break_in_the_last_chunk_are_kept(tmp_path):
    """Found while fixing the above: one read(1 MiB) that met the break dropped what it had decompressed."""
    compressor = zstandard.ZstdCompressor()
    data = (ALPACA / "alpaca.json").read_bytes()
    half = data.index(b"{", data.index(b"Name a planet.") - 40)  # the third record starts here
    path = tmp_path / "cut.json.zst"
    path.write_bytes(compressor.compress(data[:half]) + compressor.compress(data[half:])[:-5])
    with pytest.raises(BadRecordError, match="cannot read further"):
        records(path)
    got, reader, _ = read_skipping(path)
    assert got == as_records(FIXTURE_RECORDS[:2]) and (reader.records_read, reader.bad_records) == (3, 1)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.fixed_dictionaries({"instruction": st.text(max_size=5), "output": st.text(max_size=5)}), max_size=4),
    indent=st.sampled_from([None, 1]),
    gap=st.text(alphabet=" \t\r\n", max_size=4),
    tail=st.text(max_size=12),
)
def test_trailing_text_property(tmp_path_factory, rows, indent, gap, tail):
    """Any array followed by any text: whitespace only gives every record; anything else is one error at its line."""
    text = json.dumps(rows, indent=indent) + gap + tail
    path = tmp_path_factory.mktemp("tail") / "a.json"
    path.write_bytes(text.encode("utf-8"))
    stripped = tail.lstrip(" \t\r\n")  # JSON's whitespace; any other character is data
    got, reader, seen = read_skipping(path)
    assert got == as_records(rows)
    if not stripped:
        assert seen == [] and reader.records_read == len(rows)
        return
    line = text[: len(text) - len(stripped)].count("\n") + 1
    assert [(e.line, e.raw) for e in seen] == [(line, stripped.encode("utf-8"))]
    assert (reader.records_read, reader.bad_records) == (len(rows) + 1, 1)
    assert "data after the closing ']'" in seen[0].reason
    with pytest.raises(BadRecordError) as caught:
        records(path)
    assert caught.value.line == line


def test_a_jsonl_line_holding_an_array_is_one_bad_record_not_unpacked(tmp_path):
    path = tmp_path / "lines.jsonl"
    path.write_text(json.dumps(ROW_A) + "\n" + json.dumps([ROW_C, ROW_C]) + "\n" + json.dumps(ROW_A) + "\n")
    with pytest.raises(BadRecordError, match=r"lines.jsonl:2: invalid record: Expected `object`, got `array` \(JSON Lines hold one object a line"):
        records(path)
    got, reader, seen = read_skipping(path)
    assert got == as_records([ROW_A, ROW_A]) and (reader.records_read, reader.bad_records) == (3, 1)
    assert seen[0].raw == json.dumps([ROW_C, ROW_C]).encode() + b"\n"


# --- a UTF-8 byte order mark ----------------------------------------------------------------------

BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
@pytest.mark.parametrize("name", ["alpaca.json", "alpaca.jsonl"])
def test_a_byte_order_mark_at_the_start_is_ignored(tmp_path, name, suffix):
    """msgspec and json reject U+FEFF ("invalid character (byte 0)"); Python's utf-8-sig drops it at the start."""
    path = tmp_path / (name + suffix)
    path.write_bytes(compress(BOM + (ALPACA / name).read_bytes(), suffix))
    assert records(path) == records(ALPACA / name)  # same records, same line numbers
    if name.endswith(".json"):  # blank space before the '[' is fine too
        path.write_bytes(compress(BOM + b"\n  " + (ALPACA / name).read_bytes(), suffix))
        assert [r for _, r in records(path)] == as_records(FIXTURE_RECORDS)


def test_a_byte_order_mark_elsewhere_is_still_an_error(tmp_path):
    path = tmp_path / "late.json"
    path.write_bytes(b"[\n" + BOM + json.dumps(ROW_A).encode() + b"]\n")
    with pytest.raises(BadRecordError, match=r"late.json:2: malformed JSON"):
        records(path)
    path = tmp_path / "twice.jsonl"
    path.write_bytes(BOM + BOM + json.dumps(ROW_A).encode() + b"\n")
    with pytest.raises(BadRecordError, match=r"twice.jsonl:1: malformed JSON"):
        records(path)


def test_a_byte_order_mark_then_invalid_utf8_names_the_line(tmp_path):
    """The mark is dropped on the early-stop path too: the records before the bad byte survive."""
    path = tmp_path / "bad.json"
    path.write_bytes(BOM + b'[{"instruction": "a", "output": "b"},\n {"instruction": "caf\xe9", "output": "d"}]\n')
    with pytest.raises(BadRecordError, match=r"bad.json:2: invalid UTF-8"):
        records(path)
    got, reader, _ = read_skipping(path)
    assert got == as_records([ROW_A]) and (reader.records_read, reader.bad_records) == (2, 1)


# --- directories ------------------------------------------------------------------------------------


def saved_rows() -> list[dict]:
    return [{"instruction": "Add.", "input": "2 and 3", "output": "5"}, {"instruction": "Name a planet.", "output": "Mars."}]


def test_a_folder_written_by_dataset_save_to_disk(tmp_path, offline_datasets):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(saved_rows()).save_to_disk(str(folder))
    got = records(folder)
    assert [r for _, r in got] == as_records(saved_rows()) and [line for line, _ in got] == [1, 2]
    assert offline_datasets == []  # load_dataset refuses such a folder ("use load_from_disk")
    threads, funnel = extract_threads(alpaca=[str(folder)], config=ThreadConfig(val_split=0.0))
    assert threads[0].to_json()["text"] == f"{P}Add.\n2 and 3{E}{A}5{E}"
    assert (funnel.records_read, funnel.threads) == (2, 2)


def test_a_folder_written_by_dataset_dict_save_to_disk(tmp_path, offline_datasets, caplog):
    datasets = pytest.importorskip("datasets")
    rows = saved_rows()
    other = [{"instruction": "Other.", "output": "split"}]
    with_train = tmp_path / "with-train"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(other), "train": datasets.Dataset.from_list(rows)}).save_to_disk(str(with_train))
    assert [r for _, r in records(with_train)] == as_records(rows)
    # One split, whatever its name: that split, with a warning naming it.
    only = tmp_path / "only-validation"
    datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)}).save_to_disk(str(only))
    with caplog.at_level(logging.WARNING, logger="oasst_data.readers.alpaca"):
        assert [r for _, r in records(only)] == as_records(rows)
    assert "no 'train' split, reading its only split 'validation'" in caplog.text
    # Several splits and none is train: which one is meant is not guessed.
    several = tmp_path / "several"
    datasets.DatasetDict({"a": datasets.Dataset.from_list(rows), "b": datasets.Dataset.from_list(other)}).save_to_disk(str(several))
    with pytest.raises(OasstDataError, match=r"several: no 'train' split in this dataset \(it has a, b\)"):
        records(several)
    assert offline_datasets == []


def test_saved_rows_of_the_wrong_type_are_bad_records(tmp_path, offline_datasets):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "saved"
    datasets.Dataset.from_list([{"instruction": "ok", "output": "fine"}, {"instruction": "no output", "output": None}]).save_to_disk(str(folder))
    with pytest.raises(BadRecordError, match=r"saved/data-00000-of-00001.arrow: row 1: invalid record: Expected `str`, got `null` - at `\$.output`"):
        records(folder)
    got, reader, _ = read_skipping(folder)
    assert len(got) == 1 and (reader.records_read, reader.bad_records) == (2, 1)


def test_a_damaged_saved_folder_is_one_clear_error(tmp_path, offline_datasets):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(saved_rows()).save_to_disk(str(folder))
    for arrow in folder.glob("*.arrow"):
        arrow.unlink()
    with pytest.raises(OasstDataError, match=r"cannot load Alpaca dataset folder '.*saved' \(written by save_to_disk\): "):
        records(folder)


def test_a_folder_without_data_says_it_is_a_directory(tmp_path, offline_datasets):
    pytest.importorskip("datasets")
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(OasstDataError, match=r"empty: is a directory but not a dataset: ") as caught:
        records(folder)
    assert "offline?" not in str(caught.value)


def test_an_empty_source_is_an_error_not_the_default_download():
    from oasst_data.errors import ConfigError
    from oasst_data.readers.alpaca import DEFAULT_ALPACA_DATASET, AlpacaReader

    with pytest.raises(ConfigError, match="--alpaca got an empty source"):
        AlpacaReader("  ")
    assert AlpacaReader("alpaca").source == DEFAULT_ALPACA_DATASET


def test_an_alpaca_source_given_twice_is_an_error(tmp_path, monkeypatch):
    """--alpaca a.json --alpaca ./a.json trained every record twice (8 threads from 4), silently."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.json").write_text((ALPACA / "alpaca.json").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "link.json").symlink_to(tmp_path / "a.json")
    threads, _ = extract_threads(alpaca=["a.json"])
    assert len(threads) == 4
    for again in ("a.json", "./a.json", "link.json"):
        with pytest.raises(OasstDataError, match=r"given twice \(also as a.json\)"):
            extract_threads(alpaca=["a.json", again])
    with pytest.raises(OasstDataError, match="given twice"):  # an export also given as Alpaca
        extract_threads([str(FIXTURES / "oasst" / "trees.jsonl")], alpaca=[str(FIXTURES / "oasst" / "trees.jsonl")])
    with pytest.raises(OasstDataError, match=r"default: given twice \(also as alpaca\)"):
        extract_threads(alpaca=["alpaca", "default"])
    # Different files with the same records stay allowed (repeats are kept, each with its own id).
    (tmp_path / "b.json").write_text((ALPACA / "alpaca.json").read_text(encoding="utf-8"), encoding="utf-8")
    assert len(extract_threads(alpaca=["a.json", "b.json"])[0]) == 8


# --- an array broken inside (found by an audit) ------------------------------------------------------


def test_an_integer_too_long_for_python_is_one_bad_record_and_reading_goes_on(tmp_path):
    """Found by audits: first a traceback, then (Python's 4,300-digit limit taken as a syntax error)
    the end of the array; JSON Lines read such a record as any other."""
    path = tmp_path / "digits.json"
    path.write_text('[{"instruction": "a", "output": "b"},\n {"instruction": ' + "1" * 5000 + ', "output": "O"},\n {"instruction": "c", "output": "d"}]\n')
    with pytest.raises(BadRecordError, match=r"digits.json:2: invalid record: Expected `str`, got `decimal` - at `\$.instruction` \(array element 2\)"):
        records(path)
    got, reader, seen = read_skipping(path)
    assert got == as_records([ROW_A, ROW_C]) and (reader.records_read, reader.bad_records) == (3, 1)
    assert seen[0].raw.startswith(b'{"instruction": 111')


@pytest.mark.parametrize("digits", ["9" * 5000, "-" + "9" * 5000, "9" * 4299, "-" + "9" * 4299])
@pytest.mark.parametrize("lines", [False, True])
def test_a_long_integer_in_an_ignored_field_is_read_in_an_array_as_in_json_lines(tmp_path, digits, lines):
    rows = ['{"instruction": "a", "output": "b", "n": ' + digits + "}", json.dumps(ROW_C)]
    path = tmp_path / ("digits.jsonl" if lines else "digits.json")
    path.write_text("\n".join(rows) + "\n" if lines else "[" + ",\n".join(rows) + "]\n")
    assert [record for _, record in records(path)] == as_records([ROW_A, ROW_C])


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("lines", [False, True])
def test_nan_or_infinity_is_one_bad_record_in_an_array_as_in_json_lines(tmp_path, constant, lines):
    """Python's json reads (and json.dumps writes) NaN and Infinity; JSON has neither. An array
    accepted such a record that JSON Lines refused; now both refuse it, and reading goes on."""
    rows = ['{"instruction": "a", "output": "b", "score": [1, ' + constant + "]}", json.dumps(ROW_C)]
    path = tmp_path / ("nan.jsonl" if lines else "nan.json")
    path.write_text("\n".join(rows) + "\n" if lines else "[" + ",\n".join(rows) + "]\n")
    with pytest.raises(BadRecordError, match=rf"nan.jsonl?:1: malformed JSON: .*{constant} is not JSON; write null or a string"):
        records(path)
    got, reader, seen = read_skipping(path)
    assert got == as_records([ROW_C]) and (reader.records_read, reader.bad_records) == (2, 1)
    assert seen[0].raw.rstrip(b"\n") == rows[0].encode()


def test_a_syntax_error_inside_an_array_says_the_rest_is_not_read_and_quarantines_it(tmp_path, caplog):
    """Skip mode used to stop there with an empty raw and no word about the records after it."""
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(6)]
    text = json.dumps(rows, indent=2)
    broken = text.replace('"q2",', '"q2"', 1)  # record 3 loses a comma
    path = tmp_path / "broken.json"
    path.write_text(broken)
    line = broken[: broken.index('"q2"')].count("\n")  # the line where record 3 starts ('{')
    with pytest.raises(BadRecordError, match=rf"broken.json:{line}: malformed JSON: Expecting ',' delimiter; the array cannot be followed past it"):
        records(path)
    with caplog.at_level("WARNING", logger="oasst_data"):
        got, reader, seen = read_skipping(path)
    assert got == as_records(rows[:2]) and (reader.records_read, reader.bad_records) == (3, 1)
    # The quarantine holds the text from the broken record to the end: fix it, read it again.
    rest = broken[broken.rindex("{", 0, broken.index('"q2"')):]
    assert seen[0].raw.decode() == rest
    assert "reading stopped after 2 record(s)" in caplog.text


def test_a_syntax_error_early_in_a_large_array_does_not_read_the_rest(tmp_path):
    """The reader pulled the whole rest of the file into memory (up to 256 MiB) looking for more."""
    from oasst_data.readers import jsonarray

    rows = [{"instruction": f"q{i}", "output": "x" * 100} for i in range(40_000)]  # ~5 MB on one line
    text = json.dumps(rows)
    path = tmp_path / "big.json"
    path.write_text(text.replace('"q1", ', '"q1" ', 1))
    got, reader, seen = read_skipping(path)
    assert len(got) == 1 and reader.bad_records == 1
    assert len(seen[0].raw) == jsonarray._MAX_TRAILING_RAW  # bounded, and said so
    assert f"raw holds the next {jsonarray._MAX_TRAILING_RAW} characters" in seen[0].reason


def test_invalid_utf8_inside_an_array_keeps_the_bytes_for_the_quarantine(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'[{"instruction": "a", "output": "b"},\n {"instruction": "caf\xe9", "output": "d"},\n {"instruction": "e", "output": "f"}]\n')
    got, reader, seen = read_skipping(path)
    assert got == as_records([ROW_A]) and reader.bad_records == 1
    assert "invalid UTF-8" in seen[0].reason and "nothing after line 2 is read" in seen[0].reason
    assert seen[0].raw == b'{"instruction": "caf\xe9", "output": "d"},\n {"instruction": "e", "output": "f"}]\n'


def test_a_bad_record_of_a_one_line_array_names_its_element(tmp_path):
    """json.dump writes the whole array on line 1: the line alone cannot tell records apart."""
    rows = [ROW_A] * 500 + [{"instruction": "x", "output": 5}] + [ROW_C] * 10
    path = tmp_path / "one-line.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(BadRecordError, match=r"one-line.json:1: invalid record: .*\(array element 501\)"):
        records(path)


# --- what is not read is said (found by an audit) ------------------------------------------------------


def test_splits_not_read_are_named_and_a_lone_split_is_read(tmp_path, offline_datasets, caplog):
    import pyarrow
    import pyarrow.parquet as pq

    both = tmp_path / "both"
    both.mkdir()
    pq.write_table(pyarrow.Table.from_pylist([ROW_A] * 7), both / "train.parquet")
    pq.write_table(pyarrow.Table.from_pylist([ROW_C] * 3), both / "test.parquet")
    with caplog.at_level("WARNING", logger="oasst_data"):
        assert [r for _, r in records(both)] == as_records([ROW_A] * 7)
    assert f"{both}: reading split 'train' only; not read: test" in caplog.text
    only = tmp_path / "only-test"
    only.mkdir()
    pq.write_table(pyarrow.Table.from_pylist([ROW_C] * 3), only / "test.parquet")
    assert [r for _, r in records(only)] == as_records([ROW_C] * 3)  # was "Unknown split 'train'"


@pytest.mark.parametrize("layout", ["array", "lines", "dataset"])
def test_fields_the_format_does_not_use_are_named_in_a_warning(tmp_path, caplog, layout):
    rows = [dict(ROW_A, history=[["q1", "a1"]], system="You are a pirate."), dict(ROW_C, system="Be brief.")]
    if layout == "array":
        source = tmp_path / "extra.json"
        source.write_text(json.dumps(rows, indent=1))
    elif layout == "lines":
        source = tmp_path / "extra.jsonl"
        source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        datasets = pytest.importorskip("datasets")
        source = tmp_path / "saved"
        datasets.Dataset.from_list([dict(ROW_A, system="s"), dict(ROW_C, system="t")]).save_to_disk(str(source))
    with caplog.at_level("WARNING", logger="oasst_data"):
        got = [r for _, r in records(source)]
    assert got == as_records([ROW_A, ROW_C])
    expected = "system (2 records)" if layout == "dataset" else "history (1 record), system (2 records)"
    assert f"{source}: fields the Alpaca format does not use were ignored: {expected}" in caplog.text


@pytest.mark.parametrize("layout", ["array", "lines"])
def test_a_bad_records_fields_are_not_counted_as_ignored(tmp_path, caplog, layout):
    """Found by an audit: the warning counted the fields of records then rejected (quarantined)."""
    rows = [dict(ROW_A, note="kept"), {"instruction": 5, "output": "x", "junk": 1}, dict(ROW_C, junk="\ud800")]
    source = tmp_path / ("x.json" if layout == "array" else "x.jsonl")
    text = json.dumps(rows, indent=1) if layout == "array" else "".join(json.dumps(row) + "\n" for row in rows)
    source.write_text(text)
    reader = AlpacaReader(str(source), BadRecordHandler(OnBadRecord.SKIP))
    with caplog.at_level("WARNING", logger="oasst_data"):
        assert [loc.record for loc in reader] == as_records([ROW_A])
    assert reader.bad_records == 2
    assert f"{source}: fields the Alpaca format does not use were ignored: note (1 record)" in caplog.text
    assert "junk" not in caplog.text


def test_no_warning_when_every_field_is_used(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="oasst_data"):
        records(ALPACA / "alpaca.json")
        records(ALPACA / "alpaca.jsonl")
    assert "were ignored" not in caplog.text


def test_a_json_folder_keeps_the_splits_of_datasets_and_errors_by_file_and_line(tmp_path, offline_datasets, caplog):
    folder = tmp_path / "split-json"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps(ROW_A) + "\n{broken\n" + json.dumps(ROW_A) + "\n")
    (folder / "test.json").write_text(json.dumps([ROW_C, ROW_C]))
    with pytest.raises(BadRecordError, match=r"split-json/train.jsonl:2: malformed JSON"):
        records(folder)
    with caplog.at_level("WARNING", logger="oasst_data"):
        got, reader, seen = read_skipping(folder)
    assert got == as_records([ROW_A, ROW_A]) and (reader.records_read, reader.bad_records) == (3, 1)  # one line lost, not the folder
    assert seen[0].raw == b"{broken\n"
    assert "reading split 'train' only; not read: test" in caplog.text
    assert offline_datasets == []


def test_a_file_inside_a_folder_given_too_is_an_alpaca_source_given_twice(tmp_path):
    """--alpaca DIR --alpaca DIR/a.json trained a.json twice: only file against file was compared."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.json").write_text((ALPACA / "alpaca.json").read_text(encoding="utf-8"), encoding="utf-8")
    assert len(extract_threads(alpaca=[str(folder)])[0]) == 4
    for sources in ([str(folder), str(folder / "a.json")], [str(folder / "a.json"), str(folder)]):
        with pytest.raises(OasstDataError, match="given twice .also inside or around"):
            extract_threads(alpaca=sources)


@pytest.mark.parametrize("others", [["b.csv"], ["b.csv", "c.csv"]])
def test_a_folder_of_several_formats_is_refused_not_read_in_part(tmp_path, offline_datasets, others):
    """datasets reads a folder as one format (the most common): a.json + b.csv gave a.json's
    records only, a.jsonl + two CSVs the CSV rows only, without a word."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps({"instruction": "q", "input": "", "output": "a"}) + "\n")
    for name in others:
        (folder / name).write_text("instruction,input,output\nq2,,a2\n")
    with pytest.raises(OasstDataError, match=r"its files are of several formats \(\.csv, \.json\)"):
        list(AlpacaReader(str(folder)))


def test_folders_with_other_files_or_other_compressions_still_load(tmp_path, offline_datasets):
    """Review of the format check: a LICENSE.txt is no second format, a .jsonl.xz goes to
    datasets (the file readers decompress gzip and zstd only), an export beside Alpaca data in
    one folder is not an Alpaca source given twice."""
    import lzma

    from oasst_data.readers.alpaca import check_distinct_sources

    records = b"".join(json.dumps({"instruction": f"q{i}", "input": "", "output": "a"}).encode() + b"\n" for i in range(3))
    compressed = tmp_path / "xz"
    compressed.mkdir()
    (compressed / "train.jsonl.xz").write_bytes(lzma.compress(records))
    assert len(list(AlpacaReader(str(compressed)))) == 3
    licensed = tmp_path / "licensed"
    licensed.mkdir()
    (licensed / "alpaca.jsonl").write_bytes(records)
    (licensed / "LICENSE.txt").write_text("MIT")
    assert len(list(AlpacaReader(str(licensed)))) == 3
    export = licensed / "export.jsonl.gz"
    export.write_bytes(gzip.compress(b""))
    check_distinct_sources([export], [str(licensed)])  # no error


# --- ids and splits ------------------------------------------------------------------------------


def _alpaca_file(path, rows) -> str:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return str(path)


def test_an_alpaca_id_is_the_digest_of_instruction_input_and_output(tmp_path):
    """Stable across runs and versions (builds name rows by it); the input is part of it."""
    import hashlib

    rows = [{"instruction": "Add.", "input": "2 and 2", "output": "4"}, {"instruction": "Add.", "input": "3 and 1", "output": "4"}]
    threads, _ = extract_threads(alpaca=[_alpaca_file(tmp_path / "a.json", rows)], config=ThreadConfig(val_split=0.0))
    expected = ["alpaca-" + hashlib.sha256("\x00".join((r["instruction"], r["input"], r["output"])).encode()).hexdigest()[:16] for r in rows]
    assert [t.id for t in threads] == expected and len(set(expected)) == 2


def test_copies_of_a_record_share_a_split_and_get_unique_ids_across_sources(tmp_path):
    row = {"instruction": "Name a colour.", "input": "", "output": "Blue."}
    first = _alpaca_file(tmp_path / "a.json", [row] * 20)
    second = _alpaca_file(tmp_path / "b.json", [row] * 20)
    for seed in range(6):  # with val_split 0.5 some seed puts the record in each split
        threads, _ = extract_threads(alpaca=[first, second], config=ThreadConfig(val_split=0.5, seed=seed))
        assert len({t.split for t in threads}) == 1
        ids = [t.id for t in threads]
        assert len(set(ids)) == 40 and ids[1] == f"{ids[0]}-1" and ids[20] == f"{ids[0]}-20"
