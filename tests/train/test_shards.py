"""Opening a build for training: manifest, tokenizer fingerprint, checksums, row checks."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from oasst_data.errors import OasstDataError
from oasst_data.tokenizer import load_tokenizer
from oasst_data.train.shards import ShardsError, TokenizerMismatchError, open_build

from ..conftest import FIXTURE_TOKENIZER, REAL_TOKENIZER, needs_real_tokenizer


@pytest.fixture(scope="module")
def fixture_tokenizer():
    return load_tokenizer(str(FIXTURE_TOKENIZER))


def test_loads_both_splits_as_the_parquet_rows(fixture_shards, fixture_tokenizer):
    build = open_build(fixture_shards, fixture_tokenizer.fingerprint, vocab_size=len(fixture_tokenizer.tokenizer))
    assert build.validation is not None
    for split in (build.train, build.validation):
        files = [fixture_shards / s["path"] for s in build.manifest["shards"] if s["split"] == split.name]
        expected = [r for f in files for r in pq.read_table(f, columns=["input_ids", "loss_mask", "bucket"]).to_pylist()]
        assert len(split) == len(expected) == sum(s["rows"] for s in build.manifest["shards"] if s["split"] == split.name)
        for i, want in enumerate(expected):
            assert split[i]["input_ids"].tolist() == want["input_ids"]
            assert split[i]["loss_mask"].tolist() == want["loss_mask"]
            assert split.buckets[i] == want["bucket"]
        assert split.lengths.tolist() == [len(r["input_ids"]) for r in expected]


@needs_real_tokenizer
def test_refuses_shards_of_another_tokenizer(fixture_shards):
    other = load_tokenizer(str(REAL_TOKENIZER))
    with pytest.raises(TokenizerMismatchError, match="fingerprint") as caught:
        open_build(fixture_shards, other.fingerprint, str(REAL_TOKENIZER))
    message = str(caught.value)
    assert "--tokenizer" in message and str(REAL_TOKENIZER) in message and "\n" not in message


def test_refuses_a_wrong_fingerprint_even_without_the_real_tokenizer(fixture_shards):
    with pytest.raises(TokenizerMismatchError):
        open_build(fixture_shards, "0" * 64, "some-tokenizer")


def test_refuses_changed_shards_and_incomplete_builds(fixture_shards, fixture_tokenizer, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(fixture_shards, copy)
    shard = next((copy / "data" / "train").glob("*.parquet"))
    table = pq.read_table(shard)
    pq.write_table(table.slice(1), shard)  # one row fewer: the checksum changes
    with pytest.raises(ShardsError, match="checksum"):
        open_build(copy, fixture_tokenizer.fingerprint)
    with pytest.raises(ShardsError, match="rows"):
        open_build(copy, fixture_tokenizer.fingerprint, verify_checksums=False)
    (copy / "manifest.json").unlink()
    with pytest.raises(OasstDataError, match="manifest"):
        open_build(copy, fixture_tokenizer.fingerprint)


def test_refuses_the_same_vocabulary_with_another_eos(fixture_shards, fixture_tokenizer):
    """Found by an audit: a tokenizer sharing tokenizer.json (the fingerprint) but naming another
    token EOS trained, and the saved model would stop on a token no row ends with."""
    built_eos = fixture_tokenizer.eos_token_id
    open_build(fixture_shards, fixture_tokenizer.fingerprint, eos_token_id=built_eos)
    with pytest.raises(TokenizerMismatchError, match=rf"every turn of the shards ends with token {built_eos} .* has EOS {built_eos + 1}"):
        open_build(fixture_shards, fixture_tokenizer.fingerprint, "swapped", eos_token_id=built_eos + 1)


def test_a_build_without_its_tokenizer_folder_opens_with_the_right_tokenizer(fixture_shards, fixture_tokenizer, tmp_path, caplog):
    """Found by an audit: with tokenizer/ deleted, the right --tokenizer was refused ("missing:
    tokenizer/tokenizer.json"): only the shards' checksums matter when another copy is used. And an
    unlisted shard was ignored without a word."""
    copy = tmp_path / "copy"
    shutil.copytree(fixture_shards, copy)
    shutil.rmtree(copy / "tokenizer")
    shard = next((copy / "data" / "train").glob("*.parquet"))
    shutil.copy(shard, shard.with_name("b99999-00000.parquet"))
    with caplog.at_level("WARNING", logger="oasst_data"):
        build = open_build(copy, fixture_tokenizer.fingerprint, eos_token_id=fixture_tokenizer.eos_token_id)
    assert len(build.train) == sum(s["rows"] for s in build.manifest["shards"] if s["split"] == "train")
    assert "shards not in the manifest are not trained on: data/train/b99999-00000.parquet" in caplog.text


def test_a_shard_rewritten_with_other_column_types_is_one_error(fixture_shards, fixture_tokenizer, tmp_path):
    """Found by an audit: a raw ArrowInvalid traceback ("Schema at index 1 was different")."""
    import pyarrow as pa

    copy = tmp_path / "copy"
    shutil.copytree(fixture_shards, copy)
    shards = sorted((copy / "data" / "train").glob("*.parquet"))
    assert len(shards) >= 2
    table = pq.read_table(shards[-1])
    widened = table.set_column(table.schema.get_field_index("input_ids"), "input_ids", table.column("input_ids").cast(pa.list_(pa.int64())))
    pq.write_table(widened, shards[-1])
    with pytest.raises(ShardsError, match="the shards' columns differ in type"):
        open_build(copy, fixture_tokenizer.fingerprint, verify_checksums=False)


def test_refuses_rows_longer_than_max_length_and_ids_outside_the_vocab(fixture_shards, fixture_tokenizer):
    build = open_build(fixture_shards, fixture_tokenizer.fingerprint)
    longest = int(max(build.train.lengths.max(), build.validation.lengths.max()))
    open_build(fixture_shards, fixture_tokenizer.fingerprint, max_length=longest)
    with pytest.raises(ShardsError, match="--max-length"):
        open_build(fixture_shards, fixture_tokenizer.fingerprint, max_length=longest - 1)
    with pytest.raises(ShardsError, match="outside the tokenizer"):
        open_build(fixture_shards, fixture_tokenizer.fingerprint, vocab_size=int(np.max(build.train.ids)))


def test_rows_longer_than_the_builds_own_max_length_are_refused_by_default(fixture_shards, fixture_tokenizer, tmp_path):
    """A manifest re-signed after its max_length was lowered (its config hash recomputed): the rows
    no longer fit the build's own limit, which is the default."""
    import json

    from oasst_data.shards.hashing import sha256_json

    copy = tmp_path / "copy"
    shutil.copytree(fixture_shards, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["config"]["max_length"] = 16
    manifest["config_hash"] = sha256_json(manifest["config"] | {"tokenizer": manifest["tokenizer"]["fingerprint"]})
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ShardsError, match="more than max_length 16"):
        open_build(copy, fixture_tokenizer.fingerprint)
    assert open_build(copy, fixture_tokenizer.fingerprint, max_length=2048).train  # an explicit limit wins
