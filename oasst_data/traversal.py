"""Root-to-leaf threads of a message tree, by Open-Assistant's SFT rule, with explicit stacks.

The rule (model_training/custom_datasets/oasst_dataset.py, mode "sft"): walk the tree depth
first over root-to-node paths, replies in file order. A path is a candidate when it has at
least two messages, its last message has no replies, and that message is an assistant or is
the *first* reply of its parent. Filters see the whole candidate path; a trailing prompter is
trimmed afterwards, so every thread ends with an assistant message.
"""

from __future__ import annotations

from collections.abc import Iterator

from .records import ExportMessage


class InvalidTreeError(ValueError):
    """Roles do not alternate prompter/assistant from a prompter root."""


def iter_messages(root: ExportMessage) -> Iterator[tuple[ExportMessage, int]]:
    """Every message with its depth (root = 1), depth first, replies in order."""
    stack: list[tuple[ExportMessage, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        replies = node.replies
        if replies:
            stack.extend((reply, depth + 1) for reply in reversed(replies))


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def validate_tree(root: ExportMessage) -> set[str]:
    """The tree's message ids; InvalidTreeError unless it is a whole tree whose shape can be trained on.

    The root is a prompter without a parent, roles alternate on every edge, no message id appears
    twice (a thread is named by its last message's id), and every `parent_id` given names the
    message the reply is nested under (a thread record's messages form one chain).
    """
    if root.role != "prompter":
        raise InvalidTreeError(f"root message {root.message_id} is {root.role}, expected prompter")
    if root.parent_id:
        raise InvalidTreeError(f"root message {root.message_id} has parent_id {root.parent_id}: the tree or thread does not start at its root")
    stack = [root]
    seen = {root.message_id}
    while stack:
        node = stack.pop()
        replies = node.replies
        if replies:
            for reply in replies:
                if reply.message_id in seen:
                    raise InvalidTreeError(f"message id {reply.message_id} appears twice in the tree")
                seen.add(reply.message_id)
                if reply.role == node.role:
                    raise InvalidTreeError(
                        f"message {reply.message_id} is {_article(reply.role)} {reply.role} reply to {_article(node.role)} {node.role} "
                        f"({node.message_id}); roles must alternate"
                    )
                if reply.parent_id and reply.parent_id != node.message_id:
                    raise InvalidTreeError(
                        f"message {reply.message_id} has parent_id {reply.parent_id} but follows {node.message_id}"
                    )
            stack.extend(replies)
    return seen


def iter_candidate_paths(root: ExportMessage) -> Iterator[list[ExportMessage]]:
    """Yield each candidate path (before filters and before trimming), in depth-first order.

    Each yielded list is a fresh copy; the walk keeps one shared path and a stack of
    (node, depth, is_first_reply), so a 20,000-message chain costs no Python recursion.
    """
    path: list[ExportMessage] = []
    stack: list[tuple[ExportMessage, int, bool]] = [(root, 0, True)]
    while stack:
        node, depth, is_first = stack.pop()
        del path[depth:]
        path.append(node)
        replies = node.replies
        if replies:
            for index in range(len(replies) - 1, -1, -1):
                stack.append((replies[index], depth + 1, index == 0))
        elif depth >= 1 and (node.role == "assistant" or is_first):
            yield list(path)


def trim_trailing_prompter(path: list[ExportMessage]) -> list[ExportMessage]:
    """The thread that trains: drop a trailing prompter leaf (the reference's `t.pop()`)."""
    if path and path[-1].role == "prompter":
        return path[:-1]
    return path
