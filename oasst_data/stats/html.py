"""A stats report as one self-contained HTML page: inline CSS, inline SVG charts, no scripts.

Nothing on the page is fetched: no external stylesheet, font, script or image, so it opens
the same offline, from an e-mail attachment or a CI artifact.
"""

from __future__ import annotations

from ..display import html_text as escape
from .format import count, percent
from .sections import Section, report_sections
from .svg import Bar, column_chart, hbar_chart

CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1140px;color:#1f2328;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 8px}
.meta{color:#59636e;margin-bottom:16px}
section{border:1px solid #d1d9e0;border-radius:8px;padding:12px 16px;margin:12px 0;display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
table{border-collapse:collapse}th,td{padding:2px 10px;border-bottom:1px solid #eef1f4}
th{text-align:left;background:#f6f8fa}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
caption{caption-side:bottom;color:#59636e;font-size:12px;text-align:left;padding-top:4px}
svg.chart text{font:12px system-ui,sans-serif;fill:#1f2328}svg.chart text.h{font-weight:600;font-size:13px}
.s0{fill:#0969da}.s1{fill:#bf8700}.s2{fill:#1a7f37}.drop{fill:#cf222e}.kept{fill:#1a7f37}.axis{stroke:#8c959f}
"""


def _table(section: Section) -> str:
    numeric = [i >= section.left for i in range(len(section.columns))]
    head = ""
    if section.header:
        head = "<tr>" + "".join(f'<th{" class=n" if n else ""}>{escape(c)}</th>' for c, n in zip(section.columns, numeric)) + "</tr>"
    body = []
    for row in section.rows:
        cells = []
        for index, cell in enumerate(row):
            text = escape(cell.strip())
            if index == 0 and cell.startswith("  "):
                text = "&nbsp;&nbsp;&nbsp;" + text
            cells.append(f'<td{" class=n" if numeric[index] else ""}>{text}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = f"<caption>{escape(section.caption)}</caption>" if section.caption else ""
    return f"<table>{caption}{head}{''.join(body)}</table>"


def _funnel_chart(funnel: dict, title: str) -> str | None:
    if not funnel or "trees_read" not in funnel:
        return None
    bars = [Bar("trees read", (funnel["trees_read"],))]
    bars += [Bar(f"dropped: {r}", (n,), "drop") for r, n in sorted(funnel.get("tree_drops", {}).items())]
    bars += [Bar("trees kept", (funnel["trees_kept"],), "kept"), Bar("candidate threads", (funnel["candidates"],))]
    bars += [Bar(f"dropped: {r}", (n,), "drop") for r, n in sorted(funnel.get("thread_drops", {}).items())]
    bars.append(Bar("threads", (funnel["threads"],), "kept"))
    return hbar_chart(bars, title)


def _histograms(histogram: dict | None, title: str, open_ended: bool = False) -> list[str]:
    """A chart per split; `open_ended`: the last bin also counts longer lengths (export threads)."""
    if not histogram:
        return []
    bins = histogram["bins"]
    splits = list(bins[0]["rows"]) if bins else []
    labels = [f"{b['min_length']}-{b['max_length']}" for b in bins]
    if open_ended and labels:
        labels[-1] = f"{bins[-1]['min_length']}+"
    return [
        column_chart(labels, [b["rows"].get(split, 0) for b in bins], f"{title}: {split}", x_title="tokens", css=f"s{i % 3}", width=380)
        for i, split in enumerate(splits)
    ]


def _export_charts(report: dict) -> dict[str, list[str]]:
    e = report["export"]
    langs = [Bar(r["lang"] or "(none)", (r["messages"],)) for r in e["languages"]]
    if e["languages_other"]["langs"]:
        langs.append(Bar(f"other ({e['languages_other']['langs']})", (e["languages_other"]["messages"],)))
    charts = {
        "tree_states": [hbar_chart([Bar(r["tree_state"] or "(none)", (r["trees"],)) for r in e["tree_states"]], "Trees per tree_state")],
        "languages": [hbar_chart(langs, "Messages per language")],
        "depth": [
            column_chart([str(r["depth"]) for r in e["depth"]["messages"]], [r["count"] for r in e["depth"]["messages"]], "Messages per depth", "depth"),
            column_chart([str(r["depth"]) for r in e["depth"]["trees"]], [r["count"] for r in e["depth"]["trees"]], "Trees per deepest message", "depth", css="s1"),
        ],
        "branching": [
            column_chart([str(r["replies"]) for r in e["branching"]["replies"]], [r["count"] for r in e["branching"]["replies"]], "Messages per number of replies", "replies")
        ],
        "roles": [
            hbar_chart(
                [Bar(r["role"], (r["chars"]["mean"] or 0, r["chars"]["p90"] or 0)) for r in e["roles"]],
                "Text length per role (characters)",
                series=("mean", "p90"),
                fmt=lambda v: f"{v:,.0f}",
            )
        ],
        "threads": _histograms(e["threads"].get("length_histogram"), "Thread length (tokens)", open_ended=True),
    }
    if e["labels"]:
        charts["labels"] = [
            hbar_chart(
                [Bar(r["label"], (r["mean"] or 0, r["p90"] or 0)) for r in e["labels"]],
                "Label value per message",
                series=("mean", "p90"),
                fmt=lambda v: f"{v:.2f}",
            )
        ]
    if e["synthetic_models"]:
        charts["synthetic_models"] = [hbar_chart([Bar(r["model_name"] or "(none)", (r["messages"],)) for r in e["synthetic_models"]], "Synthetic messages per model")]
    funnel = _funnel_chart(e["funnel"], "Drop funnel")
    if funnel:
        charts["funnel"] = [funnel]
    return charts


def _shard_charts(report: dict) -> dict[str, list[str]]:
    s = report["shards"]
    langs = [Bar(r["lang"] or "(none)", (r["rows"],)) for r in s["languages"]]
    if s["languages_other"]["langs"]:
        langs.append(Bar(f"other ({s['languages_other']['langs']})", (s["languages_other"]["rows"],)))
    padding = [
        Bar(f"{r['split']}, batch {r['batch_size']}", (r["bucketed"] * 100, r["random"] * 100)) for r in s["padding"] if r["batch_size"] > 1
    ]
    charts = {
        "length_histogram": _histograms(s["length_histogram"], "Token-length histogram"),
        "languages": [hbar_chart(langs, "Rows per language")],
        "sources": [hbar_chart([Bar(f"{r['split']}: {r['source']}", (r["tokens"],)) for r in s["sources"]], "Tokens per source")],
        "padding": [hbar_chart(padding, "Expected padding waste (%)", series=("bucketed", "random"), fmt=lambda v: f"{v:.1f}%")],
    }
    funnel = _funnel_chart(s["funnel"], "Drop funnel (as built)")
    if funnel:
        charts["funnel"] = [funnel]
    return charts


def _header(report: dict) -> tuple[str, str]:
    if report["kind"] == "export":
        names = ", ".join(i["name"] for i in report["inputs"])
        title = f"Export statistics: {names}"
        tok = report.get("tokenizer")
        meta = f"{count(report['export']['totals']['trees'])} trees, {count(report['export']['totals']['messages'])} messages, "
        meta += f"{count(report['export']['totals']['threads'])} threads kept by the filters"
        meta += f" · tokenizer {tok['name']}" if tok else " · no tokenizer (character counts only)"
    else:
        s = report["shards"]
        title = f"Shard statistics: {s['build']['path']}"
        meta = f"{count(s['totals']['rows'])} rows, {count(s['totals']['tokens'])} tokens "
        meta += f"({percent(s['totals']['trainable_tokens'], s['totals']['tokens'])} trainable) in {count(s['totals']['shards'])} shards"
        meta += f" · tokenizer {(report.get('tokenizer') or {}).get('name')}"
    meta += f" · oasst-data {report['package_version']}"
    return title, meta


def render_html(report: dict) -> str:
    """The whole page as a string."""
    title, meta = _header(report)
    charts = _export_charts(report) if report["kind"] == "export" else _shard_charts(report)
    blocks = []
    for section in report_sections(report):
        figures = "".join(f"<div>{svg}</div>" for svg in charts.get(section.key, []))
        blocks.append(f'<section id="{escape(section.key)}"><div><h2>{escape(section.title)}</h2>{_table(section)}</div>{figures}</section>')
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
        f'<body><h1>{escape(title)}</h1><div class="meta">{escape(meta)}</div>{"".join(blocks)}</body></html>\n'
    )
