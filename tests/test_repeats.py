"""Records read twice across inputs: trees, threads, and messages in two places (oasst_data.repeats)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from oasst_data.config import ThreadConfig
from oasst_data.quarantine import OnBadRecord
from oasst_data.threads import ThreadExtractor, extract_threads

from .conftest import FIXTURES
from .readers.test_bad_input import assert_accounted, assert_one_line_error, skip_run, threads_cli
from .tree_strategies import export_forests, thread_records

TREES = [json.loads(line) for line in (FIXTURES / "oasst" / "trees.jsonl").read_text(encoding="utf-8").splitlines()]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def keys(threads) -> list[tuple]:
    return [(t.tree_id, t.split.value, tuple(turn.id for turn in t.turns)) for t in threads]


def test_threads_of_one_tree_without_a_tree_id_share_its_split(tmp_path):
    """The split is per tree: thread records without message_tree_id go by their root, not their thread_id."""
    records = [r for tree in TREES for r in thread_records(tree, with_tree_id=False)]
    threads, _ = extract_threads([write_jsonl(tmp_path / "threads.jsonl", records)], config=ThreadConfig(val_split=0.5))
    splits: dict[str, set[str]] = {}
    for thread in threads:
        splits.setdefault(thread.tree_id, set()).add(thread.split.value)
    by_root = {tree["prompt"]["message_id"] for tree in TREES}
    assert set(splits) <= by_root and len(splits) >= 5
    assert all(len(sides) == 1 for sides in splits.values()), splits
    assert {side for sides in splits.values() for side in sides} == {"train", "validation"}


def test_a_tree_and_its_threads_given_both_are_trained_on_once(tmp_path):
    trees = write_jsonl(tmp_path / "trees.jsonl", TREES)
    records = [r for tree in TREES for r in thread_records(tree)]
    threads = write_jsonl(tmp_path / "threads.jsonl", records)
    out = tmp_path / "t.jsonl"
    message = assert_one_line_error(threads_cli(str(trees), str(threads), "--out", str(out)), threads, 1, "was already read in the tree")
    assert f"{trees}:1" in message and "a tree and its threads given both" in message

    alone, _, _ = skip_run(tmp_path / "alone.jsonl", str(trees))
    report, entries, _ = skip_run(out, str(trees), str(threads))
    assert report["funnel"]["threads"] == alone["funnel"]["threads"]
    assert report["funnel"]["trees_kept"] == alone["funnel"]["trees_kept"]
    # Every thread record is a repeat, those of trees the filters drop too.
    assert report["funnel"]["tree_drops"]["duplicate_message"] == len(entries) == len(records)
    assert {e["source"] for e in entries} == {str(threads)}
    assert_accounted(report, entries)


def test_a_message_id_in_two_trees_is_a_bad_record(tmp_path):
    second = copy.deepcopy(TREES[0])
    second["message_tree_id"] = "t-other"
    second["prompt"]["message_id"] = "other-root"
    for reply in second["prompt"]["replies"]:
        reply["parent_id"] = "other-root"
    path = write_jsonl(tmp_path / "trees.jsonl", [TREES[0], second])
    message = assert_one_line_error(threads_cli(str(path), "--out", str(tmp_path / "t.jsonl")), path, 2, "a message id in two trees")
    reused = TREES[0]["prompt"]["replies"][0]["message_id"]
    assert f"message {reused} of this tree (tree t-other) was already read in the tree {TREES[0]['message_tree_id']} at {path}:1" in message


def test_thread_records_sharing_a_prefix_are_one_tree_not_repeats(tmp_path):
    records = [r for tree in TREES for r in thread_records(tree)]
    assert any(len(r["thread"]) > 1 and r["thread"][0]["message_id"] == s["thread"][0]["message_id"] for r in records for s in records if r is not s)
    _, funnel = extract_threads([write_jsonl(tmp_path / "threads.jsonl", records)], config=ThreadConfig(val_split=0.0))
    assert not {"duplicate_message", "duplicate_thread"} & set(funnel.tree_drops)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(forest=export_forests(max_size=4))
def test_trees_and_their_threads_in_either_order_give_the_first_inputs_threads(tmp_path, forest):
    trees = write_jsonl(tmp_path / "trees.jsonl", forest)
    threads = write_jsonl(tmp_path / "threads.jsonl", [r for tree in forest for r in thread_records(tree)])
    config = ThreadConfig(val_split=0.3, tree_states=("*",), on_bad_record=OnBadRecord.SKIP, quarantine=tmp_path / "q.jsonl")
    for first, second in [(trees, threads), (threads, trees)]:
        alone = keys(ThreadExtractor(config).run([first]))
        extractor = ThreadExtractor(config)
        both = keys(extractor.run([first, second]))
        assert both == alone
        # Every record of the second input is a repeat, whatever the filters: a thread record of a
        # tree given before it, or a tree whose first thread came before.
        kept = ThreadExtractor(config)
        list(kept.run([first]))
        assert extractor.funnel.trees_kept == kept.funnel.trees_kept
        assert extractor.funnel.tree_drops.get("duplicate_message", 0) == len(second.read_text().splitlines())


def test_a_copy_set_aside_is_not_named_as_the_first_read(tmp_path):
    """A thread record set aside as a repeat is forgotten: a third copy is named against the tree that was kept."""
    trees = write_jsonl(tmp_path / "trees.jsonl", TREES[:1])
    records = thread_records(TREES[0])
    threads = write_jsonl(tmp_path / "threads.jsonl", records)
    again = write_jsonl(tmp_path / "again.jsonl", records)
    report, entries, _ = skip_run(tmp_path / "t.jsonl", str(trees), str(threads), str(again))
    assert len(entries) == 2 * len(records) and report["funnel"]["tree_drops"] == {"duplicate_message": 2 * len(records)}
    assert all(f"at {trees}:1" in e["reason"] for e in entries)
    assert_accounted(report, entries)


def test_thread_records_ending_in_sibling_prompter_leaves_give_one_thread(tmp_path):
    """[Q, A, Q2] and [Q, A, Q3] are two records but, trailing prompters trimmed, one thread [Q, A]."""
    messages = [{"message_id": "p1", "text": "Q", "role": "prompter", "lang": "en", "review_result": True},
                {"message_id": "a1", "parent_id": "p1", "text": "A", "role": "assistant", "lang": "en"}]
    records = [{"thread_id": f"th-{leaf}", "message_tree_id": "p1", "tree_state": "ready_for_export",
                "thread": [*messages, {"message_id": leaf, "parent_id": "a1", "text": leaf, "role": "prompter", "lang": "en"}]}
               for leaf in ("p2", "p3")]
    threads, funnel = extract_threads([write_jsonl(tmp_path / "threads.jsonl", records)], config=ThreadConfig(val_split=0.0))
    assert [t.id for t in threads] == ["a1"]
    assert funnel.thread_drops == {"duplicate_path": 1} and funnel.trees_kept == 2 and funnel.bad_records == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(forest=export_forests(max_size=4))
def test_thread_records_give_each_thread_once_and_every_thread_of_their_trees(tmp_path, forest):
    """Every leaf's record: each thread once (unique ids), and every thread the trees give (Open-Assistant's
    rule keeps a prompter leaf only as a first reply; records cannot tell which reply was first)."""
    config = ThreadConfig(val_split=0.3, tree_states=("*",))
    from_trees = keys(ThreadExtractor(config).run([write_jsonl(tmp_path / "trees.jsonl", forest)]))
    records = [r for tree in forest for r in thread_records(tree)]
    from_records = keys(ThreadExtractor(config).run([write_jsonl(tmp_path / "threads.jsonl", records)]))
    ids = [key[2][-1] for key in from_records]
    assert len(ids) == len(set(ids))
    assert set(from_trees) <= set(from_records)


def test_a_repeat_of_a_tree_the_filters_dropped_says_so(tmp_path):
    """Exports of two dates: the first copy is still growing (dropped), the second is ready."""
    growing = dict(copy.deepcopy(TREES[0]), tree_state="growing")
    old, new = write_jsonl(tmp_path / "old.jsonl", [growing]), write_jsonl(tmp_path / "new.jsonl", [TREES[0]])
    message = assert_one_line_error(threads_cli(str(old), str(new), "--out", str(tmp_path / "t.jsonl")), new, 1, "was already read")
    assert f"at {old}:1, where the filters dropped it (tree_state): give the copy you want once" in message
    assert_one_line_error(threads_cli(str(new), str(old), "--out", str(tmp_path / "t.jsonl")), old, 1, "overlapping inputs?")


def test_thread_records_of_two_trees_sharing_a_message_id_are_a_bad_record(tmp_path):
    records = thread_records(TREES[0])[:1]
    other = copy.deepcopy(records[0])
    other["message_tree_id"] = "t-other"
    other["thread"][-1]["message_id"] = "another-leaf"  # not the same thread: the same prefix in another tree
    path = write_jsonl(tmp_path / "threads.jsonl", records + [other])
    message = assert_one_line_error(threads_cli(str(path), "--out", str(tmp_path / "t.jsonl")), path, 2, "a message id in two trees")
    assert f"in the thread record of tree {TREES[0]['message_tree_id']} at {path}:1" in message


def test_a_shared_prefix_is_credited_to_the_first_record_that_brought_it(tmp_path):
    records = thread_records(TREES[0])  # t-basic: [m1, m2, m4, m5] and [m1, m3]
    assert [len(r["thread"]) for r in records] == [4, 2]
    threads = write_jsonl(tmp_path / "threads.jsonl", records)
    trees = write_jsonl(tmp_path / "trees.jsonl", TREES[:1])
    message = assert_one_line_error(threads_cli(str(threads), str(trees), "--out", str(tmp_path / "t.jsonl")), trees, 1, "message m1")
    assert f"at {threads}:1 " in message  # m1 came with line 1; line 2 only brought m3


def test_stats_describe_a_tree_given_twice_once_whatever_the_filters(tmp_path):
    """A repeat is a bad record before any selection: --lang en and --lang de describe one export."""
    from oasst_data.stats import export_stats

    trees = write_jsonl(tmp_path / "trees.jsonl", TREES)
    threads = write_jsonl(tmp_path / "threads.jsonl", [r for tree in TREES for r in thread_records(tree)])
    alone = export_stats([trees])["export"]["totals"]["messages"]
    for lang in ("en", "de", "*"):
        config = ThreadConfig(lang=lang, tree_states=("*",), on_bad_record=OnBadRecord.SKIP, quarantine=tmp_path / f"q-{lang}.jsonl")
        report = export_stats([trees, threads], config=config)
        assert report["export"]["totals"]["messages"] == alone, lang
        assert report["export"]["funnel"]["tree_drops"]["duplicate_message"] == len(threads.read_text().splitlines())


def test_a_valid_copy_after_an_invalid_one_is_kept(tmp_path):
    """The invalid first copy is set aside and forgotten: skip keeps the valid one, not nothing."""
    broken = copy.deepcopy(TREES[0])
    broken["prompt"]["replies"][0]["role"] = "prompter"
    bad, good = write_jsonl(tmp_path / "bad.jsonl", [broken]), write_jsonl(tmp_path / "good.jsonl", [TREES[0]])
    report, entries, _ = skip_run(tmp_path / "t.jsonl", str(bad), str(good))
    alone, _, _ = skip_run(tmp_path / "alone.jsonl", str(good))
    assert report["funnel"]["threads"] == alone["funnel"]["threads"] > 0
    assert [e["source"] for e in entries] == [str(bad)] and report["funnel"]["tree_drops"] == {"invalid_tree": 1}


def test_a_dropped_thread_record_does_not_mark_a_kept_tree_as_dropped(tmp_path):
    """Tree ids and thread leaves are different keys: a thread record ending at a message named X is not tree X."""
    root = {"message_id": "X", "text": "Q", "role": "prompter", "lang": "en", "review_result": True}
    tree_q = dict(copy.deepcopy(TREES[0]), message_tree_id="X")  # its messages are m1..m5
    first = write_jsonl(tmp_path / "first.jsonl", [{"thread_id": "th", "tree_state": "growing", "thread": [root]}])
    trees = write_jsonl(tmp_path / "trees.jsonl", [tree_q])
    again = write_jsonl(tmp_path / "again.jsonl", [tree_q])
    result = threads_cli(str(first), str(trees), str(again), "--out", str(tmp_path / "t.jsonl"), "--on-bad-record", "skip",
                         "--quarantine", str(tmp_path / "q.jsonl"))
    assert result.exit_code == 0, result.output
    reasons = [json.loads(line)["reason"] for line in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert len(reasons) == 1 and "where the filters dropped it" not in reasons[0] and f"at {trees}:1" in reasons[0]


def test_a_blank_message_shared_by_thread_records_is_warned_about_once(tmp_path, caplog):
    root = {"message_id": "q", "text": " ", "role": "prompter", "lang": "en", "review_result": True}
    records = [{"thread_id": f"th-{n}", "message_tree_id": "q", "tree_state": "ready_for_export",
                "thread": [root, {"message_id": f"a{n}", "parent_id": "q", "text": f"A{n}", "role": "assistant", "lang": "en"}]}
               for n in range(3)]
    with caplog.at_level("WARNING", logger="oasst_data.threads"):
        threads, _ = extract_threads([write_jsonl(tmp_path / "threads.jsonl", records)], config=ThreadConfig(val_split=0.0))
    assert len(threads) == 3 and "1 message(s) in the threads kept have blank text" in caplog.text
