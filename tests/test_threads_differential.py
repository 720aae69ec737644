"""Differential test: the fixture trees against threads written out BY HAND from the rule.

Nothing here is computed by the code under test: each expected string was typed from the
fixture definitions in fixtures/make_fixtures.py and Open-Assistant's SFT rule.
"""

from __future__ import annotations

import pytest

from oasst_data.config import ThreadConfig
from oasst_data.threads import extract_threads

from .conftest import FIXTURES, REAL_TREES, needs_real_data

TREES = FIXTURES / "oasst" / "trees.jsonl"
P, A, E = "<|prompter|>", "<|assistant|>", "<|endoftext|>"

# Default filters: lang en, ready_for_export, root review true, synthetic excluded, no top-k.
EXPECTED_DEFAULT = {
    "m5": f"{P}What is two plus two?{E}{A}Four.{E}{P}And three plus three?{E}{A}Six.{E}",
    "m3": f"{P}What is two plus two?{E}{A}It is 4.{E}",
    # p2 is the first reply of a1 and a leaf: the path ends there, p2 is trimmed.
    "a1": f"{P}Name a color.{E}{A}Blue.{E}",
    # p3 (second prompter leaf of a1) makes no thread.
    "a3": f"{P}Name a color.{E}{A}Red.{E}{P}Darker?{E}{A}Maroon.{E}",
    # s4 is synthetic: the s1-s2-s3-s4 path is dropped; s5 stays.
    "s5": f"{P}Tell me a joke.{E}{A}No.{E}",
    # t-synthetic-trailing-prompter: q2 is synthetic, so its path is dropped before trimming.
    # d3 is a deleted prompter leaf: the d1-d2-d3 path is dropped; d4 stays.
    "d4": f"{P}Count to three.{E}{A}1 2 3{E}",
    "u2": f"{P}Pick a number.{E}{A}Seven.{E}",
    "u3": f"{P}Pick a number.{E}{A}Three.{E}",
    # t-not-ready, t-review-false and t-german are dropped whole.
    "x2": f"{P}Say thanks in German.{E}{A}Danke.{E}",
    "x3": f"{P}Say thanks in German.{E}{A}In German you say danke.{E}",
    "c7": f"{P}turn 0{E}{A}turn 1{E}{P}turn 2{E}{A}turn 3{E}{P}turn 4{E}{A}turn 5{E}{P}turn 6{E}{A}turn 7{E}",
    "k2": f"{P}What does <|endoftext|> mean in a prompt?{E}{A}It ends a turn; <|assistant|> starts a reply.{E}",
}
DEFAULT_ORDER = ["m5", "m3", "a1", "a3", "s5", "d4", "u2", "u3", "x2", "x3", "c7", "k2"]


def texts(threads):
    return {t.id: t.to_json()["text"] for t in threads}


@pytest.mark.parametrize("name", ["trees.jsonl", "trees.jsonl.gz", "trees.jsonl.zst"])
def test_default_rule_matches_hand_written_threads(name):
    threads, funnel = extract_threads([FIXTURES / "oasst" / name], config=ThreadConfig(val_split=0.0))
    assert [t.id for t in threads] == DEFAULT_ORDER
    assert texts(threads) == EXPECTED_DEFAULT
    assert funnel.trees_read == 12
    assert dict(funnel.tree_drops) == {"tree_state": 1, "review_result": 1, "lang": 1}
    assert funnel.candidates == 15
    assert dict(funnel.thread_drops) == {"synthetic": 2, "deleted": 1}
    assert funnel.threads == 12
    assert funnel.check() == []


def test_top_k_drops_ranked_out_and_unranked_siblings():
    threads, funnel = extract_threads([TREES], config=ThreadConfig(top_k=1, val_split=0.0))
    # rank >= 1 drops m3, a3 (via a2), s5, d4 and x3; u2/u3 are unranked with a sibling.
    # The deep chain's assistants are unranked but have no siblings, so c7 stays.
    assert [t.id for t in threads] == ["m5", "a1", "x2", "c7", "k2"]
    assert dict(funnel.thread_drops) == {"synthetic": 2, "deleted": 1, "top_k": 5, "top_k_unranked": 2}


def test_top_k_two_keeps_rank_one():
    threads, _ = extract_threads([TREES], config=ThreadConfig(top_k=2, val_split=0.0))
    assert [t.id for t in threads] == ["m5", "m3", "a1", "a3", "s5", "d4", "x2", "x3", "c7", "k2"]


def test_synthetic_include_and_only():
    included, _ = extract_threads([TREES], config=ThreadConfig(synthetic="include", val_split=0.0))
    extra = {
        "s4": f"{P}Tell me a joke.{E}{A}Why did the chicken cross the road?{E}{P}Why?{E}{A}To get to the other side.{E}",
        "r1": f"{P}Say hi.{E}{A}Hi!{E}",
    }
    assert texts(included) == {**EXPECTED_DEFAULT, **extra}
    only, funnel = extract_threads([TREES], config=ThreadConfig(synthetic="only", val_split=0.0))
    assert texts(only) == extra
    assert funnel.thread_drops["not_synthetic"] == 12


def test_languages_and_scope():
    threads, funnel = extract_threads([TREES], config=ThreadConfig(lang="en,de", val_split=0.0))
    assert texts(threads)["g2"] == f"{P}Wie spät ist es?{E}{A}Es ist Mittag.{E}"
    assert "lang" not in funnel.tree_drops
    scoped, funnel = extract_threads([TREES], config=ThreadConfig(lang_scope="all", val_split=0.0))
    assert "x2" not in texts(scoped) and "x3" in texts(scoped)
    assert funnel.thread_drops["lang_all"] == 1
    # Any language, every message: nothing is dropped for its language.
    anything, funnel = extract_threads([TREES], config=ThreadConfig(lang="*", lang_scope="all", val_split=0.0))
    assert {"x2", "g2"} <= set(texts(anything)) and "lang_all" not in funnel.thread_drops
    # Spaces around the commas are not part of a code.
    spaced, _ = extract_threads([TREES], config=ThreadConfig(lang=" en , de ", val_split=0.0))
    assert texts(spaced) == texts(extract_threads([TREES], config=ThreadConfig(lang="en,de", val_split=0.0))[0])


def test_label_thresholds():
    threads, funnel = extract_threads([TREES], config=ThreadConfig(max_label=["spam=0.5"], val_split=0.0))
    assert "m3" not in texts(threads)  # m3 spam 0.8
    assert funnel.thread_drops["max_label:spam"] == 1
    threads, funnel = extract_threads([TREES], config=ThreadConfig(min_label=["quality=0.3"], val_split=0.0))
    assert "m5" not in texts(threads)  # m2 quality 0.2; m3 (0.9) and unlabeled messages pass
    assert "m3" in texts(threads) and "a1" in texts(threads)
    assert funnel.thread_drops["min_label:quality"] == 1


def test_a_label_at_its_threshold_passes():
    """max drops values above the bound, min values below it: the bound itself is kept."""
    kept, funnel = extract_threads([TREES], config=ThreadConfig(max_label=["spam=0.8"], min_label=["quality=0.2"], val_split=0.0))
    assert {"m3", "m5"} <= set(texts(kept))  # m3 spam 0.8; m5's thread holds m2, quality 0.2
    assert not [reason for reason in funnel.thread_drops if "label" in reason]


def test_a_label_without_a_value_passes_any_threshold(tmp_path):
    import json

    tree = json.loads(TREES.read_text(encoding="utf-8").splitlines()[0])
    tree["prompt"]["replies"][1]["labels"]["spam"] = {"value": None, "count": 0}  # m3
    path = tmp_path / "trees.jsonl"
    path.write_text(json.dumps(tree) + "\n", encoding="utf-8")
    threads, funnel = extract_threads([path], config=ThreadConfig(max_label=["spam=0.5"], min_label=["spam=0.1"], val_split=0.0))
    # m3 (no value) passes both bounds; m5's thread is dropped for m2's spam 0.0 < 0.1.
    assert "m3" in texts(threads) and "m5" not in texts(threads)
    assert funnel.thread_drops == {"min_label:spam": 1}


def test_tree_states_any_keeps_growing_tree():
    threads, _ = extract_threads([TREES], config=ThreadConfig(tree_states="*", val_split=0.0))
    assert texts(threads)["n2"] == f"{P}Unfinished?{E}{A}Yes.{E}"


def test_flat_messages_and_threads_match_trees():
    flat, _ = extract_threads([FIXTURES / "oasst" / "messages.jsonl"], config=ThreadConfig(val_split=0.0))
    assert texts(flat) == {k: EXPECTED_DEFAULT[k] for k in ("m5", "m3", "a1", "a3")}
    threads, _ = extract_threads([FIXTURES / "oasst" / "threads.jsonl"], config=ThreadConfig(val_split=0.0))
    assert texts(threads) == {"h2": f"{P}Is water wet?{E}{A}It makes things wet.{E}"}


def test_alpaca_prompt_rule():
    threads, funnel = extract_threads(alpaca=[str(FIXTURES / "alpaca" / "alpaca.json")], config=ThreadConfig(val_split=0.0))
    assert [t.to_json()["text"] for t in threads] == [
        f"{P}Give a synonym for happy.{E}{A}Joyful.{E}",
        f"{P}Add the numbers.\n2 and 3{E}{A}5{E}",
        f"{P}Name a planet.{E}{A}Mars.{E}",
        f"{P}Translate to French.\ncat{E}{A}chat{E}",
    ]
    assert dict(funnel.tree_drops) == {"empty_text": 1}


def test_system_prompt_is_serialized_first():
    threads, _ = extract_threads([TREES], config=ThreadConfig(system_prompt="Be brief.", val_split=0.0))
    assert texts(threads)["m3"] == f"<|system|>Be brief.{E}{P}What is two plus two?{E}{A}It is 4.{E}"


def test_split_is_per_tree():
    threads, funnel = extract_threads([TREES], config=ThreadConfig(val_split=0.5))
    by_tree: dict[str, set] = {}
    for thread in threads:
        by_tree.setdefault(thread.tree_id, set()).add(thread.split)
    assert all(len(splits) == 1 for splits in by_tree.values())
    assert set(funnel.threads_by_split) == {"train", "validation"}


@needs_real_data
def test_real_trees_give_the_reference_538_threads():
    threads, funnel = extract_threads([REAL_TREES], config=ThreadConfig(lang="en"))
    assert len(threads) == 538
    assert funnel.threads_by_split["train"] + funnel.threads_by_split["validation"] == 538
    assert funnel.trees_read == 100
    assert all(t.turns[-1].role.value == "assistant" for t in threads)
