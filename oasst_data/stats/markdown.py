"""A stats report as Markdown tables, to paste into a dataset card."""

from __future__ import annotations

import html
import re

from ..display import visible
from .sections import Section, report_sections

# Markdown syntax a value from the data could use: a link or remote image (`[x](javascript:..)`,
# `![](https://tracker)`), code, emphasis, and the table's own cell separator.
_MARKDOWN_SYNTAX = re.compile(r"([\\`*\[\]|])")


def _text(text: str) -> str:
    """Text from the data as inert Markdown: one line, HTML escaped (Markdown renders raw HTML: a
    dataset card page would run a <script>), Markdown syntax backslash-escaped."""
    text = html.escape(visible(" ".join(text.splitlines())), quote=False)
    return _MARKDOWN_SYNTAX.sub(r"\\\1", text.strip())


def _cell(text: str) -> str:
    return _text(text) or " "


def section_markdown(section: Section) -> str:
    lines = [f"### {_text(section.title)}", ""]
    align = [":---" if i < section.left else "---:" for i in range(len(section.columns))]
    lines.append("| " + " | ".join(_cell(column) for column in section.columns) + " |")
    lines.append("| " + " | ".join(align) + " |")
    for row in section.rows:
        # Indented labels (sub-rows) keep their nesting visibly in Markdown.
        first = row[0]
        label = ("&nbsp;&nbsp;" + _cell(first)) if first.startswith("  ") else _cell(first)
        lines.append("| " + " | ".join([label, *(_cell(c) for c in row[1:])]) + " |")
    if section.caption:
        lines += ["", f"*{_text(section.caption)}*"]
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    if report["kind"] == "export":
        names = _cell(", ".join(i["name"] for i in report["inputs"]))
        title = f"## Export statistics: {names}"
    else:
        title = f"## Shard statistics: {_cell(report['shards']['build']['path'])}"
    note = f"*oasst-data {report['package_version']} stats, format {report['stats_format']}*"
    return "\n\n".join([title, note, *(section_markdown(s) for s in report_sections(report))]) + "\n"
