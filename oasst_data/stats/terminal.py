"""A stats report as rich tables, each narrow enough for an 80-column terminal."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from ..display import visible
from .sections import Section, report_sections

WIDTH = 80


def section_table(section: Section) -> Table:
    # Cells hold values from the data (languages, model names, labels, file names): plain Text,
    # never rich markup, so "[/x]" in an export neither crashes the report nor vanishes from it,
    # and control characters shown as escapes, so an ESC in a label cannot drive the terminal.
    caption = Text(visible(section.caption)) if section.caption else None
    table = Table(title=Text(visible(section.title)), title_justify="left", title_style="bold", caption=caption, show_header=section.header)
    for index, name in enumerate(section.columns):
        # Fold, not "…": three long model names cut to one prefix looked like one model.
        table.add_column(Text(visible(name)), justify="left" if index < section.left else "right", overflow="fold")
    for row in section.rows:
        style = "yellow" if row[0].lstrip().startswith("- dropped") else None
        table.add_row(*(Text(visible(cell)) for cell in row), style=style)
    # Widen a table to its title and caption, so neither wraps.
    longest = max(len(section.title), len(section.caption or ""))
    table.min_width = min(longest + 2, WIDTH)
    return table


def render_tables(report: dict) -> list[Table]:
    """The tables of an export or a build report, in reading order."""
    return [section_table(section) for section in report_sections(report)]
