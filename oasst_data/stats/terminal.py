"""A stats report as rich tables, each narrow enough for an 80-column terminal."""

from __future__ import annotations

from rich.table import Table

from .sections import Section, report_sections

WIDTH = 80


def section_table(section: Section) -> Table:
    table = Table(title=section.title, title_justify="left", title_style="bold", caption=section.caption, show_header=section.header)
    for index, name in enumerate(section.columns):
        table.add_column(name, justify="left" if index < section.left else "right")
    for row in section.rows:
        style = "yellow" if row[0].lstrip().startswith("- dropped") else None
        table.add_row(*row, style=style)
    # Widen a table to its title and caption, so neither wraps.
    longest = max(len(section.title), len(section.caption or ""))
    table.min_width = min(longest + 2, WIDTH)
    return table


def render_tables(report: dict) -> list[Table]:
    """The tables of an export or a build report, in reading order."""
    return [section_table(section) for section in report_sections(report)]
