"""`oasst-data`: build SFT shards from Open-Assistant and Alpaca data."""

from __future__ import annotations

import json
import logging
import os
import sys

# transformers warns at import that torch is missing (it is only needed for training).
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from oasst_data.config import ThreadConfig
from oasst_data.display import is_utf8_text
from oasst_data.funnel import what_removed_everything
from oasst_data.atomic import write_target
from oasst_data.output_paths import check_outputs
from oasst_data.readers.files import expand_inputs
from oasst_data.report import funnel_table
from oasst_data.threads import ThreadExtractor, write_threads_jsonl

from . import build_command, stats_command, train_command
from . import options as opt
from .console import dash_is_stdout, err_console, is_stdout, out_console, setup_logging, shown, user_errors

log = logging.getLogger("oasst_data")

app = typer.Typer(
    name="oasst-data",
    help="Turn Open-Assistant and Alpaca conversation data into trainer-ready SFT shards.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    setup_logging(verbose)


def reading_progress(total_bytes: int) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[threads]:,} threads"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
        disable=not err_console.is_terminal,
    )


@app.command()
def threads(
    inputs: opt.Inputs = None,
    out: Annotated[Path, typer.Option("--out", help="Output JSON Lines file, one thread a line ('-': standard output).", callback=dash_is_stdout)] = ...,
    alpaca: opt.Alpaca = None,
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
    as_json: Annotated[bool, typer.Option("--json", help="Print the funnel as JSON instead of a table.")] = False,
) -> None:
    """Extract training threads (serialized strings and messages) as JSON Lines."""
    with user_errors():
        overrides = opt.thread_overrides(
            lang=lang, lang_scope=lang_scope, tree_states=tree_states, synthetic=synthetic, top_k=top_k, max_label=max_label, min_label=min_label,
            val_split=val_split, seed=seed, system=system, on_bad_record=on_bad_record, quarantine=quarantine,
        )
        config = ThreadConfig(**overrides)
        if config.quarantine is None and out.name and not out.is_dir():  # else check_outputs names the mistake
            if not write_target(out)[1]:
                # Also under fail: a strict run that finishes removes the quarantine an earlier run left there.
                config.quarantine = out.with_name(out.name + ".quarantine.jsonl")
            elif config.on_bad_record.value == "skip":  # /dev/stdout, a pipe: "beside it" is no place for a file
                raise typer.BadParameter("--out is a pipe or device: give --quarantine FILE for the skipped records")
        paths = expand_inputs(inputs or [])
        if not paths and not alpaca:
            raise typer.BadParameter("give at least one INPUT file or --alpaca SOURCE")
        check_outputs({"--out": out, "--quarantine": config.quarantine}, [*paths, *(alpaca or [])])
        extractor = ThreadExtractor(config)
        total = sum(p.stat().st_size for p in paths)
        with reading_progress(total) as progress:
            task = progress.add_task("reading", total=total or None, threads=0)

            def advance() -> None:
                funnel = extractor.funnel
                progress.update(task, completed=extractor.bytes_read.value, threads=funnel.threads)

            count = write_threads_jsonl(extractor.run(paths, alpaca or (), advance), out)
            advance()
        # Threads on stdout: the funnel goes to stderr, so the output stays JSON Lines.
        on_stdout = is_stdout(out) or (config.quarantine is not None and is_stdout(config.quarantine))
        report(extractor, as_json, config, err_console if on_stdout else out_console)
        err_console.print(f"wrote {count:,} threads to {shown(str(out))}")
        if not count:
            log.warning("no thread was kept: %s", what_removed_everything(extractor.funnel.to_dict()))


@app.command()
def filters() -> None:
    """List the tree and thread filters, in checking order, with their options and drop reasons."""
    from rich.table import Table

    from oasst_data.filters import OTHER_DROP_REASONS, REGISTRY

    table = Table(
        title="Filters, in checking order (the first that drops an item names its reason)",
        title_justify="left",
        caption="* part of Open-Assistant's own SFT loader",
        caption_justify="left",
    )
    table.add_column("filter / keeps", ratio=3)
    table.add_column("level")
    table.add_column("option", no_wrap=True)
    table.add_column("drop reasons", no_wrap=True)
    for spec in REGISTRY:
        name = f"[bold]{spec.name}[/]{' *' if spec.reference else ''}\n[dim]{spec.summary}[/]"
        table.add_row(name, spec.level, spec.option, "\n".join(spec.reasons))
    out_console.print(table)
    others = Table(
        title="Other drop reasons (no option; counted in the same funnel)",
        title_justify="left",
        caption="The filters above apply to Open-Assistant trees and threads; Alpaca records are kept as they are (lang en).",
        caption_justify="left",
    )
    others.add_column("reason", no_wrap=True)
    others.add_column("level", no_wrap=True)
    others.add_column("meaning", ratio=1)
    for other in OTHER_DROP_REASONS:
        others.add_row(other.reason, other.level, other.summary)
    out_console.print(others)


def report(extractor: ThreadExtractor, as_json: bool, config: ThreadConfig, console=out_console) -> None:
    if as_json:
        payload = {
            "funnel": extractor.funnel.to_dict(),
            "by_source": {k: v.to_dict() for k, v in sorted(extractor.funnels.items())},
            "quarantined": extractor.handler.count,
        }
        console.print_json(json.dumps(payload))
    else:
        console.print(funnel_table(extractor.funnels))
    if extractor.handler.count:
        err_console.print(
            f"[yellow]{extractor.handler.count:,} bad records skipped[/]"
            + (f", quarantined in {shown(str(config.quarantine))}" if config.quarantine else "")
        )


app.command("build")(build_command.build)
app.command("verify")(build_command.verify)
app.command("stats")(stats_command.stats)
app.command("train")(train_command.train)


def main() -> None:  # console-script entry point
    # A name in another encoding (Latin-1 é is byte 0xE9) reaches Python as lone surrogates, which
    # no UTF-8 output (manifest, quarantine, stats JSON) can hold: refused before any work.
    for arg in sys.argv[1:]:
        if not is_utf8_text(arg):
            err_console.print(f"[bold red]error:[/] {shown(arg)}: not valid UTF-8 (a file name in another encoding?): rename it", highlight=False, soft_wrap=True)
            raise SystemExit(1)
    app()


if __name__ == "__main__":
    main()
