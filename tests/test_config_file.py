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
        # Found by an audit: YAML 1.1 reads `no` (Norwegian) as false; it became the code "False"
        # and every tree was dropped under `lang` without a word.
        ("lang: no\n", 'lang must be str, got False \\(YAML reads unquoted yes/no/on/off/true/false as booleans: quote the text, e.g. lang: "no"\\)'),
        ("threads:\n  lang: [en, no]\n", r"lang must be str, got \['en', False\] \(YAML reads unquoted"),
        ("tree_states: on\n", "tree_states must be str, got True \\(YAML reads"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_file_and_the_setting(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{path}: {message}"):
        config_from_file(path)


def test_a_quoted_no_is_the_norwegian_language_code(tmp_path):
    path = tmp_path / "no.yaml"
    path.write_text('lang: "no"\n')
    assert merge(config_from_file(path), {}, {}).threads.lang == "no"


def test_values_are_converted_to_their_types(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text("buckets: '128,256'\nmax_length: '512'\nmax_padding_waste: 5e-2\nlang_scope: all\nval_split: 0\n")
    config = merge(config_from_file(path), {}, {})
    assert config.buckets == [128, 256, 512] and config.max_length == 512 and config.max_padding_waste == 0.05
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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("threads: 5\n", "threads must be a mapping"),
        ("threads: [a]\n", "threads must be a mapping"),
        ("inputs: 5\n", "inputs must be a list of paths, got 5"),
        ("inputs:\n", "inputs must not be empty"),
        ("inputs: [null]\n", "inputs must be a path"),
        ("inputs: [a.jsonl, '']\n", "inputs must be a path"),
        ("alpaca: 5\n", "alpaca must be a list of paths, got 5"),
        ("alpaca: [{a: 1}]\n", "alpaca must be a path"),
        ("shard_size_mb: .inf\n", "shard_size_mb must be a finite number, got inf"),
        ("val_split: .nan\n", "val_split must be a finite number, got nan"),
        ("threads:\n  val_split: -.inf\n", "val_split must be a finite number"),
        ("max_padding_waste: nan\n", "max_padding_waste must be a finite number"),
        ("quarantine: [a]\n", "quarantine must be Path"),
    ],
)
def test_a_wrongly_shaped_setting_names_the_file_and_the_setting(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{path}: {message}"):
        config_from_file(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("  datasets:\n    - oasst_export: 5\n", "datasets: oasst_export must be a mapping of options, got 5"),
        ("  datasets:\n    - oasst_export:\n        input_file_path: [a]\n", "input_file_path must be a path"),
        ("  datasets:\n    - oasst_export:\n        val_split: 0.1\n", "oasst_export needs input_file_path"),
        ("  data_path: 5\n  datasets:\n    - oasst_export:\n        input_file_path: t.jsonl\n", "data_path must be a path"),
        ("  datasets: 5\n", "datasets must be a list of dataset entries, got 5"),
        ("  datasets:\n    - alpaca: 5\n", "datasets: alpaca must be a mapping of options, got 5"),
        ("  datasets:\n    - 5\n", "datasets: cannot read entry 5"),
        ("  model_name: [a]\n  datasets: []\n", "model_name must be a model name or folder"),
        ("  datasets:\n    - oasst_export:\n        input_file_path: t.jsonl\n        val_split: .inf\n", "val_split must be a finite number"),
    ],
)
def test_a_wrongly_shaped_open_assistant_setting_names_the_file_and_the_setting(tmp_path, text, message):
    path = tmp_path / "oa.yaml"
    path.write_text("defaults:\n" + text)
    with pytest.raises(ConfigError, match=f"^{path}: {message}"):
        config_from_file(path, ["defaults"])


def test_open_assistant_inputs_are_relative_to_a_config_given_by_a_relative_path(tmp_path, monkeypatch):
    (tmp_path / "cfg" / "data").mkdir(parents=True)
    config = tmp_path / "cfg" / "oa.yaml"
    config.write_text("defaults:\n  datasets:\n    - oasst_export:\n        input_file_path: trees.jsonl\n")
    monkeypatch.chdir(tmp_path)
    values = config_from_file(Path("cfg/oa.yaml"), ["defaults"])
    assert values["inputs"] == [str(Path("cfg") / "trees.jsonl")]
    assert Path(values["inputs"][0]).resolve() == (tmp_path / "cfg" / "trees.jsonl").resolve()
    # A relative data_path is relative to the config's folder too, and only once.
    config.write_text("defaults:\n  data_path: data\n  datasets:\n    - oasst_export:\n        input_file_path: trees.jsonl\n")
    assert config_from_file(Path("cfg/oa.yaml"), ["defaults"])["inputs"] == [str(Path("cfg") / "data" / "trees.jsonl")]
    config.write_text(f"defaults:\n  data_path: {tmp_path / 'elsewhere'}\n  datasets:\n    - oasst_export:\n        input_file_path: trees.jsonl\n")
    assert config_from_file(Path("cfg/oa.yaml"), ["defaults"])["inputs"] == [str(tmp_path / "elsewhere" / "trees.jsonl")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("val_split: 2\n", r"val_split: must be in \[0, 1\), got 2.0"),
        ("threads:\n  top_k: 0\n", "top_k: must be at least 1, got 0"),
        ("max_length: 4\n", "max_length: must be at least 8, got 4"),
        ("shard_size_mb: 0\n", "shard_size_mb: must be a number of MiB"),
        ("max_padding_waste: 1.5\n", r"max_padding_waste: must be in \(0, 1\)"),
        ("workers: 0\n", "workers: must be at least 1"),
        # Checked by the filters and the bucket rules: these named a flag, not the file.
        ("lang: ''\n", "lang: --lang needs at least one language code"),
        ("threads:\n  max_label: [spam]\n", "max_label: --max-label expects NAME=NUMBER"),
        ("tree_states: ' , '\n", "tree_states: --tree-states needs at least one tree state"),
        ("buckets: [0]\n", "buckets: must be positive token counts"),
    ],
)
def test_a_value_out_of_range_in_a_file_names_the_file(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    Path("c.yaml").write_text(text)
    values = config_from_file(Path("c.yaml"))
    with pytest.raises(ConfigError, match=f"^c.yaml: {message}"):
        merge(values, {}, {})


def test_a_flag_overrides_a_bad_file_value_and_its_own_errors_are_unchanged(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("val_split: 2\nmax_length: 4\n")
    values = config_from_file(path)
    config = merge(values, {"max_length": 64}, {"val_split": 0.1})
    assert config.max_length == 64 and config.threads.val_split == 0.1
    path.write_text("val_split: 0.1\n")
    with pytest.raises(ConfigError, match=r"^val_split must be in \[0, 1\), got 3"):
        merge(config_from_file(path), {}, {"val_split": 3.0})
    with pytest.raises(ConfigError, match="^max_length must be at least 8"):
        merge(config_from_file(path), {"max_length": 4}, {})


def test_open_assistant_range_errors_name_the_file(tmp_path):
    path = tmp_path / "oa.yaml"
    path.write_text("defaults:\n  datasets:\n    - oasst_export:\n        input_file_path: t.jsonl\n        top_k: 0\n")
    with pytest.raises(ConfigError, match=f"^{path}: top_k: must be at least 1"):
        merge(config_from_file(path, ["defaults"]), {}, {})


def test_unsupported_open_assistant_options_are_named_in_a_warning(tmp_path, caplog):
    path = tmp_path / "oa.yaml"
    path.write_text(
        "defaults:\n  datasets:\n"
        "    - oasst_export:\n        input_file_path: t.jsonl\n        lang: en\n        top_k: 1\n"
        "        manual_seed: 7\n        fraction: 0.5\n        limit: 10\n        max_val_set: 50\n"
        "    - alpaca:\n        val_split: 0.1\n        max_val_set: 20\n"
        "    - alpaca\n"
    )
    with caplog.at_level("WARNING", logger="oasst_data"):
        values = config_from_file(path, ["defaults"])
    assert values["threads"] == {"lang": "en", "top_k": 1, "seed": 7}
    assert values["alpaca"] == ["yahma/alpaca-cleaned", "yahma/alpaca-cleaned"]
    messages = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(messages) == 2, messages
    assert "oasst_export option(s) fraction, limit, max_val_set are not supported" in messages[0]
    assert "alpaca option(s) max_val_set, val_split are not supported" in messages[1]
    assert all(str(path) in message for message in messages)
    assert not any(key in messages[0] for key in ("input_file_path", "lang", "top_k", "manual_seed"))


def test_a_wrongly_shaped_config_is_one_line_through_the_cli(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("threads: 5\n")
    result = subprocess.run(
        [sys.executable, "-m", "oasst_data_cli", "build", str(FIXTURES / "oasst" / "trees.jsonl"), "--config", str(config),
         "--tokenizer", str(FIXTURE_TOKENIZER), "--out", str(tmp_path / "out")],
        capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {config}: threads must be a mapping of thread options, got 5"]


@pytest.mark.parametrize("layout", ["own", "open-assistant"])
def test_a_tokenizer_folder_is_relative_to_the_config_file_and_a_hub_name_is_kept(tmp_path, monkeypatch, layout):
    (tmp_path / "cfg").mkdir()
    shutil.copytree(FIXTURE_TOKENIZER, tmp_path / "cfg" / "tok")
    config = tmp_path / "cfg" / "build.yaml"
    monkeypatch.chdir(tmp_path)  # not the config's folder: `tok` does not exist here
    sections = ["defaults"] if layout == "open-assistant" else None

    def tokenizer_of(value: str) -> str:
        key = "tokenizer" if layout == "own" else "defaults:\n  tokenizer_name"
        config.write_text(f"{key}: {value}\n")
        return config_from_file(config, sections)["tokenizer"]

    assert Path(tokenizer_of("tok")).resolve() == (tmp_path / "cfg" / "tok").resolve()
    assert tokenizer_of("EleutherAI/pythia-12b-deduped") == "EleutherAI/pythia-12b-deduped"
    assert tokenizer_of(str(FIXTURE_TOKENIZER)) == str(FIXTURE_TOKENIZER)
