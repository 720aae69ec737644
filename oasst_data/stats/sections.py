"""A stats report as titled tables of formatted strings, shared by every rendering.

The terminal (rich), Markdown and HTML renderings draw the same `Section`s, so they show the
same figures; HTML adds charts beside the sections whose `key` it knows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .format import count, decimal, lang_name, percent


@dataclass
class Section:
    key: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    left: int = 1  # how many leading columns are text (left-aligned); the rest are numbers
    caption: str | None = None
    header: bool = True  # False: a two-column "figure / value" list

    def add(self, *cells: str) -> None:
        self.rows.append([str(c) for c in cells])


def _figures(key: str, title: str, rows: list[tuple[str, str]], numbers: bool = True) -> Section:
    section = Section(key, title, ["figure", "value"], left=1 if numbers else 2, header=False)
    for name, value in rows:
        section.add(name, value)
    return section


def _summary_cells(summary: dict | None) -> list[str]:
    s = summary or {}
    return [count(s.get("count")), decimal(s.get("mean")), decimal(s.get("p50")), decimal(s.get("p90")), decimal(s.get("max"))]


def funnel_section(funnel: dict, key: str, title: str) -> Section | None:
    """Read -> kept -> candidates -> drops by reason -> threads, one column per source."""
    by_source = funnel.get("by_source") or {}
    if not by_source:
        return None
    columns = sorted(by_source)
    data = {name: by_source[name] for name in columns}
    if len(columns) > 1:
        data["total"] = funnel
        columns.append("total")
    section = Section(key, title, ["stage", *columns])

    def row(label: str, getter) -> None:
        section.add(label, *[count(getter(data[name])) for name in columns])

    row("records read", lambda f: f["records_read"])
    row("  bad records", lambda f: f["bad_records"])
    row("trees read", lambda f: f["trees_read"])
    for reason in sorted(funnel.get("tree_drops", {})):
        row(f"  - dropped: {reason}", lambda f, r=reason: f["tree_drops"].get(r, 0))
    row("trees kept", lambda f: f["trees_kept"])
    row("candidate threads", lambda f: f["candidates"])
    for reason in sorted(funnel.get("thread_drops", {})):
        row(f"  - dropped: {reason}", lambda f, r=reason: f["thread_drops"].get(r, 0))
    row("threads", lambda f: f["threads"])
    for split in ("train", "validation"):
        row(f"  {split}", lambda f, s=split: f["threads_by_split"].get(s, 0))
    return section


def export_sections(report: dict) -> list[Section]:
    e = report["export"]
    totals = e["totals"]
    flags = e["flags"]
    overview = [
        ("trees", count(totals["trees"])),
        ("messages", count(totals["messages"])),
        ("threads kept by the filters", count(totals["threads"])),
        ("synthetic messages", count(flags["synthetic"])),
        ("deleted messages", count(flags["deleted"])),
        ("review_result false", count(flags["review_result_false"])),
        ("review_result missing", count(flags["review_result_missing"])),
        ("messages with marker text", count(flags["marker_text"])),
        ("messages with blank text", count(flags["blank_text"])),
        ("deepest message (depth)", count(e["depth"]["max"])),
        ("leaves", count(e["branching"]["leaves"])),
    ]
    if len(e["sources"]) > 1:
        overview += [(f"{s['source']}: trees / messages", f"{count(s['trees'])} / {count(s['messages'])}") for s in e["sources"]]
    out = [_figures("overview", "Export", overview)]

    states = Section("tree_states", "Tree states", ["tree_state", "trees", "messages"])
    for row in e["tree_states"]:
        states.add(row["tree_state"] or "(none)", count(row["trees"]), count(row["messages"]))
    out.append(states)

    langs = Section("languages", "Languages (trees: by root)", ["lang", "messages", "trees", "threads"])
    for row in e["languages"]:
        langs.add(lang_name(row["lang"]), count(row["messages"]), count(row["trees"]), count(row["threads"]))
    other = e["languages_other"]
    if other["langs"]:
        langs.add(f"other ({other['langs']})", count(other["messages"]), count(other["trees"]), count(other["threads"]))
    out.append(langs)

    roles = Section("roles", "Text length per role", ["role", "unit", "messages", "mean", "p50", "p90", "max"], left=2)
    for row in e["roles"]:
        roles.add(row["role"], "chars", *_summary_cells(row["chars"]))
        if row["tokens"] is not None:
            roles.add("", "tokens", *_summary_cells(row["tokens"]))
    out.append(roles)

    depth = Section("depth", "Depth (root = 1)", ["depth", "messages", "trees"], caption="trees: by deepest message")
    trees_at = {r["depth"]: r["count"] for r in e["depth"]["trees"]}
    for row in e["depth"]["messages"]:
        depth.add(str(row["depth"]), count(row["count"]), count(trees_at.get(row["depth"], 0)))
    out.append(depth)

    replies = Section("branching", "Replies per message", ["replies", "messages"])
    for row in e["branching"]["replies"]:
        replies.add(str(row["replies"]), count(row["count"]))
    out.append(replies)

    r = e["ranks"]
    out.append(
        _figures(
            "ranks",
            "Rank coverage (assistants)",
            [
                ("assistant messages", count(r["assistants"])),
                ("with a rank", f"{count(r['ranked'])} ({percent(r['ranked'], r['assistants'])})"),
                ("without a rank", count(r["unranked"])),
                ("  of them with siblings", count(r["unranked_with_siblings"])),
                ("sibling groups (2+ assistants)", count(r["sibling_groups"])),
                ("  fully ranked", count(r["sibling_groups_fully_ranked"])),
            ],
        )
    )

    if e["synthetic_models"]:
        models = Section("synthetic_models", "Synthetic messages by model", ["model_name", "messages"])
        for row in e["synthetic_models"]:
            models.add(row["model_name"] or "(none)", count(row["messages"]))
        out.append(models)

    if e["labels"]:
        labels = Section("labels", "Labels (mean value per message)", ["label", "msgs", "mean", "p10", "p50", "p90", "max"])
        for row in e["labels"]:
            labels.add(row["label"], count(row["messages"]), *[decimal(row[k], 3) for k in ("mean", "p10", "p50", "p90", "max")])
        out.append(labels)

    t = e["threads"]
    threads = Section("threads", "Threads kept by the filters", ["split", "threads", "tokens"])
    for split, n in t["by_split"].items():
        threads.add(split, count(n), count((t["tokens_by_split"] or {}).get(split)))
    if t["tokens_total"] is not None:
        threads.caption = (
            f"trainable tokens {count(t['trainable_tokens_total'])}; "
            f"over {count(t['max_length'])} tokens: {count(t['over_max_length'])}"
        )
    out.append(threads)

    lengths = Section("thread_lengths", "Thread length", ["unit", "threads", "mean", "p50", "p90", "max"])
    lengths.add("chars", *_summary_cells(t["chars"]))
    if t["tokens"] is not None:
        lengths.add("tokens", *_summary_cells(t["tokens"]))
    out.append(lengths)

    if t.get("length_histogram"):
        histogram = _histogram_section("thread_length_histogram", "Thread length histogram (tokens)", t["length_histogram"], open_ended=True)
        histogram.caption = "empty bins left out; the last holds longer threads too"
        out.append(histogram)

    if t["turns"]:
        turns = Section("thread_turns", "Turns per thread", ["turns", "threads"])
        for row in t["turns"]:
            turns.add(str(row["turns"]), count(row["count"]))
        out.append(turns)
    if t["per_tree"]:
        per_tree = Section("threads_per_tree", "Threads per tree", ["threads", "trees"])
        for row in t["per_tree"]:
            per_tree.add(str(row["threads"]), count(row["trees"]))
        trees = sum(row["trees"] for row in t["per_tree"])
        per_tree.caption = f"{count(trees)} trees gave threads, {decimal(sum(row['threads'] * row['trees'] for row in t['per_tree']) / trees)} each on average"
        out.append(per_tree)

    funnel = funnel_section(e["funnel"], "funnel", "Drop funnel (these filters)")
    if funnel is not None:
        out.append(funnel)
    return out


def _filters_line(filters: dict) -> str:
    scope = f" ({filters['lang_scope']})" if filters.get("lang_scope") else ""
    parts = [f"lang={filters.get('lang')}{scope}", f"synthetic={filters.get('synthetic')}"]
    if filters.get("top_k") is not None:
        parts.append(f"top_k={filters['top_k']}")
    for key in ("max_label", "min_label"):
        for item in filters.get(key) or ():
            parts.append(f"{key}:{item}")
    return " ".join(parts)


def _selection_line(filters: dict) -> str:
    line = f"{filters.get('tree_states')} / {filters.get('val_split')}"
    return line + (" / system prompt" if filters.get("system_prompt") is not None else "")


def _histogram_section(key: str, title: str, histogram: dict, splits: list[str] | None = None, open_ended: bool = False) -> Section:
    """Non-empty bins, a column per split; `open_ended`: the last bin also counts longer lengths."""
    bins = histogram["bins"]
    splits = splits if splits is not None else (list(bins[0]["rows"]) if bins else [])
    section = Section(key, title, ["tokens", *splits])
    for index, entry in enumerate(bins):
        if any(entry["rows"].values()):
            last = open_ended and index == len(bins) - 1
            label = f"{entry['min_length']}+" if last else f"{entry['min_length']}-{entry['max_length']}"
            section.add(label, *[count(entry["rows"].get(split, 0)) for split in splits])
    return section


def shard_sections(report: dict) -> list[Section]:
    s = report["shards"]
    build = s["build"]
    config = build["build_config"]
    tokenizer = report.get("tokenizer") or {}
    out = [
        _figures(
            "build",
            f"Build {build['path']}",
            [
                ("tokenizer", str(tokenizer.get("name"))),
                ("fingerprint", str(tokenizer.get("fingerprint", ""))[:16]),
                ("vocab size", count(tokenizer.get("vocab_size"))),
                ("max length / overflow", f"{config.get('max_length')} / {config.get('overflow')}"),
                ("filters", _filters_line(report.get("config") or {})),
                ("tree states / val split", _selection_line(report.get("config") or {})),
                ("config hash", str(build.get("config_hash", ""))[:16]),
                ("shards", count(s["totals"]["shards"])),
                ("totals match manifest", "yes" if s["totals"]["matches_manifest"] else "NO"),
            ],
            numbers=False,
        )
    ]
    splits = Section("splits", "Splits", ["split", "rows", "tokens", "trainable", "truncated"])
    for row in s["splits"]:
        splits.add(row["split"], count(row["rows"]), count(row["tokens"]), count(row["trainable_tokens"]), count(row["truncated_rows"]))
    out.append(splits)

    lengths = Section("row_lengths", "Row length (tokens)", ["split", "mean", "p10", "p50", "p90", "p99", "max"])
    for row in s["splits"]:
        L = row["length"]
        lengths.add(row["split"], *[decimal(L[k]) for k in ("mean", "p10", "p50", "p90", "p99", "max")])
    out.append(lengths)

    histogram = _histogram_section("length_histogram", "Token-length histogram (rows)", s["length_histogram"], [r["split"] for r in s["splits"]])
    histogram.caption = "empty bins left out"
    out.append(histogram)

    sizes = sorted({int(k) for b in s["buckets"] for k in b["padding_waste"]})
    buckets = Section("buckets", "Buckets: padding at batch size", ["split", "bucket", "lengths", "rows", *[f"b={n}" for n in sizes]])
    for row in s["buckets"]:
        buckets.add(
            row["split"], str(row["bucket"]), f"{row['min_length']}-{row['max_length']}", count(row["rows"]),
            *[percent(row["padding_waste"][str(n)]) for n in sizes],
        )
    out.append(buckets)

    padding = Section("padding", "Padding: bucketed vs random", ["split", "batch", "bucketed", "random"])
    for row in s["padding"]:
        padding.add(row["split"], str(row["batch_size"]), percent(row["bucketed"]), percent(row["random"]))
    for row in s.get("token_budget_padding", []):
        padding.add(row["split"], f"{row['batch_tokens']:,} tokens", percent(row["bucketed"]), "")
    # The build's own figure (all rows of both splits), the one `build` prints and the README quotes.
    built = build.get("manifest_padding") or {}
    for size in built.get("batch_sizes", []):
        padding.add("all (manifest)", str(size), percent(built["bucketed"][str(size)]), percent(built["random"][str(size)]))
    if built.get("token_budget"):
        padding.add("all (manifest)", f"{built['token_budget']['batch_tokens']:,} tokens", percent(built["token_budget"]["bucketed"]), "")
    out.append(padding)

    sources = Section("sources", "Sources", ["split", "source", "rows", "tokens", "trainable"], left=2)
    for row in s["sources"]:
        sources.add(row["split"], row["source"], count(row["rows"]), count(row["tokens"]), count(row["trainable_tokens"]))
    out.append(sources)

    split_names = [row["split"] for row in s["splits"]]
    turns = Section("turns", "Turns per row", ["turns", *split_names])
    rows_at = {(row["split"], row["turns"]): row["rows"] for row in s["turns"]}
    for n in sorted({row["turns"] for row in s["turns"]}):
        turns.add(str(n), *[count(rows_at.get((split, n), 0)) for split in split_names])
    out.append(turns)

    langs = Section("languages", "Languages", ["lang", "rows", "tokens", "trainable"])
    for row in s["languages"]:
        langs.add(lang_name(row["lang"]), count(row["rows"]), count(row["tokens"]), count(row["trainable_tokens"]))
    other = s["languages_other"]
    if other["langs"]:
        langs.add(f"other ({other['langs']})", count(other["rows"]), count(other["tokens"]), count(other["trainable_tokens"]))
    out.append(langs)

    o = s["overflow"]
    out.append(
        _figures(
            "overflow",
            "Rows truncated or dropped",
            [
                ("threads extracted", count(o["threads"])),
                ("rows written", count(o["rows_written"])),
                ("truncated", f"{count(o['rows_truncated'])} ({percent(o['truncated_share'])} of rows)"),
                ("dropped: over max length", count(o["rows_dropped_overflow"])),
                ("dropped: no trainable token", count(o["rows_dropped_no_trainable_tokens"])),
                ("dropped share of threads", percent(o["dropped_share"])),
                ("messages with marker text", count(o["marker_text_messages"])),
            ],
        )
    )
    funnel = funnel_section(s["funnel"], "funnel", "Drop funnel (as built)")
    if funnel is not None:
        out.append(funnel)
    return out


def report_sections(report: dict) -> list[Section]:
    return export_sections(report) if report["kind"] == "export" else shard_sections(report)
