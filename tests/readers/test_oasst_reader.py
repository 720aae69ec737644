"""The Open-Assistant export reader: line kinds, compressions, fields, flat rows in any order,
Hugging Face rows, very deep chains, several files and globs."""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path

import msgspec
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oasst_data.config import ThreadConfig
from oasst_data.errors import BadRecordError, OasstDataError
from oasst_data.funnel import Funnel
from oasst_data.quarantine import BadRecordHandler, OnBadRecord
from oasst_data.readers.oasst import OasstExportReader, decode_record, trees_from_hf_rows
from oasst_data.records import ExportMessage, ExportMessageEvent, ExportMessageTree, LabelValue
from oasst_data.threads import ThreadExtractor, extract_threads
from oasst_data.traversal import iter_candidate_paths, iter_messages, validate_tree

from ..conftest import FIXTURES
from ..tree_strategies import export_forests, flatten, keep_sibling_order

OASST = FIXTURES / "oasst"
TREE_DICTS = [json.loads(line) for line in (OASST / "trees.jsonl").read_text(encoding="utf-8").splitlines()]
# Fields that only one layout carries (flat rows repeat the tree's id and state; roots may have parent_id null).
LAYOUT_FIELDS = {"message_tree_id", "tree_state", "parent_id", "replies"}


def read(*paths, policy=OnBadRecord.FAIL) -> list[ExportMessageTree]:
    return [located.tree for located in OasstExportReader([Path(p) for p in paths], BadRecordHandler(policy))]


def normalized(tree: ExportMessageTree) -> tuple:
    """The tree as comparable data: ids, state, and every message's fields depth first (layout fields aside)."""
    messages = []
    for message, depth in iter_messages(tree.prompt):
        fields = {k: v for k, v in msgspec.structs.asdict(message).items() if k not in LAYOUT_FIELDS}
        messages.append((depth, len(message.replies or ()), msgspec.json.encode(fields)))
    return tree.message_tree_id, tree.tree_state, messages


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def thread_keys(threads) -> list[tuple]:
    return [(t.tree_id, t.split.value, t.to_json()["text"], tuple(turn.id for turn in t.turns)) for t in threads]


# --- line kinds and compressions ---------------------------------------------------------------------


def test_plain_gzip_and_zstd_give_identical_trees():
    plain = read(OASST / "trees.jsonl")
    assert len(plain) == 12
    assert read(OASST / "trees.jsonl.gz") == plain
    assert read(OASST / "trees.jsonl.zst") == plain


def test_compression_is_chosen_by_suffix_and_multi_frame_zstd_works(tmp_path):
    data = (OASST / "trees.jsonl").read_bytes()
    half = data.index(b"\n", len(data) // 2) + 1
    frames = tmp_path / "two-frames.jsonl.zstd"
    compressor = zstandard.ZstdCompressor()
    frames.write_bytes(compressor.compress(data[:half]) + compressor.compress(data[half:]))
    members = tmp_path / "two-members.jsonl.GZ"
    members.write_bytes(gzip.compress(data[:half]) + gzip.compress(data[half:]))
    assert read(frames) == read(members) == read(OASST / "trees.jsonl")


def test_tree_nested_message_flat_messages_and_thread_lines_give_the_same_trees(tmp_path):
    expected = [normalized(t) for t in read(OASST / "trees.jsonl")]
    # A root message with its replies nested, the tree's id and state on the message.
    nested = [{**t["prompt"], "message_tree_id": t["message_tree_id"], "tree_state": t["tree_state"]} for t in TREE_DICTS]
    got = read(write_jsonl(tmp_path / "nested.jsonl", nested))
    assert [normalized(t) for t in got] == expected
    # One message a line, tree by tree.
    flat = [row for tree in TREE_DICTS for row in flatten(tree)]
    assert [normalized(t) for t in read(write_jsonl(tmp_path / "flat.jsonl", flat))] == expected
    # A thread line is a one-path tree: the single-path fixture trees round-trip through it.
    single_path = [t for t in TREE_DICTS if t["message_tree_id"] in ("t-deep-chain", "t-synthetic-trailing-prompter")]
    thread_rows = [
        {"thread_id": f"th-{t['message_tree_id']}", "message_tree_id": t["message_tree_id"], "tree_state": t["tree_state"], "thread": flatten(t)}
        for t in single_path
    ]
    got = read(write_jsonl(tmp_path / "threads.jsonl", thread_rows))
    assert [normalized(t) for t in got] == [e for e in expected if e[0] in ("t-deep-chain", "t-synthetic-trailing-prompter")]


def test_the_fixture_kinds_give_the_fixture_threads():
    from_trees, _ = extract_threads([OASST / "trees.jsonl"], config=ThreadConfig(val_split=0.0))
    from_messages, _ = extract_threads([OASST / "messages.jsonl"], config=ThreadConfig(val_split=0.0))
    # messages.jsonl holds the first two trees, rows shuffled (siblings in order), m3 in the HF column layout.
    assert thread_keys(from_messages) == [k for k in thread_keys(from_trees) if k[0] in ("t-basic", "t-prompter-leaves")]
    from_thread, _ = extract_threads([OASST / "threads.jsonl"], config=ThreadConfig(val_split=0.0))
    assert [t.id for t in from_thread] == ["h2"]


# --- fields ----------------------------------------------------------------------------------------


def m3_of(trees) -> object:
    tree = next(t for t in trees if t.message_tree_id == "t-basic")
    return next(m for m, _ in iter_messages(tree.prompt) if m.message_id == "m3")


M3_FIELDS = dict(
    message_id="m3",
    parent_id="m1",
    text="It is 4.",
    role="assistant",
    user_id="u-7",
    created_date="2023-02-05T12:00:00+00:00",
    lang="en",
    review_count=3,
    review_result=True,
    deleted=False,
    rank=1,
    synthetic=False,
    model_name=None,
    emojis={"+1": 2, "_skip_reply": 1},
    labels={"spam": LabelValue(0.8, 5), "quality": LabelValue(0.9, 5)},
    events={"emoji": [ExportMessageEvent(type="emoji", user_id="u-1", emoji="+1")]},
    detoxify={"toxicity": 0.001},
)


@pytest.mark.parametrize("name", ["trees.jsonl", "trees.jsonl.gz", "trees.jsonl.zst", "messages.jsonl"])
def test_every_export_field_is_kept(name):
    m3 = m3_of(read(OASST / name))
    for field, value in M3_FIELDS.items():
        assert getattr(m3, field) == value, field
    assert m3.replies in (None, [])


def test_tree_level_fields_are_kept(tmp_path):
    tree = {**TREE_DICTS[0], "origin": "export-2023-04-12"}
    (got,) = read(write_jsonl(tmp_path / "t.jsonl", [tree]))
    assert (got.message_tree_id, got.tree_state, got.origin) == ("t-basic", "ready_for_export", "export-2023-04-12")


def add_extras(tree: dict) -> dict:
    tree = json.loads(json.dumps(tree))
    tree["export_version"] = {"major": 1, "minor": [2, 3]}
    stack = [tree["prompt"]]
    while stack:
        node = stack.pop()
        node["unknown_field"] = None
        node["another"] = [{"deep": {"x": 1.5}}, "text", True]
        for entry in (node.get("labels") or {}).values():
            entry["stddev"] = 0.1
        for events in (node.get("events") or {}).values():
            for event in events:
                event["payload"] = {"anything": [1, 2]}
        stack.extend(node["replies"])
    return tree


def test_unknown_extra_fields_are_tolerated(tmp_path):
    plain = read(OASST / "trees.jsonl")
    extended = read(write_jsonl(tmp_path / "extra.jsonl", [add_extras(t) for t in TREE_DICTS]))
    assert extended == plain
    a, _ = extract_threads([OASST / "trees.jsonl"])
    b, _ = extract_threads([tmp_path / "extra.jsonl"])
    assert thread_keys(a) == thread_keys(b)


# --- flat messages in any order ---------------------------------------------------------------------

FLAT_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EVERYTHING = ThreadConfig(lang="*", tree_states="*", synthetic="include", val_split=0.3)


@FLAT_SETTINGS
@given(data=st.data())
def test_flat_rows_in_any_order_give_the_same_threads(data):
    import tempfile

    forest = data.draw(export_forests(max_size=4))
    rows = [row for tree in forest for row in flatten(tree)]
    order = data.draw(st.permutations(range(len(rows))))
    config = data.draw(st.sampled_from([ThreadConfig(), EVERYTHING, ThreadConfig(top_k=1, val_split=0.5)]))
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        trees_file = write_jsonl(folder / "trees.jsonl", forest)
        expected, expected_funnel = extract_threads([trees_file], config=config)
        # Siblings in their original order: exactly the same threads (ids, texts, order, splits).
        flat_rows = keep_sibling_order(rows, list(order))
        got, funnel = extract_threads([write_jsonl(folder / "flat.jsonl", flat_rows)], config=config)
        # Trees come out in the order their roots appear; threads within a tree in the same order.
        root_rank = {r["message_tree_id"]: i for i, r in enumerate(r for r in flat_rows if r["parent_id"] is None)}
        assert thread_keys(got) == sorted(thread_keys(expected), key=lambda key: root_rank[key[0]])
        assert funnel.records_read == len(rows) and funnel.bad_records == 0
        assert (funnel.trees_read, funnel.candidates, funnel.threads) == (
            expected_funnel.trees_read, expected_funnel.candidates, expected_funnel.threads,
        )
        # Any order at all: the same trees, replies in the order their rows appear.
        shuffled = [rows[i] for i in order]
        position = {row["message_id"]: index for index, row in enumerate(shuffled)}
        trees = read(write_jsonl(folder / "shuffled.jsonl", shuffled))
        want = [msgspec.convert(tree, ExportMessageTree) for tree in forest]
        for tree in want:
            for message, _ in iter_messages(tree.prompt):
                message.replies.sort(key=lambda reply: position[reply.message_id])
        root_order = sorted(want, key=lambda tree: position[tree.prompt.message_id])
        assert [normalized(t) for t in trees] == [normalized(t) for t in root_order]


# --- Hugging Face oasst1 rows ---------------------------------------------------------------------

HF_COLUMNS = [
    "message_id", "parent_id", "user_id", "created_date", "text", "role", "lang", "review_count", "review_result",
    "deleted", "rank", "synthetic", "model_name", "detoxify", "message_tree_id", "tree_state", "emojis", "labels",
]


def hf_row(row: dict) -> dict:
    """A flat row as `OpenAssistant/oasst1` holds it: every column present, labels/emojis as parallel lists."""
    out = {column: row.get(column) for column in HF_COLUMNS}
    if isinstance(out["emojis"], dict):
        out["emojis"] = {"name": list(out["emojis"]), "count": list(out["emojis"].values())}
    if isinstance(out["labels"], dict):
        names = list(out["labels"])
        out["labels"] = {
            "name": names,
            "value": [out["labels"][n]["value"] for n in names],
            "count": [out["labels"][n]["count"] for n in names],
        }
    return out


def test_hugging_face_rows_through_datasets_give_the_same_trees_and_threads():
    datasets = pytest.importorskip("datasets")
    rows = [hf_row(row) for tree in TREE_DICTS for row in flatten(tree)]
    rows.reverse()  # children before parents
    dataset = datasets.Dataset.from_list(rows)
    assert dataset.num_rows == len(rows) and isinstance(dataset[0]["labels"], (dict, type(None)))
    located = list(trees_from_hf_rows(dataset, "hf:oasst1"))
    # Roots come out in row order: reversed, so compare by id. Events are not a column of oasst1.
    trees = {loc.tree.message_tree_id: loc.tree for loc in located}
    for tree in read(OASST / "trees.jsonl"):
        for message, _ in iter_messages(tree.prompt):
            message.events = None
        # Replies were reversed too; their order decides prompter-leaf threads, so restore it.
        got = trees[tree.message_tree_id]
        order = {m.message_id: i for i, (m, _) in enumerate(iter_messages(tree.prompt))}
        for message, _ in iter_messages(got.prompt):
            message.replies.sort(key=lambda reply: order[reply.message_id])
        assert normalized(got) == normalized(tree)
    m3 = m3_of(trees.values())
    assert (m3.emojis, m3.labels, m3.detoxify) == (M3_FIELDS["emojis"], M3_FIELDS["labels"], M3_FIELDS["detoxify"])

    extractor = ThreadExtractor(ThreadConfig(val_split=0.0))
    funnel = Funnel()
    by_tree = {loc.tree.message_tree_id: loc for loc in located}
    threads = [t for tid in [t["message_tree_id"] for t in TREE_DICTS] for t in extractor.tree_threads(by_tree[tid], funnel)]
    expected, _ = extract_threads([OASST / "trees.jsonl"], config=ThreadConfig(val_split=0.0))
    assert thread_keys(threads) == thread_keys(expected)


def test_hugging_face_rows_with_problems_are_counted_in_skip_mode():
    rows = [hf_row(row) for tree in TREE_DICTS[:2] for row in flatten(tree)]
    rows.append({**hf_row(flatten(TREE_DICTS[0])[1]), "message_id": "bad", "labels": {"name": ["a"], "value": [], "count": [1]}})
    rows.append({**hf_row(flatten(TREE_DICTS[0])[1]), "message_id": "orphan", "parent_id": "missing"})
    rows.append({k: v for k, v in hf_row(flatten(TREE_DICTS[0])[1]).items() if k != "text"})
    handler = BadRecordHandler(OnBadRecord.SKIP)
    located = list(trees_from_hf_rows(rows, "hf", handler))
    assert [loc.tree.message_tree_id for loc in located] == ["t-basic", "t-prompter-leaves"]
    assert handler.count == 3
    with pytest.raises(BadRecordError, match="column lists of different lengths"):
        list(trees_from_hf_rows(rows, "hf"))


# --- text Python's json writes but UTF-8 cannot hold ---------------------------------------------------

# Mostly surrogates (U+D800..U+DFFF, which hypothesis leaves out of text by default), some letters.
SURROGATE_PRONE = st.one_of(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), st.sampled_from("ab\\\"é😀"))


@given(st.text(alphabet=SURROGATE_PRONE, max_size=8))
def test_surrogate_escapes_decode_as_pairs_or_fail_naming_the_lone_one(text):
    """json.dumps escapes surrogates as \\uD8xx: pairs are one character, a lone one is bad text."""
    line = json.dumps(
        {"message_tree_id": "t", "tree_state": "ready_for_export", "prompt": {"message_id": "m", "text": text, "role": "prompter"}}
    ).encode()
    try:
        paired = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    except UnicodeDecodeError:
        with pytest.raises(BadRecordError, match=r"x\.jsonl:7: lone surrogate escape \\u[dD][0-9a-f]{3} at byte \d+"):
            decode_record(line, "x.jsonl", 7)
    else:
        assert decode_record(line, "x.jsonl", 7).prompt.text == paired


# --- a tree rebuilt from flat messages knows its lines (quarantined line by line when set aside) ------


def test_a_flat_tree_carries_its_lines_under_skip_only(tmp_path):
    rows = chain_rows(4)
    rows.insert(2, {**rows[0], "message_id": "x0", "message_tree_id": "t-x"})
    rows = rows[::-1]  # replies before their parents; two trees interleaved
    path = write_jsonl(tmp_path / "flat.jsonl", rows)
    raw_lines = path.read_bytes().splitlines(keepends=True)
    skipped = {loc.tree.message_tree_id: loc for loc in OasstExportReader([path], BadRecordHandler(OnBadRecord.SKIP))}
    chain_lines = [number for number, row in enumerate(rows, start=1) if row["message_tree_id"] == "t-chain"]
    assert skipped["t-chain"].lines == tuple((number, raw_lines[number - 1]) for number in chain_lines)
    assert skipped["t-x"].lines == ((3, raw_lines[2]),)
    assert [json.loads(raw) for _, raw in skipped["t-chain"].lines] == [row for row in rows if row["message_tree_id"] == "t-chain"]
    # Under fail no raw bytes are kept: the first bad record raises, naming the root's line.
    failing = {loc.tree.message_tree_id: loc for loc in OasstExportReader([path])}
    assert failing["t-chain"].lines is None and failing["t-chain"].record_lines() == ((5, None),)


def test_hugging_face_rows_of_a_tree_set_aside_are_quarantined_row_by_row(tmp_path):
    rows = [hf_row(row) for tree in TREE_DICTS[:2] for row in flatten(tree)]
    bad = chain_rows(3)
    bad[2]["role"] = "assistant"  # c2 an assistant reply to the assistant c1
    rows[1:1] = bad
    handler = BadRecordHandler(OnBadRecord.SKIP, tmp_path / "q.jsonl")
    extractor = ThreadExtractor(ThreadConfig(val_split=0.0), handler)
    funnel = Funnel()
    threads = [t for located in trees_from_hf_rows(rows, "hf", handler) for t in extractor.tree_threads(located, funnel)]
    handler.close()
    entries = [json.loads(line) for line in (tmp_path / "q.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(e["line"], json.loads(e["raw"])) for e in entries] == [(2, bad[0]), (3, bad[1]), (4, bad[2])]
    assert {e["reason"] for e in entries} == {"invalid tree t-chain: message c2 is an assistant reply to an assistant (c1); roles must alternate"}
    assert funnel.tree_drops["invalid_tree"] == 1 and threads and handler.count == 3


def test_a_deep_flat_tree_read_twice_is_quarantined_line_by_line_without_recursion(tmp_path):
    assert sys.getrecursionlimit() < 20_000
    rows = chain_rows(20_000)[::-1]
    first = write_jsonl(tmp_path / "a.jsonl", rows)
    second = write_jsonl(tmp_path / "b.jsonl", rows)
    config = ThreadConfig(val_split=0.0, on_bad_record="skip", quarantine=tmp_path / "q.jsonl")
    threads, funnel = extract_threads([first, second], config=config)
    assert len(threads) == 1 and funnel.tree_drops["duplicate_tree"] == 1
    assert (funnel.records_read, funnel.bad_records, funnel.records_used) == (40_000, 20_000, 20_000)
    entries = (tmp_path / "q.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(entries) == 20_000
    assert [json.loads(entry)["line"] for entry in entries] == list(range(1, 20_001))


# --- deep chains: no recursion over user data ---------------------------------------------------------


def chain_rows(length: int) -> list[dict]:
    return [
        {
            "message_id": f"c{i}", "parent_id": f"c{i - 1}" if i else None, "text": f"turn {i}",
            "role": "prompter" if i % 2 == 0 else "assistant", "lang": "en", "review_result": True,
            "message_tree_id": "t-chain", "tree_state": "ready_for_export",
        }
        for i in range(length)
    ]


def test_a_20000_message_flat_chain_is_one_thread_of_20000_turns(tmp_path):
    assert sys.getrecursionlimit() < 20_000  # recursion over the chain would fail
    rows = chain_rows(20_000)
    rows.reverse()  # every reply before its parent
    path = write_jsonl(tmp_path / "chain.jsonl", rows)
    threads, funnel = extract_threads([path], config=ThreadConfig(val_split=0.0))
    assert len(threads) == 1
    (thread,) = threads
    assert thread.num_turns == 20_000
    assert [turn.id for turn in thread.turns] == [f"c{i}" for i in range(20_000)]
    assert thread.to_json()["text"].count("<|assistant|>") == 10_000
    assert (funnel.records_read, funnel.trees_read, funnel.candidates, funnel.threads) == (20_000, 1, 1, 1)


def test_a_chain_ending_in_a_prompter_is_trimmed(tmp_path):
    path = write_jsonl(tmp_path / "chain.jsonl", chain_rows(20_001))
    (thread,), _ = extract_threads([path], config=ThreadConfig(val_split=0.0))
    assert thread.num_turns == 20_000 and thread.id == "c19999"


def test_traversal_of_a_deep_chain_uses_no_recursion():
    root = None
    for row in reversed(chain_rows(50_000)):
        root = ExportMessage(**{k: v for k, v in row.items() if k != "message_tree_id"}, replies=[root] if root else [])
    validate_tree(root)
    assert sum(1 for _ in iter_messages(root)) == 50_000
    (path,) = list(iter_candidate_paths(root))
    assert len(path) == 50_000


def nested_line(tree: dict) -> str:
    """json.dumps of a tree line at any depth (json.dumps itself recurses)."""
    parts: list[str] = []
    stack: list = [tree["prompt"]]
    while stack:
        item = stack.pop()
        if isinstance(item, str) or not isinstance(item["replies"], list):
            parts.append(item if isinstance(item, str) else json.dumps(item))
            continue
        parts.append(json.dumps({k: v for k, v in item.items() if k != "replies"})[:-1] + ', "replies": [')
        stack.append("]}")
        for index in range(len(item["replies"]) - 1, -1, -1):
            stack.append(item["replies"][index])
            if index:
                stack.append(", ")
    return json.dumps({k: v for k, v in tree.items() if k != "prompt"})[:-1] + ', "prompt": ' + "".join(parts) + "}\n"


def chain_tree(length: int) -> dict:
    """chain_rows nested: each message the only reply of the one before, plus a short side branch at the root."""
    nodes = [{k: v for k, v in row.items() if k not in ("message_tree_id", "tree_state")} | {"replies": []} for row in chain_rows(length)]
    for parent, child in zip(nodes, nodes[1:]):
        parent["replies"].append(child)
    nodes[0]["replies"].append({"message_id": "side", "parent_id": "c0", "text": "a second answer", "role": "assistant", "lang": "en", "replies": []})
    return {"message_tree_id": "t-chain", "tree_state": "ready_for_export", "prompt": nodes[0]}


def test_a_tree_nested_20000_deep_in_one_line_reads_like_its_flat_messages(tmp_path):
    """Far deeper than msgspec goes (~1,000 levels): the line is read without recursion, message by message."""
    tree = chain_tree(20_000)
    deep = tmp_path / "deep.jsonl"
    deep.write_text(nested_line(tree))
    with pytest.raises(RecursionError):
        msgspec.json.decode(deep.read_bytes())
    flat = write_jsonl(tmp_path / "flat.jsonl", flatten(tree))
    got, got_funnel = extract_threads([deep], config=ThreadConfig(val_split=0.0))
    want, want_funnel = extract_threads([flat], config=ThreadConfig(val_split=0.0))
    assert [t.to_json() for t in got] == [t.to_json() for t in want]
    assert [t.num_turns for t in got] == [20_000, 2]  # the chain (the first reply), then the side branch
    assert (got_funnel.trees_read, got_funnel.threads, got_funnel.bad_records) == (1, 2, 0)


@settings(max_examples=60, deadline=None)
@given(forest=export_forests(max_size=3))
def test_the_deep_path_decodes_any_tree_as_the_fast_path_does(forest):
    from oasst_data.readers.oasst import _decode_deep_tree

    for tree in forest:
        line = nested_line(tree).encode()
        assert json.loads(line) == tree
        assert _decode_deep_tree(line, "x.jsonl", 1) == msgspec.json.decode(line, type=ExportMessageTree)


def message_at(tree: dict, depth: int) -> dict:
    node = tree["prompt"]
    for _ in range(depth - 1):
        node = node["replies"][0]
    return node


@pytest.mark.parametrize(
    ("head", "says"),
    [({"message_tree_id": None}, "Expected `str`, got `null` - at `$.message_tree_id`"), ({"tree_state": 3}, "at `$.tree_state`")],
)
def test_a_deep_line_with_bad_tree_fields_is_named(tmp_path, head, says):
    tree = chain_tree(3_000) | head
    path = tmp_path / "deep.jsonl"
    path.write_text(nested_line(tree))
    with pytest.raises(BadRecordError, match=re.escape(says)):
        read(path)


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ({"role": "assistant"}, "message c2500 is an assistant reply to an assistant"),
        ({"rank": "1"}, "at `$.rank` (message 'c2499' at depth 2500)"),
        ({"replies": {"not": "a list"}}, "replies of message at depth 2500 must be an array of objects"),
        ({"text": "cut \ud83d"}, "lone surrogate escape \\ud83d at byte"),
    ],
    ids=["roles", "field-type", "replies-not-a-list", "lone-surrogate"],
)
def test_a_bad_message_deep_in_a_deep_line_is_named(tmp_path, damage, says):
    tree = chain_tree(3_000)
    message_at(tree, 2500 if "role" not in damage else 2501).update(damage)
    path = tmp_path / "deep.jsonl"
    path.write_text(nested_line(tree))
    with pytest.raises(BadRecordError, match=re.escape(says)) as caught:
        extract_threads([path])
    assert str(caught.value).startswith(f"{path}:1: ")


@pytest.mark.parametrize("where", ["tree", "message"])
def test_a_long_integer_in_an_ignored_field_of_a_deep_line_is_read_as_in_a_shallow_one(tmp_path, where):
    """The recursion-free parser refused what msgspec passes over in a shallow line."""
    number = "-" + "9" * 5_000
    shallow, deep = chain_tree(5), chain_tree(3_000)
    for tree in (shallow, deep):
        (tree if where == "tree" else message_at(tree, 3))["extra"] = "NUMBER"
    (tmp_path / "shallow.jsonl").write_text(nested_line(shallow).replace('"NUMBER"', number))
    (tmp_path / "deep.jsonl").write_text(nested_line(deep).replace('"NUMBER"', number))
    assert len(read(tmp_path / "shallow.jsonl")) == 1
    got = read(tmp_path / "deep.jsonl")
    assert len(got) == 1 and got[0].prompt.replies[0].replies[0].message_id == message_at(deep, 3)["message_id"]


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"prompt": "DEEP"}, "invalid record: Expected `object`, got `array` - at `$.prompt`"),
        ({"extra": "DEEP"}, "invalid record: Object missing required field `prompt`"),
    ],
    ids=["prompt-an-array", "no-prompt"],
)
def test_a_deep_line_that_is_no_tree_of_messages_names_its_fault_not_its_depth(tmp_path, fields, says):
    """Said "nesting deeper than the JSON parser allows", as if the depth were the fault."""
    path = tmp_path / "deep.jsonl"
    line = json.dumps({"message_tree_id": "t", "tree_state": "ready_for_export"} | fields)
    path.write_text(line.replace('"DEEP"', "[" * 3_000 + "]" * 3_000) + "\n")
    with pytest.raises(BadRecordError, match=re.escape(says)):
        read(path)


def test_a_deep_line_with_an_integer_past_pythons_digit_limit_is_a_bad_record(tmp_path):
    """The deep-line decoder met Python's 4,300-digit int limit as a bare ValueError (found by fuzzing);
    now the rank refuses it as msgspec does in a shallow line."""
    tree = chain_tree(3_000)
    message_at(tree, 2500)["rank"] = "RANK"
    path = tmp_path / "deep.jsonl"
    path.write_text(nested_line(tree).replace('"RANK"', "1" + "0" * 4300))
    with pytest.raises(BadRecordError, match=re.escape("Integer value out of range - at `$.rank` (message 'c2499' at depth 2500)")) as caught:
        extract_threads([path])
    assert str(caught.value).startswith(f"{path}:1: ")
    skipped = ThreadConfig(on_bad_record=OnBadRecord.SKIP, quarantine=tmp_path / "q.jsonl")
    threads, funnel = extract_threads([path], config=skipped)
    assert threads == [] and funnel.bad_records == 1 == len((tmp_path / "q.jsonl").read_text().splitlines())


# --- several files and globs ------------------------------------------------------------------------


def test_several_files_and_globs(tmp_path):
    """Every file is read, in order; the copies of one tree in several files (the same export as
    .jsonl, .gz, .zst and flat messages) are set aside as repeats in skip mode, the first kept."""
    one, _ = extract_threads([OASST / "trees.jsonl"], config=ThreadConfig(val_split=0.0))
    skip = ThreadConfig(val_split=0.0, on_bad_record="skip")
    threads, funnel = extract_threads([OASST / "trees.jsonl", str(OASST / "trees.jsonl.*"), OASST / "messages.jsonl"], config=skip)
    assert thread_keys(threads) == thread_keys(one)
    assert funnel.records_read == 12 * 3 + 12 and funnel.trees_read == 12 * 3 + 2
    assert funnel.tree_drops["duplicate_tree"] == 12 * 2 + 2
    assert funnel.check() == []
    # A recursive glob, and a literal file name holding glob characters.
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "x[1].jsonl").write_bytes((OASST / "trees.jsonl").read_bytes())
    (tmp_path / "a" / "y.jsonl.gz").write_bytes((OASST / "trees.jsonl.gz").read_bytes())
    threads, funnel = extract_threads([str(tmp_path / "**" / "*.jsonl*")], config=skip)
    assert len(threads) == 12 and funnel.trees_read == 24
    threads, _ = extract_threads([nested / "x[1].jsonl"], config=ThreadConfig(val_split=0.0))
    assert len(threads) == 12


def test_inputs_that_match_nothing_are_errors(tmp_path):
    with pytest.raises(OasstDataError, match="no file matches this pattern"):
        extract_threads([str(tmp_path / "*.jsonl")])
    with pytest.raises(OasstDataError, match="missing.jsonl: no such file"):
        extract_threads([tmp_path / "missing.jsonl"])


def test_a_directory_input_says_it_is_a_directory(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "trees.jsonl").write_bytes((OASST / "trees.jsonl").read_bytes())
    with pytest.raises(OasstDataError, match=r"exports: is a directory, not a file \(pass the files in it, or a glob") as caught:
        extract_threads([folder])
    assert "no such file" not in str(caught.value)
    # The glob the message suggests reads the files inside.
    threads, _ = extract_threads([str(folder / "*.jsonl")], config=ThreadConfig(val_split=0.0))
    assert len(threads) == 12


# --- a UTF-8 byte order mark ---------------------------------------------------------------------------

BOM = b"\xef\xbb\xbf"


def compress(data: bytes, suffix: str) -> bytes:
    if suffix == ".gz":
        return gzip.compress(data, mtime=0)
    if suffix == ".zst":
        return zstandard.ZstdCompressor().compress(data)
    return data


@pytest.mark.parametrize("suffix", ["", ".gz", ".zst"])
@pytest.mark.parametrize("name", ["trees.jsonl", "messages.jsonl", "threads.jsonl"])
def test_a_byte_order_mark_at_the_start_is_ignored(tmp_path, name, suffix):
    """Windows tools write one; msgspec called it "invalid character (byte 0)". Lines keep their numbers."""
    data = (OASST / name).read_bytes()
    path = tmp_path / (name + suffix)
    path.write_bytes(compress(BOM + data, suffix))
    reader = OasstExportReader([path], BadRecordHandler(OnBadRecord.FAIL))
    got = [(located.line, normalized(located.tree)) for located in reader]
    expected = [(located.line, normalized(located.tree)) for located in OasstExportReader([OASST / name])]
    assert got == expected and got
    assert reader.counts.bad_lines == 0


def test_a_byte_order_mark_after_the_start_is_still_a_bad_line(tmp_path):
    lines = (OASST / "trees.jsonl").read_bytes().splitlines(keepends=True)
    path = tmp_path / "trees.jsonl"
    path.write_bytes(lines[0] + BOM + lines[1] + b"".join(lines[2:]))
    with pytest.raises(BadRecordError, match=r"trees.jsonl:2: malformed JSON"):
        read(path)
    assert len(read(path, policy=OnBadRecord.SKIP)) == 11
    # Two marks at the start: only the first is the file's; the second is data.
    path.write_bytes(BOM + BOM + b"".join(lines))
    with pytest.raises(BadRecordError, match=r"trees.jsonl:1: malformed JSON"):
        read(path)


def test_a_file_that_is_only_a_byte_order_mark_holds_no_record(tmp_path):
    path = tmp_path / "bom-only.jsonl"
    for content in (BOM + b"\n", BOM):
        path.write_bytes(content)
        assert read(path) == []  # one blank line: no record, and nothing bad (an empty file is warned about later)


def test_the_same_file_given_twice_is_an_error(tmp_path, monkeypatch):
    from oasst_data.errors import OasstDataError
    from oasst_data.readers.files import expand_inputs

    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "b.jsonl").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    assert expand_inputs(["*.jsonl"]) == [Path("a.jsonl"), Path("b.jsonl")]
    for twice in (["a.jsonl", "./a.jsonl"], ["a.jsonl", "*.jsonl"]):
        with pytest.raises(OasstDataError, match=r"a.jsonl: given twice \(also as a.jsonl\)"):
            expand_inputs(twice)


def test_a_file_and_a_symlink_to_it_are_the_same_file_given_twice(tmp_path, monkeypatch):
    from oasst_data.readers.files import expand_inputs

    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "a.jsonl")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OasstDataError, match=r"link.jsonl: given twice \(also as a.jsonl\)"):
        expand_inputs(["a.jsonl", "link.jsonl"])


def test_blank_messages_are_kept_as_open_assistant_keeps_them_and_counted(tmp_path, caplog):
    """Open-Assistant's trainer does not drop a blank reply: neither do threads, but they warn, and stats count."""
    from oasst_data.stats import export_stats

    tree = json.loads((OASST / "trees.jsonl").read_text(encoding="utf-8").splitlines()[0])
    tree["prompt"]["replies"][1]["text"] = " \n "  # m3
    path = write_jsonl(tmp_path / "trees.jsonl", [tree])
    with caplog.at_level("WARNING", logger="oasst_data.threads"):
        threads, _ = extract_threads([path], config=ThreadConfig(val_split=0.0))
    assert [t.id for t in threads] == ["m5", "m3"]
    assert "1 message(s) in the threads kept have blank text" in caplog.text
    assert export_stats([path])["export"]["flags"]["blank_text"] == 1
