"""Hypothesis strategies for random valid Open-Assistant message trees, as export JSON (dicts).

Shapes come from a random parent array (node i > 0 hangs under some earlier node), so trees are
built without recursion: bushy trees, long chains and everything between. Roles alternate from
a prompter root; the flags the filters look at (deleted, synthetic, rank, lang, review_result,
tree_state) are drawn at random, biased towards values that keep the tree.
"""

from __future__ import annotations

from hypothesis import strategies as st

WORDS = ["alpha", "beta", "gamma", "delta", "<|endoftext|>", "ünïcödé", "😀", "line\nbreak", " "]


@st.composite
def export_trees(draw, tree_id: str | None = None, max_nodes: int = 14, flags: bool = True) -> dict:
    tree_id = tree_id or "t-" + draw(st.text("abcdef0123456789", min_size=6, max_size=6))
    count = draw(st.integers(1, max_nodes))
    chainy = draw(st.booleans())
    parents = [None]
    for index in range(1, count):
        if chainy and draw(st.booleans()):
            parents.append(index - 1)
        else:
            parents.append(draw(st.integers(0, index - 1)))
    nodes: list[dict] = []
    depth = [0] * count
    for index in range(count):
        if index:
            depth[index] = depth[parents[index]] + 1
        node = {
            "message_id": f"{tree_id}-m{index}",
            "text": " ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3))),
            "role": "prompter" if depth[index] % 2 == 0 else "assistant",
            "lang": "en",
            "review_result": True,
            "replies": [],
        }
        if flags:
            node["deleted"] = draw(st.sampled_from([False] * 9 + [True]))
            node["synthetic"] = draw(st.sampled_from([False] * 9 + [True]))
            node["rank"] = draw(st.sampled_from([None, None, 0, 1, 2]))
            if index == 0:
                node["lang"] = draw(st.sampled_from(["en"] * 6 + ["de"]))
                node["review_result"] = draw(st.sampled_from([True] * 6 + [False]))
        if index:
            node["parent_id"] = nodes[parents[index]]["message_id"]
            nodes[parents[index]]["replies"].append(node)
        nodes.append(node)
    state = draw(st.sampled_from(["ready_for_export"] * 6 + ["growing"])) if flags else "ready_for_export"
    return {"message_tree_id": tree_id, "tree_state": state, "prompt": nodes[0]}


@st.composite
def export_forests(draw, min_size: int = 1, max_size: int = 5, **kwargs) -> list[dict]:
    """Several trees with distinct ids."""
    size = draw(st.integers(min_size, max_size))
    return [draw(export_trees(tree_id=f"t{index}", **kwargs)) for index in range(size)]


def flatten(tree: dict) -> list[dict]:
    """The tree's messages as flat rows (parent_id set, replies removed), depth first, with the tree's id and state."""
    rows = []
    stack = [tree["prompt"]]
    while stack:
        node = stack.pop()
        row = {k: v for k, v in node.items() if k != "replies"}
        row.setdefault("parent_id", None)
        row["message_tree_id"] = tree["message_tree_id"]
        row["tree_state"] = tree["tree_state"]
        rows.append(row)
        stack.extend(reversed(node["replies"]))
    return rows


def keep_sibling_order(rows: list[dict], order: list[int]) -> list[dict]:
    """Rows in the order of the permutation `order`, except that siblings keep their relative order.

    Reply order decides which prompter leaf is a "first reply", so a row order that keeps siblings
    in order must give exactly the same threads.
    """
    queues: dict = {}
    for row in rows:
        queues.setdefault((row["message_tree_id"], row["parent_id"]), []).append(row)
    iterators = {key: iter(group) for key, group in queues.items()}
    return [next(iterators[(rows[i]["message_tree_id"], rows[i]["parent_id"])]) for i in order]


def thread_records(tree: dict, with_tree_id: bool = True) -> list[dict]:
    """Every root-to-leaf path of the tree as a thread record (as a threads export holds it), leaves in order."""
    records = []
    stack = [[tree["prompt"]]]
    while stack:
        path = stack.pop()
        replies = path[-1]["replies"]
        if not replies:
            messages = [{k: v for k, v in node.items() if k != "replies"} for node in path]
            record = {"thread_id": f"th-{messages[-1]['message_id']}", "tree_state": tree["tree_state"], "thread": messages}
            if with_tree_id:
                record["message_tree_id"] = tree["message_tree_id"]
            records.append(record)
        stack.extend(path + [reply] for reply in reversed(replies))
    return records
