"""YAML build configs: the package's own layout and Open-Assistant's, with flag precedence."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from oasst_data.config_file import config_from_file, merge
from oasst_data.errors import ConfigError
from oasst_data.shards import load_manifest

from .conftest import FIXTURE_TOKENIZER, FIXTURES

OA_CONFIG = """
defaults:
  learning_rate: 1e-5
  max_length: 512
  per_device_train_batch_size: 2
  datasets: []
reference-data:
  datasets:
    - oasst_export:
        lang: "bg,ca,cs,da,de,en,es,fr,hr,hu,it,nl,pl,pt,ro,ru,sl,sr,sv,uk"
        input_file_path: trees.jsonl
        val_split: 0.05
    - alpaca
  sort_by_length: false
  use_custom_sampler: false
reference-pythia-12b:
  model_name: EleutherAI/pythia-12b-deduped
  max_length: 2048
"""


def test_open_assistant_layout_merges_sections_in_order(tmp_path):
    shutil.copy(FIXTURES / "oasst" / "trees.jsonl", tmp_path / "trees.jsonl")
    path = tmp_path / "config.yaml"
    path.write_text(OA_CONFIG)
    values = config_from_file(path, ["defaults", "reference-data"])
    assert values["inputs"] == [str(tmp_path / "trees.jsonl")]
    assert values["alpaca"] == ["yahma/alpaca-cleaned"]
    assert values["max_length"] == 512
    assert values["threads"]["lang"].startswith("bg,ca,cs") and values["threads"]["val_split"] == 0.05
    later = config_from_file(path, ["defaults", "reference-data", "reference-pythia-12b"])
    assert later["max_length"] == 2048 and later["tokenizer"] == "EleutherAI/pythia-12b-deduped"
    config = merge(values, {"max_length": 1024, "alpaca": []}, {"lang": "en"})
    assert config.max_length == 1024  # flag beats file
    assert config.threads.lang == "en"
    assert config.threads.val_split == 0.05  # file beats default
    assert config.alpaca == ["yahma/alpaca-cleaned"]  # an empty flag list does not erase the file's


def test_unknown_section_and_native_key_are_clear_errors(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(OA_CONFIG)
    with pytest.raises(ConfigError, match="no section 'nope'"):
        config_from_file(path, ["nope"])
    with pytest.raises(ConfigError, match="unknown key 'defaults'"):
        config_from_file(path)
    path.write_text("lang: [en\n")
    with pytest.raises(ConfigError, match="config.yaml:2: invalid YAML"):
        config_from_file(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_length: long\n", "max_length must be int, got 'long'"),
        ("overflow: sideways\n", "overflow must be one of truncate, drop, got 'sideways'"),
        ("threads:\n  top_k: two\n", "top_k must be int, got 'two'"),
        ("buckets: [128, x]\n", "buckets must be int, got 'x'"),
        ("lang_scope: every\n", "lang_scope must be one of root, all"),
        ("on_bad_record: ignore\n", "on_bad_record must be one of fail, skip"),
        ("val_split: {a: 1}\n", "val_split must be float"),
        ("tokenizer: [a, b]\n", "tokenizer must be str"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_file_and_the_setting(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{path}: {message}"):
        config_from_file(path)


def test_values_are_converted_to_their_types(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text("buckets: '128,256'\nmax_length: '512'\nmax_padding_waste: 5e-2\nlang_scope: all\nval_split: 0\n")
    config = merge(config_from_file(path), {}, {})
    assert config.buckets == [128, 256] and config.max_length == 512 and config.max_padding_waste == 0.05
    assert config.threads.lang_scope.value == "all" and config.threads.val_split == 0.0


def test_a_config_file_that_is_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("lang: fran\xe7ais\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text \(byte 10\)"):
        config_from_file(path)


def test_open_assistant_layout_values_are_typed_too(tmp_path):
    path = tmp_path / "oa.yaml"
    path.write_text("defaults:\n  max_length: lots\n  datasets: []\n")
    with pytest.raises(ConfigError, match="max_length must be int, got 'lots'"):
        config_from_file(path, ["defaults"])


def test_native_layout_through_the_cli(tmp_path):
    config = tmp_path / "build.yaml"
    config.write_text(
        f"inputs: [{FIXTURES / 'oasst' / 'trees.jsonl'}]\n"
        f"tokenizer: {FIXTURE_TOKENIZER}\n"
        "max_length: 64\n"
        "threads:\n  val_split: 0.0\n"
        "synthetic: include\n"
    )
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "oasst_data_cli", "build", "--config", str(config), "--max-length", "128", "--out", str(out)],
        check=True, capture_output=True,
    )
    manifest = load_manifest(out)
    assert manifest["config"]["max_length"] == 128
    assert manifest["config"]["threads"]["synthetic"] == "include"
    assert manifest["funnel"]["threads"] == 14  # 12 default threads + the two synthetic ones


def test_open_assistant_config_through_the_cli(tmp_path):
    shutil.copy(FIXTURES / "oasst" / "trees.jsonl", tmp_path / "trees.jsonl")
    config = tmp_path / "config.yaml"
    config.write_text(OA_CONFIG.replace("    - alpaca\n", ""))
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "oasst_data_cli", "build", "--config", str(config), "--configs", "defaults reference-data",
         "--tokenizer", str(FIXTURE_TOKENIZER), "--out", str(out)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    manifest = load_manifest(out)
    assert manifest["config"]["max_length"] == 512
    # de is in the reference list, so the German tree is kept: 12 + 1 threads.
    assert manifest["funnel"]["threads"] == 13
    assert Path(manifest["inputs"][0]["name"]).name == "trees.jsonl"
