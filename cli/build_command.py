"""`oasst-data build` and `oasst-data verify`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from oasst_data.config_file import config_from_file, merge
from oasst_data.report import funnel_table
from oasst_data.shards.tokenize import Overflow

from . import options as opt
from .console import err_console, out_console, shown, user_errors

_SHARDS = "Tokens and shards"


def build(
    inputs: opt.Inputs = None,
    out: Annotated[Path, typer.Option("--out", help="Output directory (created atomically).")] = ...,
    alpaca: opt.Alpaca = None,
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Tokenizer name or local folder (default: EleutherAI/pythia-12b-deduped).", rich_help_panel=_SHARDS)] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Longest row in tokens (default: 2048).", rich_help_panel=_SHARDS)] = None,
    overflow: Annotated[Optional[Overflow], typer.Option("--overflow", help="Longer rows: truncate (keep the start) or drop (default: truncate).", rich_help_panel=_SHARDS)] = None,
    buckets: Annotated[Optional[str], typer.Option("--buckets", help="Explicit bucket upper bounds, e.g. 128,256,512,1024,2048.", rich_help_panel=_SHARDS)] = None,
    bucket_batch_size: Annotated[Optional[int], typer.Option("--bucket-batch-size", help="Batch size the automatic buckets (and waste report) are tuned for (default: 4).", rich_help_panel=_SHARDS)] = None,
    bucket_batch_tokens: Annotated[Optional[int], typer.Option("--bucket-batch-tokens", help="Tune the automatic buckets for token-budget batches of N padded tokens (the trainer's --batch-tokens) instead of --bucket-batch-size rows.", rich_help_panel=_SHARDS)] = None,
    max_padding_waste: Annotated[Optional[float], typer.Option("--max-padding-waste", help="Automatic buckets: expected padding share per bucket (default: 0.05).", rich_help_panel=_SHARDS)] = None,
    shard_size_mb: Annotated[Optional[float], typer.Option("--shard-size-mb", help="Target shard size in MiB (default: 128).", rich_help_panel=_SHARDS)] = None,
    shard_rows: Annotated[Optional[int], typer.Option("--shard-rows", help="Also cap rows per shard.", rich_help_panel=_SHARDS)] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Tokenizer threads; the output does not depend on it (default: 2).", rich_help_panel=_SHARDS)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML config (own layout, or Open-Assistant's with --configs).")] = None,
    configs: Annotated[Optional[list[str]], typer.Option("--configs", help="Open-Assistant config sections to merge in order, e.g. --configs defaults --configs reference-data (or one space-separated value).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output directory (atomically).")] = False,
    lang: opt.Lang = None,
    lang_scope: opt.LangScopeOpt = None,
    tree_states: opt.TreeStates = None,
    synthetic: opt.Synthetic = None,
    top_k: opt.TopK = None,
    max_label: opt.MaxLabel = None,
    min_label: opt.MinLabel = None,
    val_split: opt.ValSplit = None,
    seed: opt.Seed = None,
    system: opt.System = None,
    on_bad_record: opt.OnBad = None,
    quarantine: opt.Quarantine = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Build tokenized, loss-masked, length-bucketed Parquet shards with a manifest."""
    from oasst_data.shards.build import build_shards, parse_buckets

    with user_errors():
        sections = [part for value in (configs or []) for part in value.split()]
        if sections and config is None:
            raise typer.BadParameter("--configs needs --config FILE")
        file_values = config_from_file(config, sections) if config else {}
        flags = {
            "inputs": list(inputs or []),
            "alpaca": list(alpaca or []),
            "tokenizer": tokenizer,
            "max_length": max_length,
            "overflow": overflow,
            "buckets": parse_buckets(buckets) if buckets else None,
            "bucket_batch_size": bucket_batch_size,
            "bucket_batch_tokens": bucket_batch_tokens,
            "max_padding_waste": max_padding_waste,
            "shard_size_mb": shard_size_mb,
            "shard_rows": shard_rows,
            "workers": workers,
        }
        thread_flags = opt.thread_overrides(
            lang=lang, lang_scope=lang_scope, tree_states=tree_states, synthetic=synthetic, top_k=top_k, max_label=max_label, min_label=min_label,
            val_split=val_split, seed=seed, system=system, on_bad_record=on_bad_record, quarantine=quarantine,
        )
        build_config = merge(file_values, flags, thread_flags)
        if not build_config.inputs and not build_config.alpaca:  # a usage error, as in threads and stats
            raise typer.BadParameter("give at least one INPUT file or --alpaca SOURCE (or a --config with them)")
        progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[threads]:,} threads tokenized"),
            TimeElapsedColumn(),
            console=err_console,
            disable=not err_console.is_terminal,
        )
        with progress:
            task = progress.add_task("reading", total=None, threads=0)

            def on_progress(state) -> None:
                progress.update(
                    task,
                    total=state.bytes_total or None,
                    completed=state.bytes_read,
                    threads=state.threads,
                    description=state.stage,
                )

            result = build_shards(build_config, out, overwrite=overwrite, on_progress=on_progress)
        manifest = result.manifest
        if as_json:
            out_console.print_json(json.dumps({k: manifest[k] for k in ("totals", "funnel", "buckets", "padding")}))
        else:
            out_console.print(funnel_table(result.funnels))
            out_console.print(summary_table(manifest))
            out_console.print(bucket_table(manifest))
        if result.quarantined:
            err_console.print(f"[yellow]{result.quarantined:,} bad records skipped[/], see {shown(str(result.quarantine_path))}")
        err_console.print(f"wrote {sum(t['shards'] for t in manifest['totals'].values())} shards to {shown(str(out))}")


def summary_table(manifest: dict) -> Table:
    funnel = manifest["funnel"]
    table = Table(title="Shards", title_justify="left")
    for column in ("split", "rows", "tokens", "trainable", "shards"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for split, totals in manifest["totals"].items():
        table.add_row(split, f"{totals['rows']:,}", f"{totals['tokens']:,}", f"{totals['trainable_tokens']:,}", str(totals["shards"]))
    table.caption = (
        f"truncated {funnel['rows_truncated']:,} · dropped (overflow) {funnel['rows_dropped_overflow']:,} · "
        f"dropped (no trainable token) {funnel['rows_dropped_no_trainable_tokens']:,} · "
        f"messages with literal marker text {funnel['marker_text_messages']:,}"
    )
    return table


def bucket_table(manifest: dict) -> Table:
    padding = manifest["padding"]
    size = str(manifest["config"]["bucket_batch_size"])
    budget = padding.get("token_budget")
    title = f"Length buckets (expected padding at batch {size}" + (f" and at {budget['batch_tokens']:,} tokens per batch)" if budget else ")")
    table = Table(title=title, title_justify="left")
    columns = ["bucket", "lengths", "rows", f"padding, {size} rows"]
    if budget:
        columns += ["rows per budget", "padding, budget"]
    for column in columns:
        table.add_column(column, justify="right")
    for entry in padding["per_bucket"]:
        cells = [str(entry["index"]), f"{entry['min_length']}-{entry['max_length']}", f"{entry['rows']:,}", f"{entry['expected_waste'].get(size, 0):.1%}"]
        if budget:
            tokens = entry.get("token_budget")
            cells += [f"{tokens['rows_per_batch']:,}", f"{tokens['expected_waste']:.1%}"] if tokens else ["", ""]
        table.add_row(*cells)
    table.caption = f"all buckets {padding['bucketed'][size]:.1%} vs random batching {padding['random'][size]:.1%} at {size} rows"
    if budget:
        table.caption += f"; all buckets {budget['bucketed']:.1%} at the token budget"
    return table


def verify(out_dir: Annotated[Path, typer.Argument(help="A build's output directory.", metavar="DIR")]) -> None:
    """Recompute every shard's sha256 against the manifest; exit 1 naming any that differ."""
    from oasst_data.shards.verify import verify_shards

    with user_errors():
        report = verify_shards(out_dir)
        for path in report.mismatched:
            err_console.print(f"[red]checksum differs:[/] {shown(path)}")
        for path in report.missing:
            err_console.print(f"[red]missing:[/] {shown(path)}")
        for path in [*report.unlisted, *report.unlisted_tokenizer_files]:
            err_console.print(f"[red]not in manifest:[/] {shown(path)}")
        for path, why in report.unreadable:
            err_console.print(f"[red]unreadable:[/] {shown(path)} ({shown(why)})")
        if not report.ok:
            raise typer.Exit(1)
        out_console.print(f"[green]ok[/]: {report.checked} files (shards and tokenizer) match the manifest")
