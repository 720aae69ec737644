"""Dataset statistics: what is in an export, and what a build produced.

    from oasst_data.stats import collect_stats, render_html
    report = collect_stats(["export.jsonl.gz"], tokenizer="fixtures/tokenizer")   # an export
    report = collect_stats(["out/shards"])                                         # a build
    open("stats.html", "w").write(render_html(report))

A report is a plain JSON-ready dict (schema: `schemas/stats.schema.json`); `kind` says
whether `export` or `shards` holds the figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..config import ThreadConfig
from ..errors import OasstDataError
from ..readers.files import as_sources
from .build import is_build_dir, shard_stats
from .export import STATS_FORMAT, export_stats
from .html import render_html
from .markdown import render_markdown
from .output import to_json, write_report
from .padding import expected_waste
from .terminal import render_tables


def collect_stats(
    paths: Sequence[str | Path],
    alpaca: Sequence[str] = (),
    config: ThreadConfig | None = None,
    tokenizer: str | None = None,
    **kwargs,
) -> dict:
    """Stats of a build directory (one path holding manifest.json) or of export files."""
    paths, alpaca = as_sources(paths), as_sources(alpaca)
    builds = [p for p in paths if is_build_dir(p)]
    if builds:
        if len(paths) != 1 or alpaca:
            raise OasstDataError(f"{builds[0]} is a build directory: describe one build at a time, without other inputs")
        return shard_stats(builds[0])
    check_export_paths(paths)
    return export_stats(paths, alpaca, config, tokenizer, **kwargs)


def check_export_paths(paths: Sequence[str | Path]) -> None:
    """Refuse what is no export file: a folder that is no build, or a build's own manifest.json."""
    for path in paths:
        if Path(path).is_dir():
            raise OasstDataError(f"{path}: a directory without manifest.json (give export files, or one finished build)")
        if Path(path).name == "manifest.json" and is_build_dir(Path(path).parent):
            raise OasstDataError(f"{path}: is a build's manifest, not an export: give the build folder, {Path(path).parent}")


__all__ = [
    "STATS_FORMAT",
    "collect_stats",
    "expected_waste",
    "export_stats",
    "is_build_dir",
    "render_html",
    "render_markdown",
    "render_tables",
    "shard_stats",
    "to_json",
    "write_report",
]
