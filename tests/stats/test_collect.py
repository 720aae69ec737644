"""The one-pass collector: batching and spilling change nothing; no texts kept; deep trees."""

from __future__ import annotations

import pyarrow.parquet as pq

from oasst_data.config import ThreadConfig
from oasst_data.funnel import Funnel
from oasst_data.readers.oasst import LocatedTree, OasstExportReader
from oasst_data.records import ExportMessage, ExportMessageTree
from oasst_data.stats import export_stats
from oasst_data.stats.collect import RowCollector, StatsExtractor
from oasst_data.stats.export_summary import summarize_export
from oasst_data.stats.histogram import length_histogram
from oasst_data.stats.tokens import TokenCounter

from .helpers import ALPACA, TOKENIZER, TREES


def test_small_batches_give_the_same_report():
    whole = export_stats([TREES], [str(ALPACA)], tokenizer=TOKENIZER)
    batched = export_stats([TREES], [str(ALPACA)], tokenizer=TOKENIZER, batch_rows=3)
    assert batched == whole


def test_each_alpaca_source_is_read_once(monkeypatch):
    from oasst_data.readers import alpaca

    opened = []
    original = alpaca.AlpacaReader.__iter__

    def counting_iter(self):
        opened.append(self)
        return original(self)

    monkeypatch.setattr(alpaca.AlpacaReader, "__iter__", counting_iter)
    report = export_stats([TREES], [str(ALPACA)], tokenizer=TOKENIZER)
    assert len(opened) == 1
    # Every record reaches the counts, the one the thread filter drops (empty output) too.
    alpaca_counts = next(row for row in report["export"]["sources"] if row["source"] == "alpaca")
    assert alpaca_counts == {"source": "alpaca", "trees": 5, "messages": 10, "threads": 4}


def test_spilled_rows_hold_no_text_and_flush_in_batches(tmp_path):
    collector = RowCollector(tmp_path, TokenCounter.load(TOKENIZER), batch_rows=5, batch_texts=4)
    for located in OasstExportReader([TREES]):
        collector.add_tree(located)
    collector.close()
    messages = pq.ParquetFile(tmp_path / "messages.parquet")
    assert messages.metadata.num_rows == 46
    assert messages.metadata.num_row_groups >= 46 // 5  # written batch by batch, not at the end
    assert "text" not in messages.schema_arrow.names
    table = messages.read(columns=["message_id", "text_chars", "tokens"]).to_pylist()
    chars = {row["message_id"]: row["text_chars"] for row in table}
    assert chars["m1"] == len("What is two plus two?") and chars["g1"] == len("Wie spät ist es?")
    assert all(row["tokens"] is not None and row["tokens"] > 0 for row in table)


def test_token_counts_keep_marker_text_plain():
    counter = TokenCounter.load(TOKENIZER)
    plain = counter.count(["ends with x"])[0]
    # A literal marker typed in a message is several ordinary tokens, never one control id.
    assert counter.count(["<|endoftext|>"])[0] > 1
    assert counter.count(["ends with x<|assistant|>"])[0] > plain + 1


def test_thread_tokens_are_message_tokens_plus_two_per_turn():
    counter = TokenCounter.load(TOKENIZER)
    report = export_stats([TREES], config=ThreadConfig(tree_states="*", lang="de"), tokenizer=counter)
    # t-german is the only German tree: one thread of g1 + g2.
    g1, g2 = counter.count(["Wie spät ist es?", "Es ist Mittag."])
    t = report["export"]["threads"]
    assert report["export"]["totals"]["threads"] == 1
    assert t["tokens_total"] == g1 + g2 + 4
    assert t["trainable_tokens_total"] == g2 + 1


def test_system_prompt_is_counted_like_a_turn():
    counter = TokenCounter.load(TOKENIZER)
    base = export_stats([TREES], tokenizer=counter)["export"]["threads"]
    with_system = export_stats([TREES], config=ThreadConfig(system_prompt="Be brief."), tokenizer=counter)["export"]["threads"]
    (system,) = counter.count(["Be brief."])
    assert with_system["tokens_total"] == base["tokens_total"] + 12 * (system + 2)
    assert with_system["trainable_tokens_total"] == base["trainable_tokens_total"]


def test_a_20000_message_chain_needs_no_recursion(tmp_path):
    # Built in Python (the JSON reader itself stops at the parser's nesting limit), bottom-up.
    depth = 20_000
    node = None
    for index in range(depth - 1, -1, -1):
        role = "prompter" if index % 2 == 0 else "assistant"
        node = ExportMessage(message_id=f"c{index}", text="t", role=role, lang="en", review_result=True, replies=[node] if node else [])
    located = LocatedTree(ExportMessageTree(message_tree_id="chain", prompt=node, tree_state="ready_for_export"), "chain", 1)
    collector = RowCollector(tmp_path)
    extractor = StatsExtractor(ThreadConfig(val_split=0.0), collector)
    funnel = Funnel(trees_read=1)
    for thread in extractor.tree_threads(located, funnel):
        collector.add_thread(thread)
    collector.close()
    e = summarize_export(tmp_path, with_tokens=False)
    assert e["depth"]["max"] == depth
    assert e["totals"] == {"trees": 1, "messages": depth, "threads": 1}
    assert e["threads"]["turns"] == [{"turns": depth, "count": 1}]
    assert e["branching"]["replies"] == [{"replies": 0, "count": 1}, {"replies": 1, "count": depth - 1}]


def test_length_histogram_bins_by_hand():
    h = length_histogram({"train": {1: 1, 64: 2, 65: 1, 5000: 1}, "validation": {2048: 3}}, 2048)
    assert h["bin_width"] == 64 and len(h["bins"]) == 32
    assert h["bins"][0] == {"min_length": 1, "max_length": 64, "rows": {"train": 3, "validation": 0}}
    assert h["bins"][1]["rows"] == {"train": 1, "validation": 0}
    # Longer than max_length: counted in the last bin.
    assert h["bins"][-1] == {"min_length": 1985, "max_length": 2048, "rows": {"train": 1, "validation": 3}}


def test_summary_from_counts_matches_numpy_quantiles():
    import numpy as np

    from oasst_data.stats.summary import QUANTILES, summary_from_counts

    rng = np.random.default_rng(3)
    values = rng.integers(1, 40, size=501)
    distinct, counts = np.unique(values, return_counts=True)
    summary = summary_from_counts(zip(distinct.tolist(), counts.tolist()))
    assert (summary["count"], summary["sum"], summary["min"], summary["max"]) == (501, int(values.sum()), int(values.min()), int(values.max()))
    assert summary["mean"] == round(float(values.mean()), 6)
    for name, q in QUANTILES:
        assert summary[name] == round(float(np.quantile(values, q)), 6)
    # By hand: the median of [2, 4] is 3.0, p10 is 2.2.
    small = summary_from_counts([(4, 1), (2, 1)])
    assert (small["p50"], small["p10"]) == (3.0, 2.2)


def test_marker_text_is_counted_with_the_tokenizers_eos_and_special_tokens(tmp_path):
    """As the build counts it: with a `</s>` tokenizer a literal `</s>` is marker text, and so is
    `<|endoftext|>`, still a special token of that tokenizer; plain `</ s>` is not."""
    counter = TokenCounter.load(TOKENIZER)
    counter.loaded.tokenizer.eos_token = "</s>"
    collector = RowCollector(tmp_path, counter)
    root = ExportMessage(message_id="q", text="What is </s>?", role="prompter", replies=[
        ExportMessage(message_id="a", text="Pythia's <|endoftext|> is special too.", role="assistant", replies=[
            ExportMessage(message_id="b", text="Not </ s>.", role="prompter", replies=[])])])
    collector.add_tree(LocatedTree(ExportMessageTree(message_tree_id="q", prompt=root), "x.jsonl", 1))
    collector.close()
    marked = {row["message_id"]: row["marker_text"] for row in pq.read_table(tmp_path / "messages.parquet").to_pylist()}
    assert marked == {"q": True, "a": True, "b": False}


def test_stats_with_a_tokenizer_refuses_a_system_prompt_holding_one_of_its_special_tokens():
    """As the build refuses it (a review: `stats --tokenizer --system "x <|padding|>"` counted it silently)."""
    import pytest

    from oasst_data.errors import ConfigError

    with pytest.raises(ConfigError, match=r"system_prompt holds <\|padding\|>, a special token of the tokenizer"):
        export_stats([TREES], config=ThreadConfig(system_prompt="x <|padding|> y"), tokenizer=TOKENIZER)
    export_stats([TREES], config=ThreadConfig(system_prompt="x <|padding|> y"))  # no tokenizer: no special tokens known but the markers
