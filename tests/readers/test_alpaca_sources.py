"""Alpaca data as Parquet, Arrow, `save_to_disk` folders, Hub-style folders and Hub snapshots.

Found by an audit of the `datasets` path: a single Parquet file was read as JSON Lines (under
skip: every line a bad record, exit 0), a README's `configs:` was ignored, Parquet folders were
copied into the Hugging Face cache (and failed when it was read-only), an empty split broke a
saved folder, wrong columns quarantined every row, and a cached Hub snapshot was not found offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from oasst_data.config import ThreadConfig
from oasst_data.errors import BadRecordError, OasstDataError
from oasst_data.quarantine import BadRecordHandler, OnBadRecord
from oasst_data.readers.alpaca import AlpacaReader
from oasst_data.readers.alpaca_sources import DataFormat, file_format, resolve_alpaca_source

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
datasets = pytest.importorskip("datasets")

ROWS = [{"instruction": f"Say {i}.", "input": "" if i % 2 else f"in {i}", "output": f"{i}."} for i in range(7)]


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """A Hugging Face home of the test's own, offline; `load_dataset` calls are recorded."""
    home = tmp_path / "hf-home"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", home / "datasets")
    calls = []
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda path, *a, **k: calls.append(path) or real(path, *a, **k))
    return home, calls


def read(source, policy=OnBadRecord.FAIL):
    handler = BadRecordHandler(policy)
    reader = AlpacaReader(str(source), handler)
    return [(r.record.instruction, r.record.input, r.record.output) for r in reader], reader


def as_tuples(rows):
    return [(r["instruction"], r.get("input"), r["output"]) for r in rows]


def write_parquet(path, rows, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, **kwargs)
    return path


# --- single table files ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["train.parquet", "no-suffix", "data.bin"])
def test_a_parquet_file_is_read_as_parquet_by_suffix_or_magic(tmp_path, name):
    """A Parquet file was read as JSON Lines: under skip, every line a bad record and exit 0."""
    path = write_parquet(tmp_path / name, ROWS, row_group_size=3)  # several row groups
    assert file_format(path) is DataFormat.PARQUET
    got, reader = read(path)
    assert got == as_tuples(ROWS) and reader.records_read == 7 and reader.bad_records == 0


@pytest.mark.parametrize("kind", ["stream", "file"])
def test_an_arrow_file_is_read_in_either_ipc_format(tmp_path, kind):
    table = pa.Table.from_pylist(ROWS)
    path = tmp_path / "data.arrow"
    writer = (pa.ipc.new_stream if kind == "stream" else pa.ipc.new_file)(str(path), table.schema)
    for batch in table.to_batches(max_chunksize=2):
        writer.write_batch(batch)
    writer.close()
    assert read(path)[0] == as_tuples(ROWS)


def test_a_csv_file_is_refused_with_the_conversion_to_use(tmp_path):
    path = tmp_path / "alpaca.csv"
    path.write_text("instruction,input,output\n1,,2\n")
    with pytest.raises(OasstDataError, match=r"alpaca.csv: a CSV file is not read as Alpaca data; convert it to JSON Lines"):
        read(path)


def test_a_damaged_parquet_file_is_one_error_naming_it(tmp_path):
    path = write_parquet(tmp_path / "train.parquet", ROWS)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\0" * 64
    path.write_bytes(bytes(data[: len(data) - 20]))  # the footer cut: no table any more
    with pytest.raises(OasstDataError, match=r"train.parquet: cannot read it as Parquet: "):
        read(path)


def test_bad_rows_are_named_by_file_and_row_and_skipped_alone(tmp_path):
    rows = ROWS[:3] + [{"instruction": "no answer", "input": "", "output": None}] + ROWS[3:]
    path = write_parquet(tmp_path / "train.parquet", rows)
    with pytest.raises(BadRecordError, match=r"train.parquet: row 3: invalid record: Expected `str`, got `null` - at `\$.output`"):
        read(path)
    got, reader = read(path, OnBadRecord.SKIP)
    assert got == as_tuples(ROWS) and (reader.records_read, reader.bad_records) == (8, 1)


@pytest.mark.parametrize("policy", list(OnBadRecord))
def test_a_table_without_the_alpaca_columns_is_refused_whole_under_either_policy(tmp_path, policy):
    """Every row went to the quarantine under skip, and a build succeeded without them."""
    path = write_parquet(tmp_path / "train.parquet", [{"prompt": r["instruction"], "response": r["output"]} for r in ROWS])
    with pytest.raises(OasstDataError) as raised:
        read(path, policy)
    assert not isinstance(raised.value, BadRecordError)
    assert "no column `instruction` or `output`; its columns are prompt, response" in str(raised.value)


def test_only_the_alpaca_columns_are_read_and_the_others_named(tmp_path, caplog):
    path = write_parquet(tmp_path / "train.parquet", [r | {"source": "x", "id": i} for i, r in enumerate(ROWS)])
    with caplog.at_level("WARNING", logger="oasst_data"):
        assert read(path)[0] == as_tuples(ROWS)
    assert "fields the Alpaca format does not use were ignored: id (7 records), source (7 records)" in caplog.text


def test_a_missing_input_column_counts_as_empty(tmp_path):
    path = write_parquet(tmp_path / "train.parquet", [{"instruction": "a", "output": "b"}])
    assert read(path)[0] == [("a", None, "b")]


# --- folders --------------------------------------------------------------------------------------


def test_a_parquet_folder_is_read_without_the_hugging_face_cache(tmp_path, hf_home):
    """Every Parquet folder was copied into HF_HOME as Arrow (and failed with a read-only cache)."""
    home, calls = hf_home
    folder = tmp_path / "pq"
    write_parquet(folder / "data" / "train-00000-of-00002.parquet", ROWS[:4])
    write_parquet(folder / "data" / "train-00001-of-00002.parquet", ROWS[4:] + [{"instruction": "x", "input": "", "output": None}])
    write_parquet(folder / "data" / "test-00000-of-00001.parquet", ROWS[:1])
    got, reader = read(folder, OnBadRecord.SKIP)
    assert got == as_tuples(ROWS) and calls == [] and not home.exists()
    with pytest.raises(BadRecordError, match=r"train-00001-of-00002.parquet: row 3 \(row 7 of split 'train'\): invalid record"):
        read(folder)


def test_a_readme_configs_list_decides_the_files_as_datasets_does(tmp_path, hf_home):
    """The JSON-folder path read every file; `load_dataset` reads the README's data_files only."""
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "cleaned.json").write_text(json.dumps(ROWS[:2]))
    (folder / "raw_uncleaned.json").write_text(json.dumps(ROWS))
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: cleaned.json\n---\n# x\n")
    assert read(folder)[0] == as_tuples(ROWS[:2])
    expected = datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "c"))
    assert len(expected) == 2


def test_several_configs_are_listed(tmp_path, hf_home):
    folder = tmp_path / "multi"
    write_parquet(folder / "en" / "train-00000-of-00001.parquet", ROWS)
    write_parquet(folder / "small" / "train-00000-of-00001.parquet", ROWS[:2])
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: en\n  data_files:\n  - split: train\n    path: en/train-*\n"
        "- config_name: small\n  data_files:\n  - split: train\n    path: small/train-*\n---\n"
    )
    with pytest.raises(OasstDataError, match=r"multi: the dataset has several configs \(en, small\) and --alpaca reads one"):
        read(folder)
    assert read(folder / "small")[0] == as_tuples(ROWS[:2])  # one config's folder reads


@pytest.mark.parametrize("empty", ["test", "train"])
def test_an_empty_split_of_a_saved_folder_is_no_error(tmp_path, empty, caplog):
    """datasets writes no Arrow file for an empty split, and load_from_disk then failed on it."""
    full = datasets.Dataset.from_list(ROWS)
    folder = tmp_path / "saved"
    datasets.DatasetDict({"train": full if empty == "test" else full.select([]), "test": full.select([]) if empty == "test" else full}).save_to_disk(str(folder))
    with caplog.at_level("WARNING", logger="oasst_data"):
        got, _ = read(folder)
    assert got == (as_tuples(ROWS) if empty == "test" else [])
    assert ("saved: holds no record" in caplog.text) == (empty == "train")


def test_a_saved_folder_of_a_selection_reads_the_selected_rows(tmp_path):
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS).shuffle(seed=1).select(range(5)).save_to_disk(str(folder))
    expected = [tuple(row[k] for k in ("instruction", "input", "output")) for row in datasets.load_from_disk(str(folder))]
    assert read(folder)[0] == expected and len(expected) == 5


def test_a_read_only_hugging_face_cache_and_data_folder_are_fine(tmp_path, hf_home):
    home, _ = hf_home
    (home / "datasets").mkdir(parents=True)
    folder = tmp_path / "pq"
    write_parquet(folder / "data" / "train-00000-of-00001.parquet", ROWS)
    for path in (home / "datasets", folder / "data", folder):
        path.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert read(folder)[0] == as_tuples(ROWS)
        assert list((home / "datasets").iterdir()) == []
    finally:
        for path in (home / "datasets", folder / "data", folder):
            path.chmod(stat.S_IRWXU)


# --- names that are no local path -------------------------------------------------------------------


@pytest.mark.parametrize("source", ["./nothere", "../x", "data/alpaca/train.parquet", "a/b/c", "missing.json", "~/alpaca"])
def test_a_missing_local_path_is_not_taken_for_a_hub_name(tmp_path, monkeypatch, hf_home, source):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OasstDataError, match=rf"^{source}: no such file or folder$"):
        read(source)
    assert hf_home[1] == []


def _hub_snapshot(home, repo: str, revision: str, rows) -> None:
    """The layout `hf download` / `snapshot_download` leaves: blobs, snapshot links, refs/main."""
    cache = home / "hub" / f"datasets--{repo.replace('/', '--')}"
    (cache / "blobs").mkdir(parents=True)
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text(revision)
    snapshot = cache / "snapshots" / revision / "data"
    snapshot.mkdir(parents=True)
    blob = write_parquet(cache / "blobs" / "tmp", rows)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    blob.rename(cache / "blobs" / digest)
    os.symlink(f"../../../blobs/{digest}", snapshot / "train-00000-of-00001.parquet")


def test_a_hub_dataset_in_the_local_hub_cache_is_read_offline_by_its_files(tmp_path, monkeypatch, hf_home):
    from huggingface_hub import constants

    home, calls = hf_home
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    revision = "dce01c9b08f87459cf36a430d809084718273017"
    _hub_snapshot(home, "someone/alpaca-like", revision, ROWS)
    got, reader = read("someone/alpaca-like")
    assert got == as_tuples(ROWS) and calls == []
    described = reader.resolved.describe(lambda path: "sha")
    assert described == {
        "name": "someone/alpaca-like", "kind": "alpaca-dataset", "split": "train", "revision": revision,
        "files": [{"name": "data/train-00000-of-00001.parquet", "size": described["files"][0]["size"], "sha256": "sha"}],
    }


# --- the manifest ----------------------------------------------------------------------------------


def test_a_dataset_input_is_fingerprinted_by_its_data_files(tmp_path):
    """Two different folders of one name gave one manifest entry: {'name', 'kind'} and nothing more."""
    from oasst_data.shards.build import BuildConfig, build_shards
    from tests.conftest import FIXTURES

    manifests = []
    for count in (7, 6):
        folder = tmp_path / f"v{count}" / "saved"
        datasets.Dataset.from_list(ROWS[:count]).save_to_disk(str(folder))
        config = BuildConfig(alpaca=[str(folder)], tokenizer=str(FIXTURES / "tokenizer"), threads=ThreadConfig(val_split=0.0))
        manifests.append(build_shards(config, tmp_path / f"out{count}").manifest)
    first, second = (m["inputs"][0] for m in manifests)
    assert first["name"] == second["name"] == "saved" and first["kind"] == "alpaca-dataset" and first["split"] == "train"
    assert [f["name"] for f in first["files"]] == ["data-00000-of-00001.arrow"]
    assert first["files"][0]["sha256"] != second["files"][0]["sha256"]
    folder = tmp_path / "v7" / "saved"
    assert first["files"][0]["sha256"] == hashlib.sha256((folder / "data-00000-of-00001.arrow").read_bytes()).hexdigest()


def test_the_same_records_as_json_and_as_parquet_build_the_same_shards(tmp_path):
    from oasst_data.shards.build import BuildConfig, build_shards
    from tests.conftest import FIXTURES

    json_file = tmp_path / "a" / "alpaca.json"
    json_file.parent.mkdir()
    json_file.write_text(json.dumps(ROWS))
    parquet = write_parquet(tmp_path / "b" / "alpaca.parquet", ROWS)
    outs = []
    for source in (json_file, parquet):
        config = BuildConfig(alpaca=[str(source)], tokenizer=str(FIXTURES / "tokenizer"))
        outs.append(tmp_path / f"out-{source.suffix[1:]}")
        build_shards(config, outs[-1])
    shards = [sorted((p.relative_to(out), p.read_bytes()) for p in (out / "data").rglob("*.parquet")) for out in outs]
    assert shards[0] == shards[1] and shards[0]


def test_stats_names_a_dataset_input_as_the_build_does(tmp_path):
    from oasst_data.stats.export import export_stats

    folder = tmp_path / "pq"
    path = write_parquet(folder / "data" / "train-00000-of-00001.parquet", ROWS)
    report = export_stats(alpaca=[str(folder)])
    assert report["inputs"] == [{"name": "pq", "kind": "alpaca-dataset", "bytes": path.stat().st_size}]


def test_resolution_is_by_files_in_reading_order(tmp_path):
    folder = tmp_path / "pq"
    for index in (1, 0, 2):
        write_parquet(folder / "data" / f"train-0000{index}-of-00003.parquet", ROWS[index : index + 1])
    resolved = resolve_alpaca_source(str(folder))
    assert [f.path.name for f in resolved.files] == [f"train-0000{i}-of-00003.parquet" for i in range(3)]
    assert {f.format for f in resolved.files} == {DataFormat.PARQUET} and resolved.split == "train"


def test_a_csv_folder_goes_through_datasets_and_its_cache_files_are_named_without_a_path(tmp_path, hf_home):
    """The files `datasets` prepared live in its cache: the manifest must not name the machine's path."""
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "train.csv").write_text("instruction,input,output\nq,,a\nq2,x,a2\n")
    got, reader = read(folder)
    assert got == [("q", None, "a"), ("q2", "x", "a2")] and hf_home[1] == [str(folder)]
    described = reader.resolved.describe(lambda path: "sha")
    assert described["name"] == "csv" and described["split"] == "train"
    assert [f["name"] for f in described["files"]] and all("/" not in f["name"] for f in described["files"])


def test_the_alpaca_benchmark_runs_and_checks_both_readers_agree():
    """benchmarks/bench_alpaca.py at a small size (its figures are in benchmarks/README.md)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run(
        [sys.executable, "benchmarks/bench_alpaca.py", "--rows", "4000", "--repeat", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "| 4,000 |" in done.stderr


# --- from a review of the above ---------------------------------------------------------------------


@pytest.mark.parametrize("spelling", [".", "./", "sub/.."])
def test_the_current_folder_may_be_given_as_dot(tmp_path, monkeypatch, spelling):
    """`--alpaca .` worked before the rewrite; `datasets` refuses "." as a dataset name."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "train.json").write_text(json.dumps(ROWS))
    monkeypatch.chdir(tmp_path)
    got, reader = read(spelling)
    assert got == as_tuples(ROWS)
    assert reader.resolved.describe(lambda path: "sha")["name"] == tmp_path.name


def test_reading_options_in_a_readme_config_go_through_datasets(tmp_path, hf_home):
    """`field: data` (records inside an object) was ignored: every record a bad one."""
    folder = tmp_path / "fielded"
    folder.mkdir()
    (folder / "data.json").write_text(json.dumps({"version": 1, "data": ROWS}))
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data.json\n  field: data\n---\n"
    )
    got, _ = read(folder)
    assert got == as_tuples(ROWS) and hf_home[1] == [os.path.abspath(folder)]


def test_a_cached_hub_snapshot_without_its_data_files_falls_back_to_datasets(tmp_path, monkeypatch, hf_home):
    from huggingface_hub import constants

    home, calls = hf_home
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    revision = "0" * 40
    _hub_snapshot(home, "someone/pruned", revision, ROWS)
    for link in (home / "hub" / "datasets--someone--pruned" / "snapshots" / revision / "data").iterdir():
        link.unlink()
    with pytest.raises(OasstDataError) as raised:
        read("someone/pruned")
    assert "is a directory" not in str(raised.value) and "offline, and it is neither" in str(raised.value)
    assert "cannot load Alpaca dataset 'someone/pruned'" in str(raised.value)


def test_a_folder_given_through_a_symlink_names_its_files_within_it(tmp_path):
    real = tmp_path / "real"
    write_parquet(real / "data" / "train-00000-of-00001.parquet", ROWS)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    _, reader = read(link)
    described = reader.resolved.describe(lambda path: "sha")
    assert described["name"] == "link" and [f["name"] for f in described["files"]] == ["data/train-00000-of-00001.parquet"]
