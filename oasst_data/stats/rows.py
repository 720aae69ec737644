"""Flat rows for the statistics: one per message, label, tree and thread, as Arrow schemas.

A tree is turned into rows with an explicit stack, never recursion. The
rows carry lengths and flags only, never the texts, so spilling them stays small.
"""

from __future__ import annotations

import pyarrow as pa

from ..conversation import is_blank
from ..readers.oasst import LocatedTree
from ..records import AlpacaRecord
from ..serialize import SpecialText

MESSAGE_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("tree_id", pa.string()),
        ("message_id", pa.string()),
        ("parent_id", pa.string()),
        ("role", pa.string()),
        ("lang", pa.string()),
        ("depth", pa.int32()),
        ("n_replies", pa.int32()),
        ("n_siblings", pa.int32()),  # other replies of the same parent
        ("assistant_replies", pa.int32()),
        ("ranked_assistant_replies", pa.int32()),
        ("synthetic", pa.bool_()),
        ("deleted", pa.bool_()),
        ("review_result", pa.bool_()),  # null when the export has no review result
        # Only whether a rank is set: a rank is any JSON integer, beyond what an Arrow integer holds.
        ("ranked", pa.bool_()),
        ("model_name", pa.string()),
        ("marker_text", pa.bool_()),
        ("blank_text", pa.bool_()),  # empty or only whitespace
        ("text_chars", pa.int32()),
        ("tokens", pa.int32()),  # null without a tokenizer
    ]
)

LABEL_SCHEMA = pa.schema(
    [
        ("message_id", pa.string()),
        ("role", pa.string()),
        ("label", pa.string()),
        ("value", pa.float64()),
        # Any JSON integer: a float (exact below 2**53), so a count beyond 64 bits is summed, not a crash.
        ("count", pa.float64()),
    ]
)

TREE_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("tree_id", pa.string()),
        ("tree_state", pa.string()),
        ("lang", pa.string()),  # the root prompt's
        ("messages", pa.int32()),
        ("max_depth", pa.int32()),
    ]
)

THREAD_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("tree_id", pa.string()),
        ("lang", pa.string()),
        ("split", pa.string()),
        ("turns", pa.int32()),
        ("chars", pa.int64()),
        ("tokens", pa.int64()),  # serialized as the build does: per turn marker + text + eos
        ("trainable_tokens", pa.int64()),
    ]
)


def tree_rows(located: LocatedTree, source: str = "oasst", special_text: SpecialText = SpecialText()) -> tuple[list[tuple[dict, str]], list[dict]]:
    """(row, text) per message of the tree, depth first, and one row per label of a message.

    The rows hold no text (`tokens` is left empty); an explicit stack of (message, depth,
    siblings) walks the tree, so a chain of any depth costs no recursion.
    """
    tree_id = located.tree.message_tree_id
    messages: list[tuple[dict, str]] = []
    labels: list[dict] = []
    stack = [(located.tree.prompt, 1, 0)]
    while stack:
        message, depth, siblings = stack.pop()
        replies = message.replies or ()
        assistants = ranked = 0
        for reply in replies:
            if reply.role == "assistant":
                assistants += 1
                ranked += reply.rank is not None
        text = message.text
        row = {
            "source": source,
            "tree_id": tree_id,
            "message_id": message.message_id,
            "parent_id": message.parent_id,
            "role": message.role,
            "lang": message.lang,
            "depth": depth,
            "n_replies": len(replies),
            "n_siblings": siblings,
            "assistant_replies": assistants,
            "ranked_assistant_replies": ranked,
            "synthetic": bool(message.synthetic),
            "deleted": bool(message.deleted),
            "review_result": message.review_result,
            "ranked": message.rank is not None,
            "model_name": message.model_name,
            "marker_text": special_text(text),
            "blank_text": is_blank(text),
            "text_chars": len(text),
            "tokens": None,
        }
        messages.append((row, text))
        if message.labels:
            for name, entry in message.labels.items():
                labels.append({"message_id": message.message_id, "role": message.role, "label": name, "value": entry.value, "count": float(entry.count)})
        if replies:
            others = len(replies) - 1
            stack.extend((reply, depth + 1, others) for reply in reversed(replies))
    return messages, labels


def alpaca_message_rows(record: AlpacaRecord, prompt: str, record_id: str, special_text: SpecialText = SpecialText()) -> list[dict]:
    """An Alpaca record as a two-message tree: the prompt (instruction + input) and the output."""
    common = {
        "source": "alpaca",
        "tree_id": record_id,
        "lang": "en",  # what the thread extractor assigns to Alpaca threads
        "n_siblings": 0,
        "synthetic": False,
        "deleted": False,
        "review_result": None,
        "ranked": False,
        "model_name": None,
        "tokens": None,
    }
    prompter = common | {
        "message_id": f"{record_id}:prompt",
        "parent_id": None,
        "role": "prompter",
        "depth": 1,
        "n_replies": 1,
        "assistant_replies": 1,
        "ranked_assistant_replies": 0,
        "marker_text": special_text(prompt),
        "blank_text": is_blank(prompt),
        "text_chars": len(prompt),
    }
    assistant = common | {
        "message_id": f"{record_id}:output",
        "parent_id": f"{record_id}:prompt",
        "role": "assistant",
        "depth": 2,
        "n_replies": 0,
        "assistant_replies": 0,
        "ranked_assistant_replies": 0,
        "marker_text": special_text(record.output),
        "blank_text": is_blank(record.output),
        "text_chars": len(record.output),
    }
    return [prompter, assistant]
