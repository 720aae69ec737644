"""SYNTHETIC shards with the real length distribution, for the GPU benchmark (not a build).

    python benchmarks/synth_shards.py --template FIXTURE_BUILD --out DIR [--rows 6000 --val-rows 300]

The GPU machine has no copy of the real data, only the project fixtures. This takes a real
`oasst-data build` of the fixtures (the template: its tokenizer, fingerprint and token ids)
and writes a new build folder in the same shard contract whose row lengths are drawn from
benchmarks/data/en100_lengths.json (the real en_100 threads' lengths under the Pythia
tokenizer). Each row is a window of the template's concatenated token stream with its loss
mask, so the text is repeated fixture text: fine for timing, meaningless as training data.
Buckets are chosen by the build's own chooser, as `oasst-data build` would; the manifest says
`"synthetic": true`.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from oasst_data.shards.buckets import assign_buckets, choose_buckets, padding_report
from oasst_data.shards.hashing import sha256_file
from oasst_data.shards.load import load_manifest
from oasst_data.shards.schema import ROW_SCHEMA

LENGTHS = Path(__file__).resolve().parent / "data" / "en100_lengths.json"


def token_stream(template: Path, manifest: dict) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = [], []
    for shard in manifest["shards"]:
        table = pq.read_table(template / shard["path"], columns=["input_ids", "loss_mask"])
        for row_ids, row_mask in zip(table.column("input_ids").to_pylist(), table.column("loss_mask").to_pylist()):
            ids += row_ids
            mask += row_mask
    if not ids:
        raise SystemExit(f"{template}: the template build has no rows")
    return np.array(ids, dtype=np.int32), np.array(mask, dtype=np.uint8)


def synthesize(
    template: Path, out: Path, rows: int, val_rows: int, seed: int, max_length: int, batch_tokens: int | None = None
) -> dict:
    manifest = load_manifest(template)
    ids, mask = token_stream(template, manifest)
    real = np.array(json.loads(LENGTHS.read_text())["lengths"], dtype=np.int64)
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.choice(real, size=rows + val_rows), max_length)
    repeats = int(np.ceil((max_length + len(ids)) / len(ids))) + 1
    ids_loop, mask_loop = np.tile(ids, repeats), np.tile(mask, repeats)
    starts = rng.integers(0, len(ids), size=len(lengths))
    # Buckets as `oasst-data build` chooses them: for 4-row batches, or for a token budget.
    buckets = choose_buckets(lengths, max_length=max_length, batch_size=4, max_waste=0.05, batch_tokens=batch_tokens)
    bucket_of_row = assign_buckets(lengths, buckets)
    splits = np.array(["train"] * rows + ["validation"] * val_rows)
    groups: dict[tuple[str, int], list[int]] = {}
    for index, (split, bucket) in enumerate(zip(splits, bucket_of_row)):
        groups.setdefault((str(split), int(bucket)), []).append(index)

    out.mkdir(parents=True, exist_ok=False)
    shards = []
    for (split, bucket), members in sorted(groups.items()):
        row_ids, row_masks = [], []
        for index in members:
            start, length = int(starts[index]), int(lengths[index])
            window_mask = mask_loop[start : start + length].copy()
            if not window_mask[1:].any():
                window_mask[-1] = 1  # every row trains at least one token, as the build guarantees
            row_ids.append(ids_loop[start : start + length])
            row_masks.append(window_mask)
        n = len(members)
        table = pa.table(
            {
                "id": [f"synthetic-{i}" for i in members],
                "tree_id": [f"synthetic-{i}" for i in members],
                "source": ["synthetic"] * n,
                "lang": ["en"] * n,
                "split": [split] * n,
                "text": [""] * n,
                "input_ids": pa.array([r.tolist() for r in row_ids], pa.list_(pa.int32())),
                "loss_mask": pa.array([m.tolist() for m in row_masks], pa.list_(pa.uint8())),
                "length": pa.array([int(lengths[i]) for i in members], pa.int32()),
                "num_turns": pa.array([2] * n, pa.int32()),
                "bucket": pa.array([bucket] * n, pa.int32()),
                "truncated": [False] * n,
            },
            schema=ROW_SCHEMA,
        )
        edge = buckets[bucket]
        relative = f"data/{split}/b{edge.max_length:05d}-00000.parquet"
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out / relative, compression="zstd")
        shards.append(
            {
                "path": relative,
                "split": split,
                "bucket": bucket,
                "min_length": edge.min_length,
                "max_length": edge.max_length,
                "rows": n,
                "tokens": int(sum(len(r) for r in row_ids)),
                "trainable_tokens": int(sum(int(m.sum()) for m in row_masks)),
                "truncated_rows": 0,
                "sha256": sha256_file(out / relative),
            }
        )
    result = copy.deepcopy(manifest)
    result["synthetic"] = True
    result["synthetic_note"] = (
        f"benchmarks/synth_shards.py: {rows} train + {val_rows} validation rows, lengths drawn from "
        f"{LENGTHS.name}, token windows of the template build (config_hash {manifest.get('config_hash')})"
    )
    result["buckets"] = [b.to_dict() for b in buckets]
    result["shards"] = shards
    result["padding"] = padding_report(lengths, bucket_of_row, buckets, [1, 4, 8], batch_tokens)
    result["totals"] = {
        split: {
            "rows": sum(s["rows"] for s in shards if s["split"] == split),
            "tokens": sum(s["tokens"] for s in shards if s["split"] == split),
            "trainable_tokens": sum(s["trainable_tokens"] for s in shards if s["split"] == split),
            "shards": sum(1 for s in shards if s["split"] == split),
        }
        for split in ("train", "validation")
    }
    saved = manifest.get("tokenizer", {}).get("saved")
    if saved:  # the template's tokenizer made these token ids: it travels with them too
        shutil.copytree(template / saved["folder"], out / saved["folder"])
    (out / "manifest.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, required=True, help="a real `oasst-data build` output (its tokenizer is kept)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--val-rows", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--bucket-batch-tokens", type=int, default=None, help="tune the buckets for this token budget (as build's flag)")
    args = parser.parse_args()
    manifest = synthesize(args.template, args.out, args.rows, args.val_rows, args.seed, args.max_length, args.bucket_batch_tokens)
    padding = manifest["padding"]
    print(
        f"synthetic build {args.out}: {manifest['totals']['train']['rows']} train rows, "
        f"{manifest['totals']['train']['tokens']:,} tokens, {len(manifest['buckets'])} buckets; expected padding at 4 rows: "
        f"random {padding['random']['4']:.1%}, bucketed {padding['bucketed']['4']:.1%}"
    )


if __name__ == "__main__":
    main()
