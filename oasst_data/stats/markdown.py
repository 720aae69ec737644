"""A stats report as Markdown tables, to paste into a dataset card."""

from __future__ import annotations

import html

from .sections import Section, report_sections


def _cell(text: str) -> str:
    # A value from the data (a model name, a label) may hold a line break: it would end the row,
    # or HTML, which Markdown renders as such (a dataset card page would run a <script>).
    text = html.escape(" ".join(text.splitlines()), quote=False)
    return text.strip().replace("|", "\\|") or " "


def section_markdown(section: Section) -> str:
    lines = [f"### {section.title}", ""]
    align = [":---" if i < section.left else "---:" for i in range(len(section.columns))]
    lines.append("| " + " | ".join(section.columns) + " |")
    lines.append("| " + " | ".join(align) + " |")
    for row in section.rows:
        # Indented labels (sub-rows) keep their nesting visibly in Markdown.
        first = row[0]
        label = ("&nbsp;&nbsp;" + _cell(first)) if first.startswith("  ") else _cell(first)
        lines.append("| " + " | ".join([label, *(_cell(c) for c in row[1:])]) + " |")
    if section.caption:
        lines += ["", f"*{section.caption}*"]
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    if report["kind"] == "export":
        names = _cell(", ".join(i["name"] for i in report["inputs"]))
        title = f"## Export statistics: {names}"
    else:
        title = f"## Shard statistics: {_cell(report['shards']['build']['path'])}"
    note = f"*oasst-data {report['package_version']} stats, format {report['stats_format']}*"
    return "\n\n".join([title, note, *(section_markdown(s) for s in report_sections(report))]) + "\n"
