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
