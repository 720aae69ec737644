"""Export statistics on the fixtures, against figures counted BY HAND from fixtures/make_fixtures.py.

No expected number here comes from the code under test. The 12 fixture trees, message by
message (P = prompter, A = assistant; depth; replies):

  t-basic            m1 P 1 (2) > m2 A 2 (1) > m4 P 3 (1) > m5 A 4 (0); m1 > m3 A 2 (0)
  t-prompter-leaves  p1 P 1 (2) > a1 A 2 (2) > p2 P 3, p3 P 3; p1 > a2 A 2 (1) > p4 P 3 (1) > a3 A 4
  t-synthetic-deep   s1 P 1 (2) > s2 A 2 (1) > s3 P 3 (1) > s4 A 4 (synthetic, test-model); s1 > s5 A 2
  t-synthetic-trailing-prompter  q1 P 1 > r1 A 2 > q2 P 3 (synthetic, no model_name)
  t-deleted-prompter-leaf        d1 P 1 (2) > d2 A 2 > d3 P 3 (deleted); d1 > d4 A 2
  t-unranked-siblings            u1 P 1 (2) > u2 A 2, u3 A 2 (no ranks)
  t-not-ready (growing), t-review-false (v1 review_result false), t-german (g1, g2 de): P 1 > A 2
  t-mixed-lang       x1 P 1 (2) > x2 A 2 (de), x3 A 2
  t-deep-chain       c0 P 1 > c1 A 2 > ... > c7 A 8
  t-marker-text      k1 P 1 > k2 A 2
"""

from __future__ import annotations

import pytest

from oasst_data.config import ThreadConfig
from oasst_data.errors import BadRecordError, OasstDataError
from oasst_data.stats import export_stats

from ..conftest import FIXTURES
from .helpers import ALPACA, MESSAGES, TREES


@pytest.fixture(scope="module")
def report() -> dict:
    return export_stats([TREES], config=ThreadConfig())


def test_totals_roles_and_sources(report):
    e = report["export"]
    # 5 + 7 + 5 + 3 + 4 + 3 + 2 + 2 + 2 + 3 + 8 + 2 messages in the 12 trees.
    assert e["totals"] == {"trees": 12, "messages": 46, "threads": 12}
    assert e["sources"] == [{"source": "oasst", "trees": 12, "messages": 46, "threads": 12}]
    roles = {r["role"]: r for r in e["roles"]}
    assert roles["prompter"]["messages"] == 22
    assert roles["assistant"]["messages"] == 24
    assert roles["prompter"]["tokens"] is None and report["tokenizer"] is None


def test_text_length_in_characters_per_role(report):
    roles = {r["role"]: r for r in report["export"]["roles"]}
    prompter = roles["prompter"]["chars"]
    # 21+21+13+12+9+7+15+4+7+6+15+12+14+11+16+16+21+4*6+41 characters ("Wie spät ist es?" is 16).
    assert (prompter["count"], prompter["sum"], prompter["min"], prompter["max"]) == (22, 285, 4, 41)
    assert prompter["mean"] == pytest.approx(285 / 22, abs=1e-6)
    assistant = roles["assistant"]["chars"]
    # "Ok."/"No."/"Hi!" are 3; "It ends a turn; <|assistant|> starts a reply." is 45.
    assert (assistant["count"], assistant["sum"], assistant["min"], assistant["max"]) == (24, 252, 3, 45)
    assert assistant["mean"] == 10.5


def test_tree_states_and_languages(report):
    e = report["export"]
    assert e["tree_states"] == [
        {"tree_state": "ready_for_export", "trees": 11, "messages": 44},
        {"tree_state": "growing", "trees": 1, "messages": 2},
    ]
    # de: g1, g2 and x2; every thread has an English root.
    assert e["languages"] == [
        {"lang": "en", "messages": 43, "trees": 11, "threads": 12},
        {"lang": "de", "messages": 3, "trees": 1, "threads": 0},
    ]
    assert e["languages_other"] == {"langs": 0, "messages": 0, "trees": 0, "threads": 0}


def test_depth_and_branching_distributions(report):
    e = report["export"]
    assert e["depth"]["max"] == 8
    assert e["depth"]["messages"] == [
        {"depth": 1, "count": 12},
        {"depth": 2, "count": 18},
        {"depth": 3, "count": 8},
        {"depth": 4, "count": 4},
        {"depth": 5, "count": 1},
        {"depth": 6, "count": 1},
        {"depth": 7, "count": 1},
        {"depth": 8, "count": 1},
    ]
    # Deepest message per tree: 6 trees of depth 2, 2 of 3 (trailing, deleted), 3 of 4, the chain 8.
    assert e["depth"]["trees"] == [{"depth": 2, "count": 6}, {"depth": 3, "count": 2}, {"depth": 4, "count": 3}, {"depth": 8, "count": 1}]
    b = e["branching"]
    assert b["replies"] == [{"replies": 0, "count": 19}, {"replies": 1, "count": 20}, {"replies": 2, "count": 7}]
    assert (b["leaves"], b["max_replies"]) == (19, 2)
    # 46 - 12 roots = 34 replies over 27 messages that have any.
    assert b["mean_replies_of_inner"] == pytest.approx(34 / 27, abs=1e-6)


def test_flags_ranks_and_synthetic_models(report):
    e = report["export"]
    # synthetic: s4, q2; deleted: d3; review_result false: v1; marker text: k1, k2.
    assert e["flags"] == {"synthetic": 2, "deleted": 1, "review_result_false": 1, "review_result_missing": 0, "marker_text": 2, "blank_text": 0}
    # Ranked assistants: m2 m3 m5 a1 a2 s2 s5 d2 d4 x2 x3 k2. Unranked with a sibling: u2, u3.
    # Parents with 2+ assistant replies: m1 p1 s1 d1 u1 x1; all but u1 fully ranked.
    assert e["ranks"] == {
        "assistants": 24,
        "ranked": 12,
        "unranked": 12,
        "unranked_with_siblings": 2,
        "sibling_groups": 6,
        "sibling_groups_fully_ranked": 5,
    }
    assert e["synthetic_models"] == [{"model_name": "test-model", "messages": 1}, {"model_name": None, "messages": 1}]


def test_label_distributions(report):
    labels = {row["label"]: row for row in report["export"]["labels"]}
    assert sorted(labels) == ["quality", "spam"]
    # quality: m2 0.2 (3 votes), m3 0.9 (5 votes); spam: m2 0.0 (3), m3 0.8 (5).
    quality = labels["quality"]
    assert (quality["messages"], quality["votes"], quality["min"], quality["max"]) == (2, 8, 0.2, 0.9)
    assert quality["mean"] == pytest.approx(0.55) and quality["p50"] == pytest.approx(0.55)
    assert quality["p10"] == pytest.approx(0.2 + 0.1 * 0.7)  # linear between the two values
    spam = labels["spam"]
    assert (spam["messages"], spam["votes"], spam["min"], spam["max"]) == (2, 8, 0.0, 0.8)
    assert spam["mean"] == pytest.approx(0.4)


def test_threads_and_funnel_with_default_filters(report):
    e = report["export"]
    t = e["threads"]
    # The 12 threads of tests/test_threads_differential.py: 9 of 2 turns, m5 and a3 of 4, c7 of 8.
    assert t["turns"] == [{"turns": 2, "count": 9}, {"turns": 4, "count": 2}, {"turns": 8, "count": 1}]
    # Two each: t-basic (m5, m3), t-prompter-leaves (a1, a3), t-unranked-siblings, t-mixed-lang;
    # one each: t-synthetic-deep, t-deleted-prompter-leaf, t-deep-chain, t-marker-text; none:
    # t-synthetic-trailing-prompter (its only leaf is synthetic).
    assert t["per_tree"] == [{"threads": 1, "trees": 4}, {"threads": 2, "trees": 4}]
    assert sum(t["by_split"].values()) == 12
    # Characters of the threads' texts: 51 29 18 31 18 20 20 20 27 45 48 86.
    assert (t["chars"]["sum"], t["chars"]["min"], t["chars"]["max"]) == (413, 18, 86)
    assert t["tokens"] is None and t["tokens_total"] is None and t["length_histogram"] is None
    f = e["funnel"]
    assert (f["trees_read"], f["trees_kept"], f["candidates"], f["threads"]) == (12, 9, 15, 12)
    assert f["tree_drops"] == {"lang": 1, "review_result": 1, "tree_state": 1}
    assert f["thread_drops"] == {"deleted": 1, "synthetic": 2}


def test_funnel_shows_what_filters_would_cost():
    report = export_stats([TREES], config=ThreadConfig(top_k=1, max_label=["spam=0.5"]))
    f = report["export"]["funnel"]
    # top_k=1 drops m3 (rank 1; spam 0.8 is checked later), a3, s5, d4, x3 and the unranked siblings u2, u3.
    assert f["thread_drops"] == {"deleted": 1, "synthetic": 2, "top_k": 5, "top_k_unranked": 2}
    assert f["threads"] == 5 == report["export"]["totals"]["threads"]
    # The figures of the export itself do not depend on the filters.
    assert report["export"]["totals"]["messages"] == 46
    assert report["config"]["top_k"] == 1 and report["config"]["max_label"] == ["spam=0.5"]
    only_label = export_stats([TREES], config=ThreadConfig(max_label=["spam=0.5"]))
    assert only_label["export"]["funnel"]["thread_drops"] == {"deleted": 1, "synthetic": 2, "max_label:spam": 1}


@pytest.mark.parametrize("name", ["trees.jsonl.gz", "trees.jsonl.zst"])
def test_compressed_inputs_give_the_same_figures(report, name):
    other = export_stats([FIXTURES / "oasst" / name])
    assert other["export"] == report["export"]


def test_flat_messages_rebuild_the_same_trees():
    # messages.jsonl: t-basic (5 messages) and t-prompter-leaves (7) as shuffled flat rows.
    e = export_stats([MESSAGES])["export"]
    assert e["totals"] == {"trees": 2, "messages": 12, "threads": 4}
    assert e["depth"]["messages"] == [{"depth": 1, "count": 2}, {"depth": 2, "count": 4}, {"depth": 3, "count": 4}, {"depth": 4, "count": 2}]
    labels = {row["label"]: row["messages"] for row in e["labels"]}
    assert labels == {"quality": 2, "spam": 2}  # HF column layout on m3 read too


def test_thread_records_of_the_fixture_trees_describe_the_same_trees_and_messages(report, tmp_path):
    """One record per leaf shares prefixes: each tree and message is described once, labels too."""
    import json

    from ..tree_strategies import thread_records

    trees = [json.loads(line) for line in TREES.read_text(encoding="utf-8").splitlines()]
    records = tmp_path / "threads.jsonl"
    records.write_text("".join(json.dumps(r) + "\n" for tree in trees for r in thread_records(tree)), encoding="utf-8")
    e = export_stats([records])["export"]
    expected = report["export"]
    assert (e["totals"]["trees"], e["totals"]["messages"]) == (12, 46) == (expected["totals"]["trees"], expected["totals"]["messages"])
    for section in ("tree_states", "languages", "roles", "flags", "labels"):
        assert e[section] == expected[section], section
    assert e["depth"]["messages"] == expected["depth"]["messages"] and e["depth"]["trees"] == expected["depth"]["trees"]


def test_alpaca_records_are_two_message_trees():
    e = export_stats(alpaca=[str(ALPACA)])["export"]
    # 5 records; the one with a blank output is dropped by the extractor but still described.
    assert e["totals"] == {"trees": 5, "messages": 10, "threads": 4}
    roles = {r["role"]: r["chars"] for r in e["roles"]}
    # Prompts: 25 + (16 + 1 + 7) + 14 + (20 + 1 + 3) + 24; outputs: 7 + 1 + 5 + 4 + 3.
    assert (roles["prompter"]["sum"], roles["assistant"]["sum"]) == (111, 20)
    assert e["funnel"]["tree_drops"] == {"empty_text": 1}
    assert e["flags"]["blank_text"] == 1  # the blank output
    assert e["sources"] == [{"source": "alpaca", "trees": 5, "messages": 10, "threads": 4}]
    # Alpaca records have no tree state, review or rank: none is counted as missing.
    assert e["tree_states"] == []
    assert e["flags"]["review_result_missing"] == 0
    assert e["ranks"]["assistants"] == 0 and e["ranks"]["unranked"] == 0


def test_export_and_alpaca_together_add_up():
    e = export_stats([TREES], alpaca=[str(ALPACA)])["export"]
    assert e["totals"] == {"trees": 17, "messages": 56, "threads": 16}
    assert [s["source"] for s in e["sources"]] == ["alpaca", "oasst"]
    assert e["funnel"]["by_source"]["alpaca"]["threads"] == 4
    # The Open-Assistant-only sections are those of the export alone.
    alone = export_stats([TREES])["export"]
    for section in ("tree_states", "ranks"):
        assert e[section] == alone[section], section
    assert e["flags"]["review_result_missing"] == alone["flags"]["review_result_missing"]


def test_bad_records_stop_or_are_counted(tmp_path):
    broken = tmp_path / "broken.jsonl"
    lines = TREES.read_text(encoding="utf-8").splitlines()
    broken.write_text("\n".join([lines[0], "{not json", lines[1]]) + "\n", encoding="utf-8")
    with pytest.raises(BadRecordError, match="broken.jsonl:2"):
        export_stats([broken])
    report = export_stats([broken], config=ThreadConfig(on_bad_record="skip"))
    assert report["export"]["totals"]["trees"] == 2
    assert report["export"]["funnel"]["bad_records"] == 1
    assert report["export"]["funnel"]["quarantined"] == 1
    assert not list(tmp_path.glob("*quarantine*"))  # stats only count, they write no quarantine


def test_nothing_to_describe_is_a_user_error(tmp_path):
    with pytest.raises(OasstDataError):
        export_stats([])
    with pytest.raises(OasstDataError, match="no such file"):
        export_stats([tmp_path / "missing.jsonl"])


def test_top_20_languages_then_other(tmp_path):
    import json

    path = tmp_path / "langs.jsonl"
    lines = []
    for i in range(23):  # l00 has 3 messages, the others 2: l00 first, then by code
        replies = [{"message_id": f"a{i}-{j}", "text": "A.", "role": "assistant", "lang": f"l{i:02d}"} for j in range(2 if i == 0 else 1)]
        root = {"message_id": f"p{i}", "text": "Q?", "role": "prompter", "lang": f"l{i:02d}", "review_result": True, "replies": replies}
        lines.append(json.dumps({"message_tree_id": f"t{i}", "tree_state": "ready_for_export", "prompt": root}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    e = export_stats([path], config=ThreadConfig(lang="*"))["export"]
    assert [row["lang"] for row in e["languages"]] == [f"l{i:02d}" for i in range(20)]
    assert e["languages"][0] == {"lang": "l00", "messages": 3, "trees": 1, "threads": 2}
    assert e["languages_other"] == {"langs": 3, "messages": 6, "trees": 3, "threads": 3}


def test_ranks_and_label_counts_beyond_arrow_integers(tmp_path):
    """A rank or a label count is any JSON integer; one beyond int32/int64 crashed the spill
    (OverflowError traceback) instead of being counted."""
    import json as _json

    assistant = {
        "message_id": "a1", "parent_id": "p1", "text": "yo", "role": "assistant", "lang": "en", "review_result": True,
        "rank": 10**30, "labels": {"spam": {"value": 0.1, "count": 10**20}}, "replies": [],
    }
    other = dict(assistant, message_id="a2", rank=3_000_000_000, labels={"spam": {"value": 0.3, "count": 2}})
    unranked = dict(assistant, message_id="a3", labels=None)
    del unranked["rank"]
    prompt = {"message_id": "p1", "text": "hi", "role": "prompter", "lang": "en", "review_result": True, "replies": [assistant, other, unranked]}
    path = tmp_path / "big.jsonl"
    path.write_text(_json.dumps({"message_tree_id": "t1", "tree_state": "ready_for_export", "prompt": prompt}) + "\n")
    report = export_stats([path])
    ranks = report["export"]["ranks"]
    assert (ranks["assistants"], ranks["ranked"], ranks["unranked"], ranks["unranked_with_siblings"]) == (3, 2, 1, 1)
    (spam,) = report["export"]["labels"]
    assert spam["messages"] == 2
    assert spam["votes"] == pytest.approx(10**20 + 2)  # exact below 2**53, as every real count is


def test_trees_set_aside_as_bad_records_are_not_described(tmp_path):
    """With --on-bad-record skip, a repeated tree and a tree whose roles do not alternate are
    quarantined (the funnel counts them as bad records), yet their messages were counted in the
    export's trees, messages, languages and depths: a repeated tree was described twice."""
    import json as _json

    lines = TREES.read_text(encoding="utf-8").splitlines()
    invalid = {"message_tree_id": "bad-roles", "tree_state": "ready_for_export",
               "prompt": {"message_id": "r", "text": "x", "role": "assistant", "lang": "en", "review_result": True}}
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join([lines[0], lines[1], lines[0], _json.dumps(invalid)]) + "\n", encoding="utf-8")
    clean = tmp_path / "clean.jsonl"
    clean.write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
    skipped = export_stats([mixed], config=ThreadConfig(on_bad_record="skip"))["export"]
    expected = export_stats([clean])["export"]
    assert skipped["funnel"]["bad_records"] == 2
    assert skipped["totals"] == expected["totals"]
    assert skipped["depth"] == expected["depth"] and skipped["languages"] == expected["languages"]


def test_threads_per_tree_count_each_alpaca_record_as_a_tree():
    report = export_stats([TREES], [str(ALPACA)])
    alpaca = next(s for s in report["export"]["sources"] if s["source"] == "alpaca")
    assert alpaca["threads"] == 4
    assert report["export"]["threads"]["per_tree"] == [{"threads": 1, "trees": 4 + 4}, {"threads": 2, "trees": 4}]
