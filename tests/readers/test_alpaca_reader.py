"""Alpaca reader: JSON array and JSON Lines (plain or compressed), the prompt rule, records without
`input`, a Hugging Face dataset loaded offline from a local folder, and the real demo file."""

from __future__ import annotations

import gzip
import json

import pytest
import zstandard

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
    """`datasets` with its cache in tmp_path, recording every load_dataset call (the hub stays offline)."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    calls = []
    real = datasets.load_dataset

    def load_dataset(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
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


def test_local_dataset_folder_goes_through_load_dataset(tmp_path, offline_datasets):
    folder = tmp_path / "my-alpaca"
    folder.mkdir()
    rows = rows_with_late_input()
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    got = records(folder)
    assert offline_datasets == [str(folder)]
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
    assert offline_datasets == [str(folder.parent)]
    expected, _ = extract_threads(alpaca=[str(ALPACA / "alpaca.json")], config=ThreadConfig(val_split=0.0))
    assert [t.to_json() for t in threads] == [t.to_json() for t in expected]
    assert funnel.records_read == 5


def test_dataset_rows_of_the_wrong_type_are_bad_records(tmp_path, offline_datasets):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "data.jsonl").write_text(
        json.dumps({"instruction": "ok", "output": "fine"}) + "\n" + json.dumps({"instruction": "no output", "output": None}) + "\n"
    )
    with pytest.raises(BadRecordError, match=r"ds:2: invalid record: Expected `str`, got `null` - at `\$.output`"):
        records(folder)
    reader = AlpacaReader(str(folder), BadRecordHandler(OnBadRecord.SKIP))
    assert len(list(reader)) == 1 and (reader.records_read, reader.bad_records) == (2, 1)


def test_hub_name_offline_is_one_clear_error(offline_datasets):
    with pytest.raises(OasstDataError, match=r"cannot load Alpaca dataset 'no-such-user/no-such-alpaca'.*offline\?"):
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


def test_wrong_record_in_an_array_is_skipped_alone(tmp_path):
    rows = FIXTURE_RECORDS[:2] + [{"instruction": 5, "output": "x"}, ["not", "an", "object"]] + FIXTURE_RECORDS[2:]
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    with pytest.raises(BadRecordError, match=r"invalid record: Expected `str`, got `int` - at `\$.instruction`"):
        records(path)
    reader = AlpacaReader(str(path), BadRecordHandler(OnBadRecord.SKIP))
    assert [loc.record for loc in reader] == as_records(FIXTURE_RECORDS)
    assert (reader.records_read, reader.bad_records) == (7, 2)


def test_lone_surrogate_escape_in_an_array_is_a_bad_record(tmp_path):
    """Python's json decodes "\\ud800" to a string UTF-8 cannot encode: a bad record, not a crash later."""
    path = tmp_path / "surrogate.json"
    path.write_text('[{"instruction": "ok", "output": "fine"},\n {"instruction": "bad \\ud800 x", "output": "y"}]\n')
    with pytest.raises(BadRecordError, match=r"surrogate.json:2: invalid record: lone surrogate '\\ud800' in `instruction`"):
        records(path)
    threads, funnel = extract_threads(alpaca=[str(path)], config=ThreadConfig(on_bad_record="skip"))
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
