"""`oasst-data stats`: what is in an export, or what a build produced (terminal, JSON, HTML, Markdown)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from oasst_data.config import ThreadConfig
from oasst_data.errors import ConfigError
from oasst_data.output_paths import check_outputs

from . import options as opt
from .console import dash_is_stdout, err_console, is_stdout, out_console, shown, user_errors

_OUTPUT = "Output"
_TOKENS = "Tokens"


def stats(
    paths: Annotated[
        Optional[list[str]],
        typer.Argument(help="Export files or globs (.jsonl, .gz, .zst), or one build directory (with manifest.json).", show_default=False),
    ] = None,
    alpaca: opt.Alpaca = None,
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help="Exports: also count tokens the way a build does (name or local folder).", rich_help_panel=_TOKENS)] = None,
    max_length: Annotated[Optional[int], typer.Option("--max-length", help="Exports with --tokenizer: count threads longer than this (default 2048).", rich_help_panel=_TOKENS)] = None,
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
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write every figure as JSON (schemas/stats.schema.json) ('-': standard output).", rich_help_panel=_OUTPUT, callback=dash_is_stdout)] = None,
    html_out: Annotated[Optional[Path], typer.Option("--html", help="Write one self-contained HTML page with tables and charts ('-': standard output).", rich_help_panel=_OUTPUT, callback=dash_is_stdout)] = None,
    markdown_out: Annotated[Optional[Path], typer.Option("--markdown", help="Write Markdown tables (for a dataset card) ('-': standard output).", rich_help_panel=_OUTPUT, callback=dash_is_stdout)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print no tables, only write the files.", rich_help_panel=_OUTPUT)] = False,
) -> None:
    """Statistics of an export (with the drop funnel of the given filters) or of a build's shards."""
    from oasst_data.readers.files import expand_inputs
    from oasst_data.stats import check_export_paths, export_stats, is_build_dir, render_tables, shard_stats, write_report
    from oasst_data.stats.export import DEFAULT_MAX_LENGTH

    with user_errors():
        paths = list(paths or [])
        overrides = opt.thread_overrides(
            lang=lang, lang_scope=lang_scope, tree_states=tree_states, synthetic=synthetic, top_k=top_k, max_label=max_label, min_label=min_label,
            val_split=val_split, seed=seed, system=system, on_bad_record=on_bad_record,
        )
        check_outputs(
            {"--json": json_out, "--html": html_out, "--markdown": markdown_out},
            [*paths, *(alpaca or []), *([tokenizer] if tokenizer else [])],
        )
        if len(paths) == 1 and is_build_dir(paths[0]):
            given = sorted(overrides) + (["alpaca"] if alpaca else []) + (["tokenizer"] if tokenizer else [])
            given += ["max_length"] if max_length is not None else []
            if given:
                raise ConfigError(
                    f"{paths[0]} is a build: its filters and tokenizer are in its manifest; "
                    f"drop {', '.join('--' + g.replace('_', '-') for g in given)}"
                )
            report = shard_stats(paths[0])
        else:
            for path in paths:
                if is_build_dir(path):
                    raise ConfigError(f"{path}: a build directory is read alone; give it without other inputs")
            check_export_paths(paths)
            if max_length is not None and (tokenizer is None or max_length < 1):
                raise ConfigError("--max-length counts threads longer than N tokens: it needs --tokenizer and N >= 1")
            files = expand_inputs(paths)
            if not files and not alpaca:
                raise typer.BadParameter("give export files, one build directory, or --alpaca SOURCE")
            config = ThreadConfig(**overrides)
            total = sum(p.stat().st_size for p in files)
            progress = Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TimeElapsedColumn(),
                console=err_console,
                transient=True,
                disable=not err_console.is_terminal,
            )
            with progress:
                task = progress.add_task("reading", total=total or None)
                report = export_stats(
                    files,
                    alpaca or (),
                    config,
                    tokenizer,
                    max_length if max_length is not None else DEFAULT_MAX_LENGTH,
                    progress=lambda done: progress.update(task, completed=done),
                )
        # The files first: the tables may go to a pipe that closes early (`| head`), and the
        # statistics must not be lost with it.
        written = write_report(report, json_out, html_out, markdown_out)
        if not quiet:
            # A report written to standard output keeps it to itself: the tables go to stderr.
            tables_console = err_console if any(is_stdout(path) for path in (json_out, html_out, markdown_out) if path) else out_console
            for table in render_tables(report):
                tables_console.print(table)
        for path in written:
            err_console.print(f"wrote {shown(str(path))}")
