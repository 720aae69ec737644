"""The dataset card a build writes (shards/card.py)."""

from __future__ import annotations

import re

from oasst_data.shards.card import code_span, dataset_card


def _manifest(name: str, marker_text_messages: int = 0) -> dict:
    return {
        "shards": [{"split": "train", "path": "data/train/b00128-00000.parquet", "sha256": "0" * 64}],
        "totals": {"train": {"rows": 3, "tokens": 30, "trainable_tokens": 10}},
        "tokenizer": {"name": name, "fingerprint": "ab" * 32, "saved": {"folder": "tokenizer"}},
        "config": {"max_length": 2048},
        "funnel": {"marker_text_messages": marker_text_messages},
    }


def test_a_tokenizer_name_cannot_break_out_of_its_code_span():
    """Found by an audit: a tokenizer folder named "a`<img src=x onerror=alert(1)>`\\n# H" put a raw
    <img> tag and a heading into the card."""
    card = dataset_card(_manifest("a`<img src=x onerror=alert(1)>`\n# H"))
    line = next(line for line in card.splitlines() if line.startswith("Tokenizer: "))
    assert "``a`<img src=x onerror=alert(1)>` # H``" in line  # one span, fenced by a longer run of backticks
    assert not any(line.startswith("# H") for line in card.splitlines())


def test_code_span_fences_any_backtick_run():
    assert code_span("plain") == "`plain`"
    assert code_span("a``b") == "```a``b```"
    assert code_span("`x`") == "`` `x` ``"  # a space keeps edge backticks off the fence
    for text in ("a`b", "``", "x\ny"):
        span = code_span(text)
        fence = re.match(r"`+", span).group(0)
        assert span.endswith(fence) and fence not in span[len(fence) : -len(fence)]


def test_the_card_says_when_input_ids_differ_from_the_text():
    assert "except in rows whose messages hold a special token's text" in dataset_card(_manifest("t", marker_text_messages=2))
    assert "reproduces the shards' `input_ids` from their `text`." in dataset_card(_manifest("t"))


def test_the_card_names_its_config_by_the_data_and_lists_the_manifests_shards():
    """datasets caches a folder's data by its name, the config's name and its data file names."""
    import yaml

    manifest = _manifest("t")
    manifest["shards"].append({"split": "train", "path": "data/train/b02048-00000.parquet", "sha256": "1" * 64})
    header = yaml.safe_load(dataset_card(manifest).split("---")[1])
    [config] = header["configs"]
    assert re.fullmatch(r"shards-[0-9a-f]{16}", config["config_name"])
    assert config["data_files"] == [{"split": "train", "path": ["data/train/b00128-00000.parquet", "data/train/b02048-00000.parquet"]}]
    manifest["shards"][1]["sha256"] = "2" * 64
    assert yaml.safe_load(dataset_card(manifest).split("---")[1])["configs"][0]["config_name"] != config["config_name"]
