"""The dataset card (README.md) of a build: YAML `configs` so `datasets.load_dataset(DIR)` works."""

from __future__ import annotations

import yaml


def dataset_card(manifest: dict) -> str:
    splits = sorted({s["split"] for s in manifest["shards"]}, key=("train", "validation").index)
    header = {
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"data/{split}/*.parquet"} for split in splits],
            }
        ],
        "tags": ["sft", "open-assistant", "oasst-data"],
    }
    totals = manifest["totals"]
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).rstrip(),
        "---",
        "",
        "# SFT shards built by oasst-data",
        "",
        f"Tokenizer: `{manifest['tokenizer']['name']}` (fingerprint `{manifest['tokenizer']['fingerprint'][:16]}`), "
        f"max length {manifest['config']['max_length']}."
        + (
            f" Saved with the markers in `{manifest['tokenizer']['saved']['folder']}/`: "
            f"`AutoTokenizer.from_pretrained(\"{manifest['tokenizer']['saved']['folder']}\")` reproduces the shards' `input_ids` from their `text`."
            if manifest["tokenizer"].get("saved")
            else ""
        ),
        "",
        "| split | rows | tokens | trainable tokens |",
        "| --- | ---: | ---: | ---: |",
    ]
    for split in splits:
        t = totals[split]
        lines.append(f"| {split} | {t['rows']:,} | {t['tokens']:,} | {t['trainable_tokens']:,} |")
    lines += [
        "",
        "Columns: `id`, `tree_id`, `source`, `lang`, `split`, `text`, `input_ids` (int32), `loss_mask` "
        "(uint8, 1 = trained token), `length`, `num_turns`, `bucket`, `truncated`. "
        "`manifest.json` lists every shard with its sha256; check them with `oasst-data verify DIR`.",
        "",
    ]
    return "\n".join(lines)
