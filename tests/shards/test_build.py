"""oasst-data build: token ids, loss masks, buckets, manifest, determinism, atomic output."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from oasst_data.config import ThreadConfig
from oasst_data.errors import ConfigError, OasstDataError
from oasst_data.shards import BuildConfig, build_shards, load_manifest, load_shards, verify_shards
from oasst_data.tokenizer import load_tokenizer

from ..conftest import FIXTURE_TOKENIZER, FIXTURES, REAL_ALPACA, REAL_TOKENIZER, REAL_TREES, REPO, needs_real_data, needs_real_tokenizer

TREES = str(FIXTURES / "oasst" / "trees.jsonl")
ALPACA = str(FIXTURES / "alpaca" / "alpaca.json")
EOS = "<|endoftext|>"


def fixture_config(**overrides) -> BuildConfig:
    values = dict(inputs=[TREES], alpaca=[ALPACA], tokenizer=str(FIXTURE_TOKENIZER), threads=ThreadConfig(val_split=0.3))
    values.update(overrides)
    return BuildConfig(**values)


@pytest.fixture(scope="module")
def fixture_build(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("build") / "shards"
    build_shards(fixture_config(), out)
    return out


def all_rows(out: Path) -> list[dict]:
    manifest = load_manifest(out)
    rows = []
    for shard in manifest["shards"]:
        rows += pq.read_table(out / shard["path"]).to_pylist()
    return rows


def tree_hashes(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def check_rows_against_tokenizer(rows, tokenizer_path) -> tuple[int, int]:
    """Returns (rows equal to whole-string tokenization, rows with literal marker text)."""
    loaded = load_tokenizer(str(tokenizer_path))
    tokenizer = loaded.tokenizer
    special_ids = set(loaded.added_tokens.values()) | {loaded.eos_token_id}
    equal = marker_rows = 0
    for row in rows:
        whole = tokenizer(row["text"], add_special_tokens=False).input_ids
        ids = row["input_ids"]
        messages_have_markers = "<|" in row["text"].replace("<|prompter|>", "").replace("<|assistant|>", "").replace("<|system|>", "").replace(EOS, "")
        has_literal = any(
            marker in text
            for text in _message_texts(row["text"])
            for marker in ("<|endoftext|>", "<|prompter|>", "<|assistant|>", "<|system|>", "<|prefix_begin|>", "<|prefix_end|>")
        )
        if has_literal:
            marker_rows += 1
            # Literal markers inside a message stay plain text: more ids than the whole-string
            # tokenization, and exactly 2 special ids per turn (marker + closing EOS).
            assert ids != whole[: len(ids)]
            assert sum(1 for i in ids if i in special_ids) == 2 * row["num_turns"]
        else:
            assert ids == whole[: len(ids)], row["id"]
            if not row["truncated"]:
                assert ids == whole
            equal += 1
        del messages_have_markers
    return equal, marker_rows


def _message_texts(text: str) -> list[str]:
    """Split a serialized thread back into message texts (fixture texts never contain a marker at a boundary)."""
    parts = []
    for chunk in text.split("<|prompter|>")[1:]:
        for piece in chunk.split("<|assistant|>"):
            parts.append(piece[: -len(EOS)] if piece.endswith(EOS) else piece)
    return parts


def test_input_ids_match_whole_string_tokenization_except_literal_markers(fixture_build):
    rows = all_rows(fixture_build)
    equal, marker_rows = check_rows_against_tokenizer(rows, FIXTURE_TOKENIZER)
    assert marker_rows == 1  # k2: the prompter and assistant texts both contain marker strings
    assert equal == len(rows) - 1
    assert load_manifest(fixture_build)["funnel"]["marker_text_messages"] == 2


def test_loss_mask_decodes_to_assistant_texts(fixture_build):
    from oasst_data.threads import extract_threads

    tokenizer = load_tokenizer(str(FIXTURE_TOKENIZER)).tokenizer
    threads, _ = extract_threads([TREES], [ALPACA], ThreadConfig(val_split=0.3))
    assistant_texts = {t.id: [turn.text + EOS for turn in t.turns if turn.role.value == "assistant"] for t in threads}
    for row in all_rows(fixture_build):
        ids = np.array(row["input_ids"])
        mask = np.array(row["loss_mask"], dtype=bool)
        assert len(ids) == len(mask) == row["length"]
        # Contiguous trained spans are the assistant replies, each closed by EOS.
        spans = np.split(ids, np.flatnonzero(np.diff(mask.astype(int))) + 1)
        trained = [s for s, m in zip(spans, np.split(mask, np.flatnonzero(np.diff(mask.astype(int))) + 1)) if m[0]]
        decoded = [tokenizer.decode(s.tolist(), skip_special_tokens=False) for s in trained]
        assert decoded == assistant_texts[row["id"]]


def test_buckets_bound_every_row_and_rows_are_shuffled_deterministically(fixture_build):
    manifest = load_manifest(fixture_build)
    buckets = {b["index"]: b for b in manifest["buckets"]}
    assert buckets[0]["min_length"] == 1 and buckets[max(buckets)]["max_length"] == 2048
    for shard in manifest["shards"]:
        table = pq.read_table(fixture_build / shard["path"])
        lengths = table.column("length").to_numpy()
        assert (lengths >= shard["min_length"]).all() and (lengths <= shard["max_length"]).all()
        assert set(table.column("bucket").to_pylist()) == {shard["bucket"]}
        assert set(table.column("split").to_pylist()) == {shard["split"]}
        assert table.num_rows == shard["rows"]
        assert int(lengths.sum()) == shard["tokens"]


def test_manifest_checksums_and_verify_names_a_changed_shard(tmp_path):
    out = tmp_path / "shards"
    build_shards(fixture_config(), out)
    manifest = load_manifest(out)
    for shard in manifest["shards"]:
        assert hashlib.sha256((out / shard["path"]).read_bytes()).hexdigest() == shard["sha256"]
    assert verify_shards(out).ok
    victim = out / manifest["shards"][0]["path"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    report = verify_shards(out)
    assert report.mismatched == [manifest["shards"][0]["path"]]
    result = subprocess.run([sys.executable, "-m", "oasst_data_cli", "verify", str(out)], capture_output=True, text=True)
    assert result.returncode == 1
    assert manifest["shards"][0]["path"] in result.stderr


def test_verify_reports_an_unreadable_shard_and_checks_the_others(tmp_path, monkeypatch):
    """Found by an audit: the first unreadable shard (permissions, an I/O error) stopped `verify`
    with one error line, so a deleted or changed shard after it went unreported."""
    import errno

    from oasst_data.shards import verify

    out = tmp_path / "shards"
    build_shards(fixture_config(), out)
    paths = [shard["path"] for shard in load_manifest(out)["shards"]]
    assert len(paths) >= 3
    (out / paths[2]).unlink()
    real = verify.sha256_file

    def unreadable_first(path):
        if Path(path) == out / paths[0]:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(verify, "sha256_file", unreadable_first)
    report = verify_shards(out)
    assert report.unreadable == [(paths[0], "Permission denied")] and report.missing == [paths[2]] and not report.ok
    assert report.damage().startswith(f"missing: {paths[2]}; unreadable: {paths[0]} (Permission denied)")


def test_manifest_content(fixture_build):
    manifest = load_manifest(fixture_build)
    assert manifest["format_version"] == 1
    assert manifest["tokenizer"]["added_tokens"] == {
        "<|prompter|>": 588, "<|assistant|>": 589, "<|system|>": 590, "<|prefix_begin|>": 591, "<|prefix_end|>": 592,
    }
    assert set(manifest["tokenizer"]["files_sha256"]) >= {"tokenizer.json"}
    assert [i["name"] for i in manifest["inputs"]] == ["trees.jsonl", "alpaca.json"]
    assert manifest["inputs"][0]["sha256"] == hashlib.sha256(Path(TREES).read_bytes()).hexdigest()
    text = (fixture_build / "manifest.json").read_text()
    assert str(REPO) not in text and "/tmp" not in text  # no absolute paths
    assert manifest["totals"]["train"]["rows"] + manifest["totals"]["validation"]["rows"] == 16
    assert manifest["funnel"]["threads"] == 16
    assert len(manifest["config_hash"]) == 64
    import datasets
    import pyarrow
    import pyarrow.parquet as pq
    import tokenizers
    import transformers

    assert manifest["library_versions"] == {
        "datasets": datasets.__version__, "pyarrow": pyarrow.__version__,
        "tokenizers": tokenizers.__version__, "transformers": transformers.__version__,
    }
    # What the bytes depend on: each shard names the pyarrow that wrote it.
    shard = next((fixture_build / "data").rglob("*.parquet"))
    assert pyarrow.__version__ in pq.ParquetFile(shard).metadata.created_by


def test_the_build_depends_on_the_tokenizer_not_on_how_its_path_is_spelled(fixture_build, tmp_path, monkeypatch):
    """Found by an audit: a relative path went into the manifest and the card as typed, so the same
    build from another folder (`tokenizer` from fixtures/) gave other bytes. A local folder is
    recorded by its name, as inputs are; the trainer loads the copy saved in the build."""
    expected = load_manifest(fixture_build)["config_hash"]  # built with an absolute path
    assert load_manifest(fixture_build)["config"]["tokenizer"] == "tokenizer"
    for where, spelling in ((REPO, "fixtures/tokenizer"), (REPO, "./fixtures/tokenizer/"), (REPO / "fixtures", "tokenizer")):
        monkeypatch.chdir(where)
        out = tmp_path / f"out-{len(str(where))}-{len(spelling)}"
        manifest = build_shards(fixture_config(tokenizer=spelling), out).manifest
        assert manifest["config"]["tokenizer"] == manifest["tokenizer"]["name"] == "tokenizer"
        assert manifest["config_hash"] == expected
        assert tree_hashes(out) == tree_hashes(fixture_build)  # every byte: shards, manifest, card, tokenizer
    assert build_shards(fixture_config(max_length=64), tmp_path / "other").manifest["config_hash"] != expected


def test_the_order_of_the_inputs_changes_the_manifest_only(tmp_path):
    """Rows are placed by their own hashes, not by reading order: shards and card are the same; the
    manifest lists the inputs as given, so it (and config_hash) follows their order."""
    threads = str(FIXTURES / "oasst" / "threads.jsonl")
    one = build_shards(fixture_config(inputs=[TREES, threads]), tmp_path / "one")
    two = build_shards(fixture_config(inputs=[threads, TREES]), tmp_path / "two")
    first, second = tree_hashes(tmp_path / "one"), tree_hashes(tmp_path / "two")
    assert first.pop("manifest.json") != second.pop("manifest.json")
    assert first == second
    assert one.manifest["shards"] == two.manifest["shards"] and one.manifest["config_hash"] != two.manifest["config_hash"]


def _twice(manifest: dict, shard: dict) -> dict:
    """The same shard listed again, with the totals made to add up."""
    edited = json.loads(json.dumps(manifest))
    edited["shards"].append(dict(shard))
    totals = edited["totals"][shard["split"]]
    for key in ("rows", "tokens", "trainable_tokens"):
        totals[key] += shard[key]
    totals["shards"] += 1
    return edited


def _edited(manifest: dict, *keys, value) -> dict:
    edited = json.loads(json.dumps(manifest))
    inner = edited
    for key in keys[:-1]:
        inner = inner[key]
    inner[keys[-1]] = value
    return edited


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda m: [1, 2], r"not an oasst-data manifest \(expected a JSON object\)"),
        (lambda m: {k: v for k, v in m.items() if k != "shards"}, "missing required field `shards`"),
        (lambda m: m | {"shards": 5}, r"Expected `array`, got `int` - at `\$.shards`"),
        (lambda m: m | {"shards": [{k: v for k, v in m["shards"][0].items() if k != "sha256"}]}, r"`sha256` - at `\$.shards\[0\]`"),
        (lambda m: m | {"totals": {"train": {"rows": "many"}}}, r"Expected `int`, got `str` - at `\$.totals\[...\].rows`"),
        (lambda m: m | {"format_version": 99}, "format_version 99 is not supported"),
        # Well-formed but contradicting itself: an edit or a partial copy of the manifest.
        (lambda m: _edited(m, "totals", "train", "rows", value=99), "totals.train.rows is 99 but its shard entries add up to "),
        (lambda m: m | {"shards": m["shards"][1:]}, r"totals\.\w+\.shards is \d+ but its shard entries add up to "),
        (lambda m: _edited(m, "config", "max_length", value=16), "config does not hash to config_hash"),
        (lambda m: _edited(m, "shards", 0, "max_length", value=3), "does not match bucket"),
        (lambda m: _edited(m, "shards", 0, "path", value="../outside.parquet"), "is outside the build's data/ folder"),
        (lambda m: _twice(m, m["shards"][0]), r"is listed twice"),
    ],
    ids=["not-an-object", "no-shards", "shards-not-a-list", "entry-without-sha256", "bad-totals", "other-version",
         "edited-totals", "shard-left-out", "edited-config", "edited-bucket-bounds", "path-outside", "shard-twice"],
)
def test_a_damaged_manifest_is_one_clear_error_for_every_reader(fixture_build, tmp_path, damage, message):
    damaged = tmp_path / "damaged"
    shutil.copytree(fixture_build, damaged)
    manifest = json.loads((fixture_build / "manifest.json").read_text())
    (damaged / "manifest.json").write_text(json.dumps(damage(manifest)))
    for read in (load_manifest, verify_shards, load_shards):
        with pytest.raises(OasstDataError, match=message):
            read(damaged)


def test_load_dataset_reads_this_build_whatever_its_cache_holds(tmp_path):
    """Found by an audit: the card's config ("default", a glob) made datasets cache a build under
    its folder's name only: a build in another folder of the same name, or this folder rebuilt,
    came back from the cache (the other build's rows and token ids), and a shard the manifest does
    not list was read too."""
    import shutil

    import datasets

    cache = tmp_path / "hf-cache"
    first, second = tmp_path / "a" / "shards", tmp_path / "b" / "shards"
    build_shards(fixture_config(threads=ThreadConfig(val_split=0.3)), first)
    build_shards(fixture_config(threads=ThreadConfig(val_split=0.6, seed=7)), second)
    ids = {}
    for out in (first, second):
        loaded = datasets.load_dataset(str(out), cache_dir=str(cache))
        ids[out] = sorted(loaded["validation"]["id"])
        assert ids[out] == sorted(load_shards(out, split="validation")["id"])
        assert loaded["train"].num_rows == load_manifest(out)["totals"]["train"]["rows"]
    assert ids[first] != ids[second]
    build_shards(fixture_config(threads=ThreadConfig(val_split=0.6, seed=7)), first, overwrite=True)  # rebuilt in place
    assert sorted(datasets.load_dataset(str(first), cache_dir=str(cache))["validation"]["id"]) == ids[second]
    stray = next((second / "data" / "train").glob("*.parquet"))
    shutil.copy(stray, second / "data" / "train" / "b99999-00000.parquet")  # not in the manifest
    assert datasets.load_dataset(str(second), cache_dir=str(cache))["train"].num_rows == load_manifest(second)["totals"]["train"]["rows"]


def test_load_dataset_polars_and_duckdb_read_the_output(fixture_build):
    import datasets
    import duckdb
    import polars as pl

    loaded = datasets.load_dataset(str(fixture_build))
    manifest = load_manifest(fixture_build)
    assert set(loaded) == {"train", "validation"}
    assert loaded["train"].num_rows == manifest["totals"]["train"]["rows"]
    assert loaded["validation"].num_rows == manifest["totals"]["validation"]["rows"]
    train = load_shards(fixture_build, split="train")
    assert sorted(train["id"]) == sorted(loaded["train"]["id"])
    frame = pl.scan_parquet(str(fixture_build / "data" / "*" / "*.parquet")).select(pl.col("length").sum()).collect()
    assert frame.item() == manifest["totals"]["train"]["tokens"] + manifest["totals"]["validation"]["tokens"]
    count = duckdb.connect().execute(f"select count(*) from read_parquet('{fixture_build}/data/*/*.parquet')").fetchall()[0][0]
    assert count == 16


def test_rerun_is_byte_identical_whatever_workers_and_hash_seed(tmp_path, fixture_build):
    out = tmp_path / "again"
    env = dict(os.environ, PYTHONHASHSEED="12345")
    command = [
        sys.executable, "-m", "oasst_data_cli", "build", TREES, "--alpaca", ALPACA,
        "--tokenizer", str(FIXTURE_TOKENIZER), "--val-split", "0.3", "--workers", "1", "--out", str(out),
    ]
    subprocess.run(command, check=True, env=env, capture_output=True)
    assert tree_hashes(out) == tree_hashes(fixture_build)


def test_the_tokenizer_batch_size_changes_nothing_in_the_output(tmp_path, fixture_build):
    """It is not a setting of the shards: it stays out of the manifest, so the hash is the same too."""
    build_shards(fixture_config(tokenize_batch=1), tmp_path / "small-batches")
    assert tree_hashes(tmp_path / "small-batches") == tree_hashes(fixture_build)


def test_existing_output_is_refused_then_replaced_with_overwrite(tmp_path):
    out = tmp_path / "shards"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(OasstDataError, match="--overwrite"):
        build_shards(fixture_config(), out)
    assert (out / "keep.txt").read_text() == "user data"
    with pytest.raises(OasstDataError, match="not an oasst-data build"):  # --overwrite deletes earlier builds only
        build_shards(fixture_config(), out, overwrite=True)
    assert (out / "keep.txt").read_text() == "user data"
    (out / "keep.txt").unlink()
    build_shards(fixture_config(), out)  # an empty folder is fine
    (out / "extra.txt").write_text("left in a build")
    build_shards(fixture_config(), out, overwrite=True)
    assert not (out / "extra.txt").exists()
    assert (out / "manifest.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["shards"]  # no staging left behind


def test_interrupted_or_failed_build_leaves_nothing(tmp_path):
    out = tmp_path / "shards"

    def interrupt(progress):
        if progress.threads:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_shards(fixture_config(tokenize_batch=2), out, on_progress=interrupt)
    assert list(tmp_path.iterdir()) == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text(Path(TREES).read_text() + "{not json\n")
    with pytest.raises(OasstDataError, match="bad.jsonl:13"):
        build_shards(fixture_config(inputs=[str(bad)]), out)
    assert list(tmp_path.iterdir()) == [bad]


def _hold_staging_folder(target: Path) -> subprocess.Popen:
    """A process that opens a build's staging folder for `target`, then waits to be killed."""
    code = (
        "import sys, time\n"
        "from oasst_data.atomic import StagingFolder\n"
        "staging = StagingFolder(sys.argv[1]).create()\n"
        "(staging.path / 'part.arrow').write_bytes(b'half written')\n"
        "print(staging.path, flush=True)\n"
        "time.sleep(600)\n"
    )
    return subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)


def test_a_killed_builds_staging_folder_is_removed_by_the_next_build_a_running_ones_is_not(tmp_path, caplog):
    out = tmp_path / "shards"
    killed, running = _hold_staging_folder(out), _hold_staging_folder(out)
    try:
        killed_folder = Path(killed.stdout.readline().strip())
        running_folder = Path(running.stdout.readline().strip())
        killed.kill()  # SIGKILL: no cleanup code runs
        killed.wait(timeout=30)
        assert killed_folder.is_dir()
        with caplog.at_level("WARNING", logger="oasst_data"):
            build_shards(fixture_config(), out)
        assert not killed_folder.exists()
        assert f"removed {killed_folder}" in caplog.text
        assert (running_folder / "part.arrow").is_file()  # still locked by its build
        assert not list(out.glob("*.lock"))  # the lock never travels into the output
    finally:
        for process in (killed, running):
            process.kill()
            process.wait(timeout=30)
    build_shards(fixture_config(), out, overwrite=True)  # its process is gone now
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


def test_overflow_truncate_drop_and_no_trainable_rows(tmp_path):
    truncated = build_shards(fixture_config(max_length=12), tmp_path / "t").manifest
    rows = all_rows(tmp_path / "t")
    assert max(r["length"] for r in rows) <= 12
    assert truncated["funnel"]["rows_truncated"] == sum(r["truncated"] for r in rows) > 0
    # A row cut inside its first prompter turn has nothing to train on and is dropped.
    assert truncated["funnel"]["rows_dropped_no_trainable_tokens"] > 0
    assert all(sum(r["loss_mask"]) > 0 for r in rows)
    dropped = build_shards(fixture_config(max_length=12, overflow="drop"), tmp_path / "d").manifest
    assert dropped["funnel"]["rows_truncated"] == 0
    assert dropped["funnel"]["rows_dropped_overflow"] > 0
    assert dropped["funnel"]["rows_written"] + dropped["funnel"]["rows_dropped_overflow"] == 16


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"alpaca": [], "threads": ThreadConfig(lang="xx")}, "records read; dropped: tree lang 10, tree review_result 1"),
        ({"max_length": 8, "overflow": "drop"}, "dropped: overflow 16"),
        ({"inputs": [], "alpaca": [str(FIXTURES / "alpaca" / "alpaca.json")], "threads": ThreadConfig(val_split=0.99)}, "went to the validation split"),
    ],
    ids=["filters", "overflow", "all-validation"],
)
def test_a_build_without_training_rows_warns_with_what_removed_them(tmp_path, caplog, overrides, says):
    with caplog.at_level("WARNING", logger="oasst_data"):
        manifest = build_shards(fixture_config(**overrides), tmp_path / "empty").manifest
    assert manifest["totals"]["train"]["rows"] == 0
    (warning,) = [r.getMessage() for r in caplog.records if "no training rows" in r.getMessage()]
    assert says in warning, warning


def test_a_build_with_training_rows_does_not_warn(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="oasst_data"):
        build_shards(fixture_config(), tmp_path / "full")
    assert not [r for r in caplog.records if "no training rows" in r.getMessage()]


def test_explicit_buckets_and_shard_row_cap(tmp_path):
    manifest = build_shards(fixture_config(buckets=[16, 32], shard_rows=3), tmp_path / "b").manifest
    assert [(b["min_length"], b["max_length"]) for b in manifest["buckets"]] == [(1, 16), (17, 32), (33, 2048)]
    assert all(s["rows"] <= 3 for s in manifest["shards"])
    assert sum(s["rows"] for s in manifest["shards"]) == 16


def test_offline_hub_tokenizer_error_says_pass_a_path(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "oasst_data_cli", "build", TREES, "--out", str(tmp_path / "o")],
        capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert result.returncode == 1
    assert "--tokenizer PATH" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


@needs_real_data
@needs_real_tokenizer
def test_real_data_build(tmp_path):
    out = tmp_path / "real"
    config = BuildConfig(inputs=[str(REAL_TREES)], alpaca=[str(REAL_ALPACA)], tokenizer=str(REAL_TOKENIZER))
    manifest = build_shards(config, out).manifest
    assert manifest["tokenizer"]["added_tokens"]["<|prompter|>"] == 50277
    assert manifest["tokenizer"]["added_tokens"]["<|prefix_end|>"] == 50281
    totals = manifest["totals"]
    assert totals["train"]["rows"] + totals["validation"]["rows"] + manifest["funnel"]["rows_dropped_no_trainable_tokens"] == 538 + 999
    rows = all_rows(out)
    equal, marker_rows = check_rows_against_tokenizer(rows, REAL_TOKENIZER)
    assert equal + marker_rows == len(rows)
    # Automatic buckets: far less padding than random batching at batch 4.
    padding = manifest["padding"]
    assert padding["random"]["4"] > 0.4
    assert padding["bucketed"]["4"] < 0.07
    assert verify_shards(out).ok


def test_rows_match_the_shard_row_json_schema(fixture_build):
    import jsonschema

    schema = json.loads((REPO / "schemas" / "shard_row.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    rows = all_rows(fixture_build)
    for row in rows:
        validator.validate(row)
        assert row["length"] == len(row["input_ids"]) == len(row["loss_mask"])
    broken = dict(rows[0], loss_mask=[2] * rows[0]["length"])
    assert not validator.is_valid(broken)


def test_skip_mode_quarantines_inside_the_output_and_counts(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(Path(TREES).read_text() + "{not json\n")
    out = tmp_path / "shards"
    result = build_shards(fixture_config(inputs=[str(bad)], threads=ThreadConfig(val_split=0.3, on_bad_record="skip")), out)
    manifest = result.manifest
    assert manifest["funnel"]["quarantined"] == 1 and manifest["quarantine"] == "quarantine.jsonl"
    assert manifest["funnel"]["by_source"]["oasst"]["records_read"] == 13
    assert manifest["funnel"]["by_source"]["oasst"]["bad_records"] == 1
    entries = [json.loads(line) for line in (out / "quarantine.jsonl").read_text().splitlines()]
    assert [(Path(e["source"]).name, e["line"], e["raw"]) for e in entries] == [("bad.jsonl", 13, "{not json")]
    assert manifest["funnel"]["threads"] == 16  # everything good is still built
    # A --quarantine elsewhere is named relative to the build folder too: no machine path recorded.
    outside = tmp_path / "elsewhere" / "skipped.jsonl"
    config = fixture_config(inputs=[str(bad)], threads=ThreadConfig(val_split=0.3, on_bad_record="skip", quarantine=outside))
    assert build_shards(config, tmp_path / "other").manifest["quarantine"] == "../elsewhere/skipped.jsonl"


def test_a_quarantine_no_relative_path_reaches_is_recorded_whole(tmp_path, monkeypatch):
    """Windows: --quarantine on another drive than --out (relpath raises ValueError, after all the work)."""
    from oasst_data.shards import build as build_module

    def no_relative_path(path, start):
        raise ValueError("path is on mount 'D:', start on mount 'C:'")

    bad = tmp_path / "bad.jsonl"
    bad.write_text(Path(TREES).read_text() + "{not json\n")
    outside = tmp_path / "elsewhere" / "skipped.jsonl"
    monkeypatch.setattr(build_module.os.path, "relpath", no_relative_path)
    config = fixture_config(inputs=[str(bad)], threads=ThreadConfig(val_split=0.3, on_bad_record="skip", quarantine=outside))
    assert build_shards(config, tmp_path / "out").manifest["quarantine"] == str(outside)


@pytest.mark.parametrize("second_input_bad", [True, False], ids=["new-bad-records", "no-bad-records"])
def test_a_quarantine_outside_the_build_is_replaced_only_when_the_build_lands(tmp_path, second_input_bad):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(Path(TREES).read_text() + "{not json\n")
    other = tmp_path / "other.jsonl"
    other.write_text(Path(TREES).read_text() + ("[1, 2]\n" if second_input_bad else ""))
    quarantine, out = tmp_path / "skipped.jsonl", tmp_path / "shards"
    skip = ThreadConfig(val_split=0.3, on_bad_record="skip", quarantine=quarantine)
    build_shards(fixture_config(inputs=[str(bad)], threads=skip), out)
    first_quarantine, first_manifest = quarantine.read_bytes(), (out / "manifest.json").read_bytes()
    assert b"{not json" in first_quarantine

    def fail_while_writing_shards(progress):
        if progress.stage == "writing shards":
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        build_shards(fixture_config(inputs=[str(other)], threads=skip), out, overwrite=True, on_progress=fail_while_writing_shards)
    # The shards are the first build's, so the quarantine must still be the first build's too.
    assert (out / "manifest.json").read_bytes() == first_manifest
    assert quarantine.read_bytes() == first_quarantine
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["bad.jsonl", "other.jsonl", "skipped.jsonl", "shards"])

    result = build_shards(fixture_config(inputs=[str(other)], threads=skip), out, overwrite=True)
    if second_input_bad:
        assert b"[1, 2]" in quarantine.read_bytes() and result.quarantine_path == quarantine
    else:
        assert not quarantine.exists() and result.quarantine_path is None  # it told of a build now replaced


def test_buckets_tuned_for_a_token_budget_are_recorded(tmp_path):
    manifest = build_shards(fixture_config(bucket_batch_tokens=256), tmp_path / "t").manifest
    assert manifest["config"]["bucket_batch_tokens"] == 256
    budget = manifest["padding"]["token_budget"]
    assert budget["batch_tokens"] == 256 and 0 <= budget["bucketed"] < 1
    for entry in manifest["padding"]["per_bucket"]:
        if entry["rows"]:
            assert entry["token_budget"]["rows_per_batch"] >= 1
    with pytest.raises(ConfigError, match="bucket_batch_tokens"):
        fixture_config(bucket_batch_tokens=0)


def test_the_tokenizer_travels_with_the_shards(fixture_build, tmp_path):
    manifest = load_manifest(fixture_build)
    saved = manifest["tokenizer"]["saved"]
    folder = fixture_build / saved["folder"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(saved["files"]) and "tokenizer.json" in saved["files"]
    reloaded = load_tokenizer(str(folder))
    assert reloaded.fingerprint == manifest["tokenizer"]["fingerprint"]
    assert reloaded.added_tokens == manifest["tokenizer"]["added_tokens"]
    # Where the tokenizer was loaded from does not show in the saved files.
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(FIXTURE_TOKENIZER, elsewhere)
    moved = build_shards(fixture_config(tokenizer=str(elsewhere)), tmp_path / "moved").manifest
    assert moved["tokenizer"]["saved"] == saved
    # verify covers the saved files.
    copy = tmp_path / "copy"
    shutil.copytree(fixture_build, copy)
    (copy / saved["folder"] / "tokenizer_config.json").write_text("{}")
    assert verify_shards(copy).mismatched == [f"{saved['folder']}/tokenizer_config.json"]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(shard_size_mb=1e-9), "shard_size_mb must be a number of MiB"),
        (dict(shard_size_mb=float("inf")), "shard_size_mb must be a number of MiB"),
        (dict(shard_size_mb=float("nan")), "shard_size_mb must be a number of MiB"),
        (dict(shard_size_mb=1e308), "shard_size_mb must be a number of MiB from 0.001 to 1073741824"),  # was an OverflowError after tokenizing
        (dict(max_length=1 << 63), "max_length must be at most"),
        (dict(shard_rows=0), "shard_rows must be at least 1"),
        (dict(max_padding_waste=-1.0), r"max_padding_waste must be in \(0, 1\)"),
        (dict(max_padding_waste=float("nan")), r"max_padding_waste must be in \(0, 1\)"),
        (dict(buckets=",,"), "--buckets expects comma-separated integers"),
    ],
)
def test_out_of_range_settings_are_one_clear_error(change, message):
    # Each of these ended in a ZeroDivisionError, OverflowError or a silent no-op before.
    with pytest.raises(ConfigError, match=message):
        fixture_config(**change)


def test_shard_parts_respect_the_row_cap_whatever_the_read_order():
    from oasst_data.shards.buckets import Bucket
    from oasst_data.shards.writer import plan_parts

    rng = np.random.default_rng(7)
    rows = 1_003
    keys = rng.integers(0, 2**63, size=rows, dtype=np.uint64)
    is_validation = rng.random(rows) < 0.1
    bucket_of_row = rng.integers(0, 3, size=rows).astype(np.int32)
    row_bytes = rng.integers(10, 1_000, size=rows)
    buckets = [Bucket(0, 1, 10), Bucket(1, 11, 20), Bucket(2, 21, 30)]
    parts = plan_parts(is_validation, bucket_of_row, row_bytes, keys, buckets, 1 << 30, 50)
    for flag in (False, True):
        for bucket in range(3):
            sizes = np.bincount(parts[(is_validation == flag) & (bucket_of_row == bucket)])
            assert sizes.max() <= 50 and sizes.max() - sizes.min() <= 1
    order = rng.permutation(rows)
    shuffled = plan_parts(is_validation[order], bucket_of_row[order], row_bytes[order], keys[order], buckets, 1 << 30, 50)
    assert np.array_equal(shuffled, parts[order])  # a row's shard depends on its key, not on the read order


@pytest.mark.parametrize("tokenize_batch", [1024, 1])
def test_marker_text_messages_counts_each_message_once(tmp_path, tokenize_batch):
    """The count was of distinct texts per tokenizer batch: a message shared by threads in two
    batches counted twice."""
    config = fixture_config(tokenize_batch=tokenize_batch, threads=ThreadConfig(val_split=0.3, system_prompt="be kind"))
    result = build_shards(config, tmp_path / "out")
    assert result.manifest["funnel"]["marker_text_messages"] == 2


def test_any_special_token_text_in_a_message_is_counted_as_marker_text(tmp_path):
    """Found by an audit: Pythia's `<|padding|>` in a message stays plain text (its row's input_ids
    differ from tokenizer(text)) but was not counted, as only the markers and EOS were looked for."""
    message = dict(lang="en", review_count=3, review_result=True, deleted=False, synthetic=False)
    reply = dict(message, message_id="r", parent_id="q", text="Pad with <|padding|> here.", role="assistant", rank=0, replies=[])
    prompt = dict(message, message_id="q", text="How to pad?", role="prompter", replies=[reply])
    trees = tmp_path / "trees.jsonl"
    trees.write_text(json.dumps({"message_tree_id": "t-pad", "tree_state": "ready_for_export", "prompt": prompt}) + "\n")
    result = build_shards(fixture_config(inputs=[str(trees)], alpaca=[], threads=ThreadConfig(val_split=0.0)), tmp_path / "out")
    assert result.manifest["funnel"]["marker_text_messages"] == 1
    [row] = all_rows(tmp_path / "out")
    tokenizer = load_tokenizer(str(FIXTURE_TOKENIZER)).tokenizer
    assert row["input_ids"] != tokenizer(row["text"], add_special_tokens=False).input_ids  # what the count tells


@pytest.mark.parametrize("system", ["Be nice <|endoftext|>", "x <|assistant|> y", "pad <|padding|>"])
def test_a_system_prompt_holding_a_special_token_is_refused(tmp_path, system):
    """It was trained as plain text in every row, unlike the marker its writer meant, and not counted."""
    with pytest.raises(ConfigError, match=r"system_prompt holds <\|\w+\|>, a special token of the tokenizer"):
        build_shards(fixture_config(threads=ThreadConfig(val_split=0.3, system_prompt=system)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_marker_prompt_shared_by_two_threads_is_one_marker_text_message(tmp_path):
    """Two assistant replies make two threads with the same prompt: that prompt is one message."""
    message = dict(lang="en", review_count=3, review_result=True, deleted=False, synthetic=False)
    replies = [dict(message, message_id=f"r{rank}", text=f"Reply {rank}.", role="assistant", rank=rank, replies=[], parent_id="q") for rank in (0, 1)]
    prompt = dict(message, message_id="q", text=f"What does {EOS} mean?", role="prompter", replies=replies)
    trees = tmp_path / "trees.jsonl"
    trees.write_text(json.dumps({"message_tree_id": "t-shared", "tree_state": "ready_for_export", "prompt": prompt}) + "\n")
    result = build_shards(fixture_config(inputs=[str(trees)], alpaca=[], threads=ThreadConfig(val_split=0.0)), tmp_path / "out")
    funnel = result.manifest["funnel"]
    assert funnel["rows_written"] == 2  # two threads share the marker prompt
    assert funnel["marker_text_messages"] == 1


def test_equal_bucket_bounds_however_written_give_one_config_hash(tmp_path):
    """--buckets 256,128 and 128,256,256,4096 build the same buckets; they hashed differently."""
    from oasst_data.shards.build import BuildConfig, parse_buckets

    written = ["128,256", "256,128", "128,256,256", "128,256,4096"]
    configs = [BuildConfig(inputs=[], tokenizer="t", buckets=parse_buckets(text), max_length=2048) for text in written]
    assert {tuple(c.buckets) for c in configs} == {(128, 256, 2048)}
    assert len({json.dumps(c.to_manifest(), sort_keys=True) for c in configs}) == 1
    assert BuildConfig(inputs=[], tokenizer="t", buckets=[]).buckets is None  # as before: choose from the data
    for bad in ("-5,100", "0"):
        with pytest.raises(ConfigError, match="buckets must be positive token counts"):
            BuildConfig(inputs=[], tokenizer="t", buckets=parse_buckets(bad))



def test_a_build_without_datasets_installed_records_its_version_as_null(tmp_path, monkeypatch):
    """The GPU machine's image has no `datasets` (benchmarks/gpu_prepare.sh carries only what the
    build needs): asking for its version must not stop a build of files."""
    import importlib.metadata

    real = importlib.metadata.version

    def without_datasets(name):
        if name == "datasets":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", without_datasets)
    manifest = build_shards(fixture_config(), tmp_path / "shards").manifest
    assert manifest["library_versions"]["datasets"] is None and manifest["library_versions"]["pyarrow"]


def test_load_shards_refuses_shards_that_are_not_the_manifests(tmp_path):
    """Found by an audit: a shard of another build copied over a listed one gave its rows (another
    tokenizer's ids) without a word, and a missing shard raised datasets' FileNotFoundError."""
    import shutil

    ours, other = tmp_path / "ours", tmp_path / "other"
    build_shards(fixture_config(), ours)
    build_shards(fixture_config(threads=ThreadConfig(val_split=0.6, seed=3)), other)
    listed = load_manifest(ours)["shards"][0]["path"]
    shutil.copy(other / load_manifest(other)["shards"][0]["path"], ours / listed)
    with pytest.raises(OasstDataError, match=r"its sha256 differs from the manifest's"):
        load_shards(ours, split="train")
    with pytest.raises(OasstDataError, match=r"rows, the manifest lists"):
        load_shards(ours, split="train", verify=False)  # trusting the files: the row count still tells
    (ours / listed).unlink()
    with pytest.raises(OasstDataError, match=rf"{listed}: missing: the manifest lists it"):
        load_shards(ours, split="train", verify=False)


def test_verify_names_a_file_added_to_the_saved_tokenizer(fixture_build, tmp_path):
    """Found by an audit: a special_tokens_map.json dropped into tokenizer/ made AutoTokenizer load
    another EOS and pad, and `verify` said ok (only the listed files were hashed)."""
    import shutil

    from oasst_data.shards.verify import verify_shards

    copy = tmp_path / "copy"
    shutil.copytree(fixture_build, copy)
    (copy / "tokenizer" / "special_tokens_map.json").write_text('{"eos_token": "<|padding|>"}')
    report = verify_shards(copy)
    assert not report.ok and report.unlisted_tokenizer_files == ["tokenizer/special_tokens_map.json"]
    assert "not in the manifest: tokenizer/special_tokens_map.json" in report.damage()
