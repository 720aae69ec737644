"""Rendering the drop funnel for people (rich tables); the data itself is `Funnel.to_dict()`."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from .funnel import Funnel


def funnel_table(funnels: dict[str, Funnel], title: str = "Drop funnel") -> Table:
    """Rows: read -> kept -> candidates -> per-reason drops -> threads, one column per source."""
    sources = sorted(funnels)
    total = Funnel()
    for funnel in funnels.values():
        total = total + funnel
    columns = [(name, funnels[name]) for name in sources]
    if len(columns) > 1:
        columns.append(("total", total))
    table = Table(title=title, title_justify="left")
    table.add_column("stage")
    for name, _ in columns:
        table.add_column(name, justify="right")

    def row(label: str, getter, style: str | None = None) -> None:
        # Plain Text: a reason may hold a user's label name (max_label:NAME), never rich markup.
        table.add_row(Text(label), *[f"{getter(f):,}" for _, f in columns], style=style)

    row("records read", lambda f: f.records_read)
    row("  bad records (quarantined)", lambda f: f.bad_records, "red")
    row("trees read", lambda f: f.trees_read)
    for reason in sorted(total.tree_drops):
        row(f"  - dropped: {reason}", lambda f, r=reason: f.tree_drops.get(r, 0), "yellow")
    row("trees kept", lambda f: f.trees_kept, "bold")
    row("candidate threads", lambda f: f.candidates)
    for reason in sorted(total.thread_drops):
        row(f"  - dropped: {reason}", lambda f, r=reason: f.thread_drops.get(r, 0), "yellow")
    row("threads", lambda f: f.threads, "bold green")
    row("  train", lambda f: f.threads_by_split.get("train", 0))
    row("  validation", lambda f: f.threads_by_split.get("validation", 0))
    return table
