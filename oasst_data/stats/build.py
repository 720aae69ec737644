"""`shard_stats`: what a build produced, from its manifest and lazy Parquet scans of its shards.

    from oasst_data.stats import shard_stats
    report = shard_stats("out/shards")

The shards are scanned once, keeping only narrow per-row columns (split, bucket, source,
lang, length, truncated, and the trainable-token count of each `loss_mask`), streamed into a
temporary Parquet file; every table is then a polars aggregation over that file. Token ids
and texts are never loaded whole.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from .. import __version__
from ..errors import OasstDataError
from ..scratch import STATS_SCRATCH_PREFIX, scratch_folder
from ..shards.load import load_manifest
from ..shards.verify import verify_shards
from .export import STATS_FORMAT
from .export_summary import TOP_LANGUAGES
from .histogram import length_histogram, split_key
from .padding import BATCH_SIZES, bucketed_waste, expected_waste
from .summary import empty_summary, number, summary_from_counts

log = logging.getLogger(__name__)


def is_build_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / "manifest.json").is_file()


def _shard_files(out_dir: Path, manifest: dict) -> list[Path]:
    """The listed shards, after checking their sha256: a changed shard could otherwise be read
    back without an error (a flipped byte inside a value) and give wrong figures."""
    report = verify_shards(out_dir)
    damage = report.damage()
    if damage:
        raise OasstDataError(f"{out_dir}: the build does not match its manifest.json ({damage}); rebuild, or run `oasst-data verify`")
    if report.unlisted:
        log.warning(
            "%s: shard(s) the manifest does not list: %s; these figures leave them out, but a glob over data/ "
            "(polars, DuckDB) would read them: remove them, or rebuild", out_dir, report.unlisted_shards(),
        )
    return [out_dir / shard["path"] for shard in manifest["shards"]]


def _narrow_rows(files: list[Path], target: Path) -> pl.LazyFrame:
    """Stream the per-row columns the statistics need into `target`; return a scan of it."""
    columns = ["split", "bucket", "source", "lang", "length", "truncated", "num_turns", "loss_mask"]
    if files:
        try:
            pl.scan_parquet([str(f) for f in files], glob=False).select(  # a build path may hold [ or *
                *columns[:-1], pl.col("loss_mask").list.sum().alias("trainable")
            ).sink_parquet(str(target))
        except (pl.exceptions.PolarsError, OSError) as error:
            bad, reason = _first_unreadable(files, columns) or (files[0].parent, str(error).splitlines()[0])
            raise OasstDataError(f"{bad}: cannot read shard: {reason} (`oasst-data verify` checks every shard)") from None
    else:
        pl.DataFrame(
            schema={"split": pl.String, "bucket": pl.Int32, "source": pl.String, "lang": pl.String, "length": pl.Int32,
                    "truncated": pl.Boolean, "num_turns": pl.Int32, "trainable": pl.Int64}
        ).write_parquet(str(target))
    return pl.scan_parquet(str(target), glob=False)


def _first_unreadable(files: list[Path], columns: list[str]) -> tuple[Path, str] | None:
    """The first shard that pyarrow cannot read (the scan's error does not say which), and why."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in files:
        try:
            pq.read_table(path, columns=columns)
        except (pa.ArrowException, OSError) as error:
            return path, str(error).splitlines()[0]
    return None


def _counts() -> list[pl.Expr]:
    return [
        pl.len().alias("rows"),
        # `length` is int32 in the shards, and polars sums int32 as int32: a split of more than
        # 2**31 tokens (a few billion: a real pretraining-mix size) wrapped to a negative count.
        pl.col("length").cast(pl.Int64).sum().alias("tokens"),
        pl.col("trainable").sum().alias("trainable_tokens"),
    ]


def _ints(row: dict, *keys: str) -> dict:
    return {k: int(row[k] or 0) for k in keys}


def shard_stats(out_dir: str | Path, top_languages: int = TOP_LANGUAGES, batch_sizes=BATCH_SIZES) -> dict:
    """Statistics of a finished build (a directory with manifest.json) as a JSON-ready dict."""
    out_dir = Path(out_dir)
    manifest = load_manifest(out_dir)
    files = _shard_files(out_dir, manifest)
    max_length = int(manifest.get("config", {}).get("max_length") or 2048)
    with scratch_folder(STATS_SCRATCH_PREFIX) as folder:
        rows = _narrow_rows(files, Path(folder) / "rows.parquet")
        queries = {
            "splits": rows.group_by("split").agg(*_counts(), pl.col("truncated").sum().alias("truncated_rows")),
            "buckets": rows.group_by("split", "bucket").agg(*_counts(), pl.col("length").min().alias("shortest"), pl.col("length").max().alias("longest")),
            "sources": rows.group_by("split", "source").agg(*_counts()),
            "languages": rows.group_by("lang", "split").agg(*_counts()),
            "lengths": rows.group_by("split", "bucket", "length").agg(pl.len().alias("rows")),
            "turns": rows.group_by("split", "num_turns").agg(pl.len().alias("rows")),
        }
        names = list(queries)
        frames = dict(zip(names, pl.collect_all([queries[n] for n in names], engine="streaming")))
    return {
        "stats_format": STATS_FORMAT,
        "kind": "shards",
        "package_version": __version__,
        "inputs": manifest.get("inputs", []),
        "config": manifest.get("config", {}).get("threads"),
        "tokenizer": manifest.get("tokenizer"),
        "export": None,
        "shards": _assemble(out_dir, manifest, frames, max_length, top_languages, tuple(batch_sizes)),
    }


def _assemble(out_dir: Path, manifest: dict, f: dict[str, pl.DataFrame], max_length: int, top: int, batch_sizes: tuple) -> dict:
    histograms: dict[tuple[str, int], dict[int, int]] = {}
    for r in f["lengths"].iter_rows(named=True):
        histograms.setdefault((r["split"], r["bucket"]), {})[r["length"]] = r["rows"]
    per_split: dict[str, dict[int, int]] = {}
    for (split, _), histogram in histograms.items():
        merged = per_split.setdefault(split, {})
        for length, rows in histogram.items():
            merged[length] = merged.get(length, 0) + rows
    length_summary = {split: summary_from_counts(h.items()) for split, h in per_split.items()}
    splits = [
        {"split": r["split"]}
        | _ints(r, "rows", "tokens", "trainable_tokens", "truncated_rows")
        | {"shards": sum(1 for s in manifest["shards"] if s["split"] == r["split"]), "length": length_summary.get(r["split"], empty_summary())}
        for r in sorted(f["splits"].to_dicts(), key=lambda r: split_key(r["split"]))
    ]
    totals = {k: sum(s[k] for s in splits) for k in ("rows", "tokens", "trainable_tokens", "truncated_rows")}
    manifest_totals = manifest.get("totals", {})
    agrees = all(
        manifest_totals.get(s["split"], {}).get(k) == s[k] for s in splits for k in ("rows", "tokens", "trainable_tokens")
    ) and sum(t.get("rows", 0) for t in manifest_totals.values()) == totals["rows"]

    bucket_bounds = {b["index"]: b for b in manifest.get("buckets", [])}
    buckets = []
    for r in sorted(f["buckets"].to_dicts(), key=lambda r: (split_key(r["split"]), r["bucket"])):
        bounds = bucket_bounds.get(r["bucket"], {})
        histogram = histograms.get((r["split"], r["bucket"]), {})
        buckets.append(
            {"split": r["split"], "bucket": r["bucket"], "min_length": bounds.get("min_length"), "max_length": bounds.get("max_length")}
            | _ints(r, "rows", "tokens", "trainable_tokens", "shortest", "longest")
            | {"padding_waste": {str(b): number(expected_waste(histogram, b)) for b in batch_sizes}}
        )
    padding = []
    for split in [s["split"] for s in splits]:
        per_bucket = [h for (s, _), h in histograms.items() if s == split]
        for b in batch_sizes:
            padding.append(
                {"split": split, "batch_size": b, "bucketed": number(bucketed_waste(per_bucket, b)), "random": number(expected_waste(per_split[split], b))}
            )

    # With buckets built for a token budget, also the padding of that budget's batches.
    batch_tokens = manifest.get("config", {}).get("bucket_batch_tokens")
    token_budget_padding = [
        {"split": split, "batch_tokens": int(batch_tokens),
         "bucketed": number(bucketed_waste([h for (s, _), h in histograms.items() if s == split], batch_tokens=batch_tokens))}
        for split in [s["split"] for s in splits]
    ] if batch_tokens else []

    sources = [
        {"split": r["split"], "source": r["source"]} | _ints(r, "rows", "tokens", "trainable_tokens")
        for r in sorted(f["sources"].to_dicts(), key=lambda r: (split_key(r["split"]), r["source"]))
    ]
    languages, languages_other = _languages(f["languages"], top)
    funnel = manifest.get("funnel", {})
    written = int(funnel.get("rows_written", totals["rows"]))
    threads = int(funnel.get("threads", 0))
    dropped = int(funnel.get("rows_dropped_overflow", 0)) + int(funnel.get("rows_dropped_no_trainable_tokens", 0))
    return {
        "build": {
            "path": out_dir.name,
            "format_version": manifest.get("format_version"),
            "package_version": manifest.get("package_version"),
            "config_hash": manifest.get("config_hash"),
            "build_config": {k: v for k, v in manifest.get("config", {}).items() if k != "threads"},
            "buckets": manifest.get("buckets", []),
            "manifest_padding": manifest.get("padding"),
        },
        "totals": totals | {"shards": len(manifest["shards"]), "matches_manifest": agrees},
        "splits": splits,
        "buckets": buckets,
        "padding": padding,
        **({"token_budget_padding": token_budget_padding} if token_budget_padding else {}),
        "sources": sources,
        "turns": [
            {"split": r["split"], "turns": int(r["num_turns"]), "rows": int(r["rows"])}
            for r in sorted(f["turns"].to_dicts(), key=lambda r: (split_key(r["split"]), r["num_turns"]))
        ],
        "languages": languages,
        "languages_other": languages_other,
        "length_histogram": length_histogram(per_split, max_length),
        "overflow": {
            "threads": threads,
            "rows_written": written,
            "rows_truncated": int(funnel.get("rows_truncated", totals["truncated_rows"])),
            "rows_dropped_overflow": int(funnel.get("rows_dropped_overflow", 0)),
            "rows_dropped_no_trainable_tokens": int(funnel.get("rows_dropped_no_trainable_tokens", 0)),
            "marker_text_messages": int(funnel.get("marker_text_messages", 0)),
            "truncated_share": number(int(funnel.get("rows_truncated", totals["truncated_rows"])) / written) if written else 0,
            "dropped_share": number(dropped / threads) if threads else 0,
        },
        "funnel": funnel,
    }


def _languages(frame: pl.DataFrame, top: int) -> tuple[list[dict], dict]:
    table: dict = {}
    for r in frame.to_dicts():
        entry = table.setdefault(r["lang"], {"rows": 0, "tokens": 0, "trainable_tokens": 0, "rows_by_split": {}})
        for key in ("rows", "tokens", "trainable_tokens"):
            entry[key] += int(r[key] or 0)
        entry["rows_by_split"][r["split"]] = int(r["rows"])
    ordered = sorted(table.items(), key=lambda item: (-item[1]["rows"], item[0] is None, item[0] or ""))
    kept = []
    for lang, entry in ordered[:top]:
        entry["rows_by_split"] = dict(sorted(entry["rows_by_split"].items(), key=lambda kv: split_key(kv[0])))
        kept.append({"lang": lang} | entry)
    rest = ordered[top:]
    other = {"langs": len(rest)} | {k: sum(e[k] for _, e in rest) for k in ("rows", "tokens", "trainable_tokens")}
    return kept, other


