"""Properties of thread extraction on random valid trees (hypothesis).

- every thread is a root-to-leaf path (a trailing prompter leaf trimmed), roles alternate from a
  prompter and it ends with an assistant; no thread repeats;
- the funnel identities hold;
- a tree's split depends on nothing but its id (not on other trees, not on filters);
- the package gives the same threads, in the same order, as a straightforward recursive
  re-implementation of Open-Assistant's SFT rule written here.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oasst_data.config import ThreadConfig
from oasst_data.records import ExportMessageTree
from oasst_data.threads import extract_threads
from oasst_data.traversal import iter_candidate_paths, trim_trailing_prompter

from .tree_strategies import export_forests, export_trees

SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CONFIGS = st.builds(
    ThreadConfig,
    top_k=st.sampled_from([None, 1, 2, 3]),
    synthetic=st.sampled_from(["exclude", "include", "only"]),
    lang=st.sampled_from(["en", "en,de", "*"]),
    tree_states=st.sampled_from(["ready_for_export", "*"]),
    val_split=st.sampled_from([0.0, 0.3, 0.5]),
)


def run(forest: list[dict], config: ThreadConfig):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "export.jsonl"
        path.write_text("".join(json.dumps(tree) + "\n" for tree in forest), encoding="utf-8")
        return extract_threads([path], config=config)


# --- the reference, written out plainly (recursion is fine for these small trees) ------------------


def reference_threads(tree: ExportMessageTree, config: ThreadConfig) -> list[list]:
    """Open-Assistant's `load_oasst_export` in mode "sft", with this package's opt-in options."""
    langs = set(config.lang.split(","))
    states = set(config.tree_states.split(","))
    if "*" not in states and tree.tree_state not in states:
        return []
    if not tree.prompt.review_result:
        return []
    if "*" not in langs and tree.prompt.lang not in langs:
        return []

    def thread_filter(thread) -> bool:
        if any(m.deleted for m in thread):
            return False
        synthetic = any(m.synthetic for m in thread)
        if config.synthetic.value == "exclude" and synthetic:
            return False
        if config.synthetic.value == "only" and not synthetic:
            return False
        if config.top_k is not None:
            for i, m in enumerate(thread):
                if m.role == "assistant":
                    if m.rank is None:
                        if i > 0 and len(thread[i - 1].replies) > 1:
                            return False
                    elif m.rank >= config.top_k:
                        return False
        return True

    def leaf_filter(thread) -> bool:
        return (
            len(thread) > 1
            and not thread[-1].replies
            and (thread[-1].role == "assistant" or thread[-2].replies[0] == thread[-1])
            and thread_filter(thread)
        )

    threads: list[list] = []

    def visit(node, parents):
        thread = parents + [node]
        if leaf_filter(thread):
            threads.append(thread)
        for child in node.replies or []:
            visit(child, thread)

    visit(tree.prompt, [])
    for thread in threads:
        if thread[-1].role == "prompter":
            thread.pop()
    return threads


def decode(tree: dict) -> ExportMessageTree:
    return msgspec.convert(tree, ExportMessageTree)


# --- properties ---------------------------------------------------------------------------------


@SETTINGS
@given(forest=export_forests(max_size=4), config=CONFIGS)
def test_same_threads_in_the_same_order_as_the_reference(forest, config):
    threads, _ = run(forest, config)
    expected = [
        (tree["message_tree_id"], tuple(m.message_id for m in thread))
        for tree in forest
        for thread in reference_threads(decode(tree), config)
    ]
    assert [(t.tree_id, tuple(turn.id for turn in t.turns)) for t in threads] == expected


@SETTINGS
@given(forest=export_forests(max_size=4), config=CONFIGS)
def test_thread_invariants_and_funnel(forest, config):
    threads, funnel = run(forest, config)
    nodes = {}
    parent_of = {}
    for tree in forest:
        stack = [tree["prompt"]]
        while stack:
            node = stack.pop()
            nodes[node["message_id"]] = node
            for reply in node["replies"]:
                parent_of[reply["message_id"]] = node["message_id"]
            stack.extend(node["replies"])
    roots = {tree["prompt"]["message_id"]: tree["message_tree_id"] for tree in forest}

    for thread in threads:
        ids = [turn.id for turn in thread.turns]
        # A path from the root of its own tree, one parent-child edge at a time.
        assert roots.get(ids[0]) == thread.tree_id
        assert all(parent_of[child] == parent for parent, child in zip(ids, ids[1:]))
        # Ends in an assistant; it is a leaf, or its first reply is a prompter leaf (trimmed).
        assert [t.role.value for t in thread.turns] == ["prompter", "assistant"] * (len(ids) // 2)
        last = nodes[ids[-1]]
        if last["replies"]:
            first = last["replies"][0]
            assert first["role"] == "prompter" and not first["replies"]
        assert [t.text for t in thread.turns] == [nodes[i]["text"] for i in ids]
    keys = [tuple(turn.id for turn in t.turns) for t in threads]
    assert len(set(keys)) == len(keys)
    assert len({t.id for t in threads}) == len(threads)

    assert funnel.check() == []
    assert funnel.trees_read == len(forest) == funnel.trees_kept + sum(funnel.tree_drops.values())
    assert funnel.candidates == funnel.threads + sum(funnel.thread_drops.values())
    assert funnel.threads == len(threads)
    assert funnel.records_read == len(forest) and funnel.bad_records == 0


@SETTINGS
@given(tree=export_trees())
def test_candidates_are_exactly_the_rule_before_filters(tree):
    """Without filters every candidate path becomes a thread: the walk alone matches the rule."""
    prompt = decode(tree).prompt
    paths = [[m.message_id for m in trim_trailing_prompter(p)] for p in iter_candidate_paths(prompt)]
    everything = ThreadConfig(synthetic="include", lang="*", tree_states="*")
    unfiltered = msgspec.structs.replace(decode(tree), prompt=msgspec.structs.replace(prompt, review_result=True))
    assert paths == [[m.message_id for m in t] for t in reference_threads(_undeleted(unfiltered), everything)]


def _undeleted(tree: ExportMessageTree) -> ExportMessageTree:
    stack = [tree.prompt]
    while stack:
        node = stack.pop()
        node.deleted = False
        stack.extend(node.replies or ())
    return tree


@SETTINGS
@given(
    forest=export_forests(max_size=4),
    others=export_forests(max_size=3),
    config=CONFIGS,
    other_config=CONFIGS,
)
def test_split_of_a_tree_depends_only_on_its_id(forest, others, config, other_config):
    for index, tree in enumerate(others):
        tree["message_tree_id"] = f"other{index}"
        stack = [tree["prompt"]]  # message ids are unique across trees, as in an export
        while stack:
            message = stack.pop()
            message["message_id"] = f"other{index}-{message['message_id']}"
            for reply in message["replies"]:
                reply["parent_id"] = message["message_id"]
            stack.extend(message["replies"])
    val_split = 0.5
    config.val_split = other_config.val_split = val_split
    alone, _ = run(forest, config)
    together, _ = run(others[:1] + forest + others[1:], other_config)
    split_alone = {t.tree_id: t.split for t in alone}
    split_together = {t.tree_id: t.split for t in together}
    for tree_id in split_alone.keys() & split_together.keys():
        assert split_alone[tree_id] == split_together[tree_id]
    for threads in (alone, together):
        by_tree: dict = {}
        for thread in threads:
            by_tree.setdefault(thread.tree_id, set()).add(thread.split)
        assert all(len(splits) == 1 for splits in by_tree.values())
