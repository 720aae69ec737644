"""Writing a stats report to files: JSON (stable keys), self-contained HTML, Markdown."""

from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_open
from .html import render_html
from .markdown import render_markdown


def to_json(report: dict) -> str:
    """Keys in report order (stable by construction), two-space indent, UTF-8 text kept."""
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


def write_report(report: dict, json_path: Path | None = None, html_path: Path | None = None, markdown_path: Path | None = None) -> list[Path]:
    """Write the requested renderings atomically; returns the paths written."""
    written = []
    for path, render in ((json_path, to_json), (html_path, render_html), (markdown_path, render_markdown)):
        if path is None:
            continue
        with atomic_open(Path(path)) as handle:
            handle.write(render(report))
        written.append(Path(path))
    return written
