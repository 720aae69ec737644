"""The dataset card (README.md) of a build: YAML `configs` so `datasets.load_dataset(DIR)` works."""

from __future__ import annotations

import re

import yaml

from .hashing import shards_digest


def dataset_card(manifest: dict) -> str:
    splits = sorted({s["split"] for s in manifest["shards"]}, key=("train", "validation").index)
    header = {
        "configs": [
            {
                # datasets caches a folder's data under its name, this config name and the data
                # files' names: with "default" and a glob, another build in a folder of the same
                # name (or this one rebuilt) was served from the cache, silently. A name from the
                # data's digest and the manifest's own file list (no shard it does not list) cannot be.
                "config_name": f"shards-{shards_digest(manifest)[:16]}",
                "data_files": [
                    {"split": split, "path": [s["path"] for s in manifest["shards"] if s["split"] == split]} for split in splits
                ],
            }
        ],
        "tags": ["sft", "open-assistant", "oasst-data"],
    }
    totals = manifest["totals"]
    tokenizer = manifest["tokenizer"]
    saved = ""
    if tokenizer.get("saved"):
        folder = tokenizer["saved"]["folder"]
        saved = (
            f" Saved with the markers in {code_span(folder + '/')} of this folder: `AutoTokenizer.from_pretrained` on it "
            "reproduces the shards' `input_ids` from their `text`"
            + (
                f", except in rows whose messages hold a special token's text, which stays plain text "
                f"({manifest['funnel']['marker_text_messages']:,} such messages)."
                if manifest.get("funnel", {}).get("marker_text_messages")
                else "."
            )
        )
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).rstrip(),
        "---",
        "",
        "# SFT shards built by oasst-data",
        "",
        f"Tokenizer: {code_span(tokenizer['name'])} (fingerprint `{tokenizer['fingerprint'][:16]}`), "
        f"max length {manifest['config']['max_length']}.{saved}",
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


def code_span(text: str) -> str:
    """`text` as one Markdown code span, whatever it holds: a tokenizer's name is a path, and a
    backtick or a line break in it would end the span and let the rest render as Markdown/HTML."""
    text = " ".join(str(text).splitlines())
    fence = "`" * (1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    padding = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{padding}{text}{padding}{fence}"
