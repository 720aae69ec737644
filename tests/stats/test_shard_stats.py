"""Shard statistics of a real build of the fixtures, and their agreement with the export's.

The build is made with the CLI (`oasst-data build fixtures/oasst/trees.jsonl --tokenizer
fixtures/tokenizer --out DIR`), as a user would.
"""

from __future__ import annotations

import collections
import itertools
import json
import random

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oasst_data.config import ThreadConfig
from oasst_data.errors import OasstDataError
from oasst_data.shards.buckets import expected_padding_waste
from oasst_data.shards.hashing import sha256_file
from oasst_data.stats import collect_stats, export_stats, shard_stats
from oasst_data.stats.padding import bucketed_waste, expected_waste

from .helpers import SCHEMA, TOKENIZER, TREES, build_with_cli


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    return build_with_cli(tmp_path_factory.mktemp("stats-build") / "shards")


@pytest.fixture(scope="module")
def export_report() -> dict:
    return export_stats([TREES], config=ThreadConfig(), tokenizer=TOKENIZER)


@pytest.fixture(scope="module")
def shard_report(build) -> dict:
    return shard_stats(build)


def manifest(build) -> dict:
    return json.loads((build / "manifest.json").read_text(encoding="utf-8"))


def row_lengths(build) -> list[tuple[str, int, int]]:
    """(split, bucket, length) of every row, read directly with pyarrow."""
    rows = []
    for shard in manifest(build)["shards"]:
        table = pq.read_table(build / shard["path"], columns=["split", "bucket", "length"])
        rows += list(zip(*(table.column(c).to_pylist() for c in ("split", "bucket", "length"))))
    return rows


def test_rows_and_threads_agree_with_the_export(export_report, shard_report):
    e = export_report["export"]
    s = shard_report["shards"]
    # 12 threads by hand (tests/test_threads_differential.py); none is truncated at 2,048 tokens.
    assert e["totals"]["threads"] == 12 == s["totals"]["rows"]
    assert e["threads"]["by_split"] == {split["split"]: split["rows"] for split in s["splits"]}
    assert e["threads"]["over_max_length"] == 0 and s["overflow"]["rows_truncated"] == 0


def test_tokens_agree_with_the_export(export_report, shard_report):
    t = export_report["export"]["threads"]
    s = shard_report["shards"]
    assert t["tokens_total"] == s["totals"]["tokens"]
    assert t["trainable_tokens_total"] == s["totals"]["trainable_tokens"]
    assert t["tokens_by_split"] == {split["split"]: split["tokens"] for split in s["splits"]}
    # Same bins on both sides: the length histograms match bin by bin.
    assert t["length_histogram"] == s["length_histogram"]
    whole = {k: t["tokens"][k] for k in ("count", "sum", "min", "max")}
    rows = [r["length"] for r in s["splits"]]
    assert whole == {"count": sum(r["count"] for r in rows), "sum": sum(r["sum"] for r in rows),
                     "min": min(r["min"] for r in rows), "max": max(r["max"] for r in rows)}


def test_figures_match_the_manifest_and_the_parquet_rows(build, shard_report):
    s = shard_report["shards"]
    m = manifest(build)
    assert s["totals"]["matches_manifest"] is True
    for split in s["splits"]:
        assert {k: split[k] for k in ("rows", "tokens", "trainable_tokens")} == {k: m["totals"][split["split"]][k] for k in ("rows", "tokens", "trainable_tokens")}
        assert split["shards"] == m["totals"][split["split"]]["shards"]
    rows = row_lengths(build)
    assert s["totals"]["rows"] == len(rows) == 12
    assert s["totals"]["tokens"] == sum(length for _, _, length in rows)
    assert shard_report["tokenizer"]["fingerprint"] == m["tokenizer"]["fingerprint"]
    assert shard_report["config"]["lang"] == "en"
    assert s["build"]["build_config"]["max_length"] == 2048
    # The funnel the build recorded: the same 15 candidates and drops as the thread extractor.
    assert s["funnel"]["thread_drops"] == {"deleted": 1, "synthetic": 2}
    assert s["sources"][0]["source"] == "oasst" and s["languages"][0]["lang"] == "en"


def test_padding_per_bucket_matches_the_manifest(build, shard_report):
    """The manifest computes expected waste over both splits: so do we, from the row lengths."""
    rows = row_lengths(build)
    for entry in manifest(build)["padding"]["per_bucket"]:
        histogram: dict[int, int] = {}
        for _, bucket, length in rows:
            if bucket == entry["index"]:
                histogram[length] = histogram.get(length, 0) + 1
        for size, waste in entry["expected_waste"].items():
            assert expected_waste(histogram, int(size)) == pytest.approx(waste, abs=1e-6)
    # And per split, as reported: batch size 1 never pads; random batching is never better than bucketed.
    for row in shard_report["shards"]["padding"]:
        assert row["random"] >= row["bucketed"] - 1e-9
        if row["batch_size"] == 1:
            assert row["random"] == 0 and row["bucketed"] == 0


def test_truncation_in_a_build_is_what_the_export_predicts(tmp_path):
    """Threads over --max-length in the export = rows truncated (or left with nothing to train)."""
    built = shard_stats(build_with_cli(tmp_path / "short", "--max-length", "24"))
    predicted = export_stats([TREES], tokenizer=TOKENIZER, max_length=24)["export"]["threads"]["over_max_length"]
    o = built["shards"]["overflow"]
    assert predicted > 0
    assert o["rows_truncated"] + o["rows_dropped_no_trainable_tokens"] == predicted
    assert o["truncated_share"] == pytest.approx(o["rows_truncated"] / o["rows_written"], abs=1e-6)
    assert built["shards"]["splits"][0]["length"]["max"] <= 24
    dropped = shard_stats(build_with_cli(tmp_path / "dropped", "--max-length", "24", "--overflow", "drop"))
    d = dropped["shards"]["overflow"]
    assert d["rows_dropped_overflow"] == predicted
    assert d["dropped_share"] == pytest.approx(predicted / 12, abs=1e-6)
    assert dropped["shards"]["totals"]["rows"] == 12 - predicted


def test_expected_waste_by_hand():
    # Lengths {2, 4} in one batch of 2: always padded to 4; waste 1 - 6/8.
    assert expected_waste({2: 1, 4: 1}, 2) == pytest.approx(1 / 4)
    # {1, 1, 3}, batches of 2 then 1: the pair holds the 3 with p 2/3 (pads to 6) or not (2);
    # the single row never pads. E[padded] = 2/3 * (6 + 1) + 1/3 * (2 + 3) = 19/3; waste 1 - 5/(19/3).
    assert expected_waste({1: 2, 3: 1}, 2) == pytest.approx(1 - 15 / 19)
    assert expected_waste({2: 1, 4: 1}, 1) == 0.0
    assert expected_waste({7: 5}, 8) == 0.0
    assert expected_waste({}, 4) == 0.0
    # Two buckets of equal lengths waste nothing bucketed, against 1/4 mixed.
    assert bucketed_waste([{2: 1}, {4: 1}], 2) == 0.0


def test_a_bucket_no_bigger_than_a_batch_always_pads_to_its_longest_row():
    # One batch holds all 8 rows, so it pads to 50 however they are shuffled. Rows drawn with
    # replacement (the model used before) miss the 50 in 1 - (7/8)^8 = 66% of batches: 24% instead of 58%.
    histogram = {10: 7, 50: 1}
    assert expected_waste(histogram, 8) == pytest.approx(1 - 120 / 400)
    assert expected_waste(histogram, 16) == pytest.approx(1 - 120 / 400)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.integers(1, 7))
def test_expected_waste_is_the_mean_over_every_shuffle(lengths, batch_size):
    """The trainer's sampler shuffles a bucket and cuts it into batches: average all shuffles."""
    real = padded = 0
    for order in itertools.permutations(lengths):
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            real += sum(batch)
            padded += len(batch) * max(batch)
    histogram = dict(collections.Counter(lengths))
    assert expected_waste(histogram, batch_size) == pytest.approx(1 - real / padded, abs=1e-9)
    assert expected_padding_waste(lengths, batch_size) == pytest.approx(1 - real / padded, abs=1e-9)


def test_expected_waste_agrees_with_the_samplers_batches():
    from oasst_data.train.sampler import BucketBatchSampler, FixedRows

    rng = random.Random(5)
    lengths = np.array([rng.randint(1, 300) for _ in range(402)])
    histogram = dict(collections.Counter(lengths.tolist()))
    sampler = BucketBatchSampler(lengths, np.zeros(len(lengths), np.int64), FixedRows(4), seed=3)
    real = padded = 0
    for epoch in range(400):
        for batch in sampler.epoch_plan(epoch):
            rows = lengths[batch]
            real += int(rows.sum())
            padded += len(rows) * int(rows.max())
    assert expected_waste(histogram, 4) == pytest.approx(1 - real / padded, abs=0.003)


def test_a_build_directory_is_detected_and_checked(build, tmp_path):
    assert collect_stats([build])["kind"] == "shards"
    with pytest.raises(OasstDataError, match="build"):
        collect_stats([build, TREES])
    with pytest.raises(OasstDataError, match="manifest.json"):
        collect_stats([tmp_path])
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    (incomplete / "manifest.json").write_text((build / "manifest.json").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(OasstDataError, match="missing"):
        shard_stats(incomplete)


def test_a_shard_the_manifest_does_not_list_is_warned_about(build, tmp_path, caplog):
    """Found by an audit: stats said "totals match manifest: yes" and nothing else, while a glob
    over data/ (polars, DuckDB) reads the stray shard."""
    import logging
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(build, copy)
    stray = next((copy / "data" / "train").glob("*.parquet"))
    shutil.copy(stray, copy / "data" / "train" / "b99999-00000.parquet")
    with caplog.at_level(logging.WARNING, logger="oasst_data"):
        report = shard_stats(copy)
    assert report["shards"]["totals"]["matches_manifest"]
    assert "shard(s) the manifest does not list: data/train/b99999-00000.parquet" in caplog.text


def test_an_unreadable_shard_is_named(build, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(build, broken)
    shard = broken / manifest(build)["shards"][-1]["path"]
    data = bytearray(shard.read_bytes())
    data[-12:-8] = b"\xff\xff\xff\x7f"  # the footer's metadata length: no reader can open it
    shard.write_bytes(bytes(data))
    with pytest.raises(OasstDataError, match=rf"^{broken}: the build does not match its manifest.json \(checksum differs: {shard.relative_to(broken)}\)"):
        shard_stats(broken)
    # A manifest that vouches for the damaged bytes (edited by hand): the read itself names the shard.
    listed = manifest(broken)
    listed["shards"][-1]["sha256"] = sha256_file(shard)
    (broken / "manifest.json").write_text(json.dumps(listed), encoding="utf-8")
    with pytest.raises(OasstDataError, match=rf"^{shard}: cannot read shard: .*oasst-data verify"):
        shard_stats(broken)


def test_a_changed_byte_inside_a_shard_is_refused_not_reported(build, tmp_path):
    """Parquet can read a flipped byte inside a value back without any error; stats would then
    report figures of data the build never wrote. The manifest's sha256 catches it first."""
    import shutil

    import polars as pl

    changed = tmp_path / "changed"
    shutil.copytree(build, changed)
    entry = manifest(build)["shards"][0]
    shard = changed / entry["path"]
    original = shard.read_bytes()
    want = pl.read_parquet(shard)
    for position in range(len(original) // 41, len(original), len(original) // 41):  # 40 single-bit flips
        data = bytearray(original)
        data[position] ^= 0x01
        shard.write_bytes(bytes(data))
        try:
            got = pl.read_parquet(shard)
        except (Exception, pl.exceptions.PanicException):  # a loud failure (even a panic) is not the case sought
            continue
        if not got.equals(want):
            break  # read back without an error, with different values
    else:
        pytest.fail("no single-bit flip read back silently")
    with pytest.raises(OasstDataError, match=rf"checksum differs: {entry['path']}\); rebuild, or run `oasst-data verify`"):
        shard_stats(changed)
    assert shard_stats(build)["shards"]["totals"]["rows"] > 0


def test_buckets_built_for_a_token_budget_report_its_padding(tmp_path):
    import jsonschema

    from oasst_data.shards.buckets import rows_per_token_budget
    from oasst_data.stats import render_markdown

    built = build_with_cli(tmp_path / "budget", "--bucket-batch-tokens", "256", "--val-split", "0.3")
    report = shard_stats(built)
    rows = row_lengths(built)
    got = {row["split"]: row for row in report["shards"]["token_budget_padding"]}
    assert set(got) == {"train", "validation"}
    for split, row in got.items():
        assert row["batch_tokens"] == 256
        real = padded = 0.0
        for bucket in {b for s, b, _ in rows if s == split}:
            lengths = [n for s, b, n in rows if s == split and b == bucket]
            waste = expected_padding_waste(lengths, rows_per_token_budget(256, max(lengths)))
            real += sum(lengths)
            padded += sum(lengths) / (1 - waste)
        assert row["bucketed"] == pytest.approx(1 - real / padded, abs=1e-6)
    jsonschema.Draft202012Validator(SCHEMA).validate(report)
    assert "256 tokens" in render_markdown(report)


def test_without_a_budget_there_is_no_token_budget_padding(shard_report):
    assert "token_budget_padding" not in shard_report["shards"]


def test_a_build_or_temp_folder_whose_path_holds_glob_characters(build, tmp_path, monkeypatch):
    """polars took the shard paths as glob patterns: stats on 'out/[1]' failed with 'cannot read
    shard: invalid glob pattern' (and a build in 'out/run[1]' matched no file at all)."""
    import shutil
    import tempfile

    expected = shard_report_of(build)
    for name in ("[/z]", "run[1]", "a*b"):
        copy = tmp_path / name
        shutil.copytree(build, copy)
        assert shard_report_of(copy) == expected
    # The export's rows spill to a temp folder, which may hold such characters too.
    odd_tmp = tmp_path / "tmp[1]"
    odd_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(odd_tmp))
    assert export_stats([TREES])["export"]["totals"]["trees"] == 12


def shard_report_of(folder) -> dict:
    report = shard_stats(folder)
    return {key: value for key, value in report["shards"].items() if key != "build"}


def test_turns_per_row_are_the_exports_turns_per_thread(shard_report):
    turns = shard_report["shards"]["turns"]
    for split in shard_report["shards"]["splits"]:
        assert sum(row["rows"] for row in turns if row["split"] == split["split"]) == split["rows"]
    merged = collections.Counter()
    for row in turns:
        merged[row["turns"]] += row["rows"]
    exported = export_stats([TREES])["export"]["threads"]["turns"]
    assert sorted(merged.items()) == [(row["turns"], row["count"]) for row in exported] == [(2, 9), (4, 2), (8, 1)]


def test_token_sums_past_two_to_the_31_do_not_wrap():
    """Found by an audit: shards store `length` as int32 and polars sums int32 as int32, so a split
    of more than 2**31 tokens was reported as a negative count (and failed the schema)."""
    import polars as pl

    from oasst_data.stats.build import _counts

    rows = pl.LazyFrame({"length": pl.Series([2**30] * 3, dtype=pl.Int32), "trainable": pl.Series([1, 2, 3], dtype=pl.Int64)})
    summed = rows.select(*_counts()).collect().to_dicts()[0]
    assert summed == {"rows": 3, "tokens": 3 * 2**30, "trainable_tokens": 6}


def test_the_builds_own_padding_figure_is_shown(build, shard_report):
    """Found by an audit: the manifest's padding (what `build` prints, what the README quotes) was
    in the JSON only; the tables showed per-split figures, which differ from it."""
    from oasst_data.stats.sections import shard_sections

    manifest = json.loads((build / "manifest.json").read_text())["padding"]
    (padding,) = [section for section in shard_sections(shard_report) if section.key == "padding"]
    shown = {row[1]: row[2:] for row in padding.rows if row[0] == "all (manifest)"}
    assert shown == {
        str(size): [f"{manifest['bucketed'][str(size)]:.1%}", f"{manifest['random'][str(size)]:.1%}"] for size in manifest["batch_sizes"]
    }
