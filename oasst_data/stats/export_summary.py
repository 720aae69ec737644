"""The numbers of an export, aggregated by polars from the spilled flat rows (lazy scans).

Only narrow columns (lengths, flags, group keys) are ever loaded, never texts; the
grouped results are small (a row per language, depth, label...), and distributions come
from counts per distinct value (summary.py), so memory does not grow with the rows.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .histogram import length_histogram
from .summary import COUNT, empty_summary, number, summaries, summary_from_counts, value_counts

TOP_LANGUAGES = 20
ROLES = ("prompter", "assistant")


def _scan(folder: Path, name: str) -> pl.LazyFrame:
    return pl.scan_parquet(folder / f"{name}.parquet", glob=False)


def summarize_export(folder: Path, with_tokens: bool, max_length: int | None = None, top_languages: int = TOP_LANGUAGES) -> dict:
    folder = Path(folder)
    messages = _scan(folder, "messages")
    # One row per tree, except thread records: one per record, holding the messages it was first to bring.
    trees = (
        _scan(folder, "trees")
        .group_by("source", "tree_id", maintain_order=True)
        .agg(pl.col("tree_state").first(), pl.col("lang").first(), pl.col("messages").cast(pl.Int64).sum(), pl.col("max_depth").max())
    )
    threads = _scan(folder, "threads")
    labels = _scan(folder, "labels")
    # Alpaca records carry no review, state or rank: those counts are of Open-Assistant data only
    # (999 Alpaca records read as "review_result missing 1,998" and 999 trees of no state).
    oasst = pl.col("source") == "oasst"
    assistant = (pl.col("role") == "assistant") & oasst
    group = pl.col("assistant_replies") >= 2
    queries = {
        "trees_by_source": trees.group_by("source").agg(pl.len().alias("trees"), pl.col("messages").cast(pl.Int64).sum().alias("messages")),
        "threads_by_source": threads.group_by("source").agg(pl.len().alias("threads")),
        "tree_states": trees.filter(oasst).group_by("tree_state").agg(pl.len().alias("trees"), pl.col("messages").cast(pl.Int64).sum().alias("messages")),
        "lang_messages": messages.group_by("lang").agg(pl.len().alias("messages")),
        "lang_trees": trees.group_by("lang").agg(pl.len().alias("trees")),
        "lang_threads": threads.group_by("lang").agg(pl.len().alias("threads")),
        "roles": messages.group_by("role").agg(pl.len().alias("messages")),
        "role_chars": value_counts(messages, ["role"], "text_chars"),
        "role_tokens": value_counts(messages, ["role"], "tokens"),
        "message_depth": messages.group_by("depth").agg(pl.len().alias("count")),
        "tree_depth": trees.group_by("max_depth").agg(pl.len().alias("count")),
        "replies": messages.group_by("n_replies").agg(pl.len().alias("count")),
        "flags": messages.select(
            pl.col("synthetic").sum().alias("synthetic"),
            pl.col("deleted").sum().alias("deleted"),
            (pl.col("review_result") == False).sum().alias("review_result_false"),  # noqa: E712 (polars expression)
            (pl.col("review_result").is_null() & oasst).sum().alias("review_result_missing"),
            pl.col("marker_text").sum().alias("marker_text"),
            pl.col("blank_text").sum().alias("blank_text"),
        ),
        "ranks": messages.select(
            assistant.sum().alias("assistants"),
            (assistant & pl.col("ranked")).sum().alias("ranked"),
            (assistant & ~pl.col("ranked")).sum().alias("unranked"),
            (assistant & ~pl.col("ranked") & (pl.col("n_siblings") > 0)).sum().alias("unranked_with_siblings"),
            group.sum().alias("sibling_groups"),
            (group & (pl.col("ranked_assistant_replies") == pl.col("assistant_replies"))).sum().alias("sibling_groups_fully_ranked"),
        ),
        "synthetic_models": messages.filter(pl.col("synthetic")).group_by("model_name").agg(pl.len().alias("messages")),
        "labels": labels.group_by("label").agg(
            pl.col("value").count().alias("messages"),
            pl.col("value").is_null().sum().alias("without_value"),
            pl.col("count").sum().alias("votes"),
        ),
        "label_values": value_counts(labels, ["label"], "value"),
        "threads": threads.select(
            pl.len().alias("threads"),
            pl.col("tokens").sum().alias("tokens_total"),
            pl.col("trainable_tokens").sum().alias("trainable_tokens_total"),
            (pl.col("tokens") > (max_length or 0)).sum().alias("over_max_length"),
        ),
        "thread_chars": value_counts(threads, [], "chars"),
        "threads_by_split": threads.group_by("split").agg(pl.len().alias("threads"), pl.col("tokens").sum().alias("tokens")),
        "thread_turns": threads.group_by("turns").agg(pl.len().alias("count")),
        # Tree ids are unique per source only (an Alpaca record is a tree of its own).
        "threads_per_tree": threads.group_by("source", "tree_id").agg(pl.len().alias("threads")).group_by("threads").agg(pl.len().alias("trees")),
        "thread_tokens": value_counts(threads, ["split"], "tokens"),
    }
    names = list(queries)
    frames = dict(zip(names, pl.collect_all([queries[n] for n in names], engine="streaming")))
    return _assemble(frames, with_tokens, max_length, top_languages)


def _assemble(f: dict[str, pl.DataFrame], with_tokens: bool, max_length: int | None, top_languages: int) -> dict:
    by_source: dict[str, dict] = {}
    for row in f["trees_by_source"].to_dicts():
        by_source.setdefault(row["source"], {"trees": 0, "messages": 0, "threads": 0}).update(trees=row["trees"], messages=int(row["messages"] or 0))
    for row in f["threads_by_source"].to_dicts():
        by_source.setdefault(row["source"], {"trees": 0, "messages": 0, "threads": 0})["threads"] = row["threads"]
    sources = [{"source": name} | counts for name, counts in sorted(by_source.items())]

    flags = {k: int(v or 0) for k, v in f["flags"].to_dicts()[0].items()}
    ranks = {k: int(v or 0) for k, v in f["ranks"].to_dicts()[0].items()}
    thread_row = f["threads"].to_dicts()[0]
    thread_count = int(thread_row["threads"])
    message_depth = sorted(f["message_depth"].to_dicts(), key=lambda r: r["depth"])
    tree_depth = sorted(({"depth": r["max_depth"], "count": r["count"]} for r in f["tree_depth"].to_dicts()), key=lambda r: r["depth"])
    replies = sorted(f["replies"].to_dicts(), key=lambda r: r["n_replies"])
    inner = [r for r in replies if r["n_replies"] > 0]
    inner_messages = sum(r["count"] for r in inner)
    languages, other = _languages(f, top_languages)
    return {
        "totals": {
            "trees": sum(s["trees"] for s in sources),
            "messages": sum(s["messages"] for s in sources),
            "threads": thread_count,
        },
        "sources": sources,
        "tree_states": sorted(
            ({"tree_state": r["tree_state"], "trees": r["trees"], "messages": int(r["messages"] or 0)} for r in f["tree_states"].to_dicts()),
            key=lambda r: (-r["trees"], r["tree_state"] or ""),
        ),
        "languages": languages,
        "languages_other": other,
        "roles": _roles(f, with_tokens),
        "depth": {
            "max": max((r["depth"] for r in message_depth), default=0),
            "messages": message_depth,
            "trees": tree_depth,
        },
        "branching": {
            "max_replies": max((r["n_replies"] for r in replies), default=0),
            "leaves": sum(r["count"] for r in replies if r["n_replies"] == 0),
            "mean_replies_of_inner": number(sum(r["n_replies"] * r["count"] for r in inner) / inner_messages) if inner_messages else None,
            "replies": [{"replies": r["n_replies"], "count": r["count"]} for r in replies],
        },
        "flags": flags,
        "ranks": ranks,
        "synthetic_models": sorted(
            f["synthetic_models"].to_dicts(), key=lambda r: (-r["messages"], r["model_name"] is None, r["model_name"] or "")
        ),
        "labels": _labels(f),
        "threads": {
            "by_split": {r["split"]: r["threads"] for r in sorted(f["threads_by_split"].to_dicts(), key=lambda r: r["split"])},
            "tokens_by_split": (
                {r["split"]: int(r["tokens"] or 0) for r in sorted(f["threads_by_split"].to_dicts(), key=lambda r: r["split"])}
                if with_tokens
                else None
            ),
            "turns": sorted(({"turns": r["turns"], "count": r["count"]} for r in f["thread_turns"].to_dicts()), key=lambda r: r["turns"]),
            "per_tree": sorted(({"threads": r["threads"], "trees": r["trees"]} for r in f["threads_per_tree"].to_dicts()), key=lambda r: r["threads"]),
            "chars": summaries(f["thread_chars"], [], "chars").get((), empty_summary()),
            "tokens": _merged_summary(f["thread_tokens"], "tokens") if with_tokens else None,
            "tokens_total": int(thread_row["tokens_total"] or 0) if with_tokens else None,
            "trainable_tokens_total": int(thread_row["trainable_tokens_total"] or 0) if with_tokens else None,
            "max_length": max_length if with_tokens else None,
            "over_max_length": int(thread_row["over_max_length"] or 0) if with_tokens and max_length else None,
            "length_histogram": _thread_histogram(f["thread_tokens"], max_length) if with_tokens and max_length else None,
        },
    }


def _roles(f: dict[str, pl.DataFrame], with_tokens: bool) -> list[dict]:
    messages = {r["role"]: r["messages"] for r in f["roles"].to_dicts()}
    chars = summaries(f["role_chars"], ["role"], "text_chars")
    tokens = summaries(f["role_tokens"], ["role"], "tokens")
    return [
        {
            "role": role,
            "messages": int(messages.get(role, 0)),
            "chars": chars.get((role,), empty_summary()),
            "tokens": tokens.get((role,), empty_summary()) if with_tokens else None,
        }
        for role in ROLES
    ]


def _labels(f: dict[str, pl.DataFrame]) -> list[dict]:
    values = summaries(f["label_values"], ["label"], "value")
    out = []
    for r in sorted(f["labels"].to_dicts(), key=lambda r: r["label"]):
        summary = values.get((r["label"],), empty_summary())
        out.append(
            {"label": r["label"], "messages": int(r["messages"]), "without_value": int(r["without_value"]), "votes": int(r["votes"] or 0)}
            | {k: v for k, v in summary.items() if k not in ("count", "sum")}
        )
    return out


def _merged_summary(counts: pl.DataFrame, column: str) -> dict:
    """One summary over all keys of a value_counts frame (e.g. thread tokens of every split)."""
    return summary_from_counts((row[column], row[COUNT]) for row in counts.iter_rows(named=True))


def _languages(f: dict[str, pl.DataFrame], top: int) -> tuple[list[dict], dict]:
    table: dict = {}
    for name, column in (("lang_messages", "messages"), ("lang_trees", "trees"), ("lang_threads", "threads")):
        for row in f[name].to_dicts():
            table.setdefault(row["lang"], {"messages": 0, "trees": 0, "threads": 0})[column] = int(row[column])
    ordered = sorted(table.items(), key=lambda item: (-item[1]["messages"], item[0] is None, item[0] or ""))
    kept = [{"lang": lang} | counts for lang, counts in ordered[:top]]
    rest = ordered[top:]
    other = {
        "langs": len(rest),
        "messages": sum(c["messages"] for _, c in rest),
        "trees": sum(c["trees"] for _, c in rest),
        "threads": sum(c["threads"] for _, c in rest),
    }
    return kept, other


def _thread_histogram(frame: pl.DataFrame, max_length: int) -> dict:
    per_split: dict[str, dict[int, int]] = {}
    for row in frame.iter_rows(named=True):
        per_split.setdefault(row["split"], {})[row["tokens"]] = row[COUNT]
    return length_histogram(per_split, max_length)
