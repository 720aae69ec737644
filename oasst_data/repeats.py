"""Records read a second time across inputs: a tree, a thread, or one message in two places.

Overlapping exports (an "all" export and its "ready" subset, one export as trees and as
threads) would otherwise be trained on twice. What counts as read before:

- a message tree whose id was read before (`duplicate_tree`);
- a thread record ending at the message another thread record ended at (`duplicate_thread`);
  and, not a bad record, one whose thread (trailing prompter trimmed) another gave (`duplicate_path`);
- a record holding a message id that another record held (`duplicate_message`), except thread
  records of one tree, which share their prefixes by construction. This is how a thread record
  and a message tree holding the same conversation are told apart from new data, and how an
  export that reuses a message id in two trees is caught.

Every record is checked, whatever the selection: a repeat is a bad record whether or not the
filters would keep it, so `stats` describes the same export under any filter. A kept record's
ids come from the walk `validate_tree` makes anyway. A record set aside (a repeat, an invalid
tree) is forgotten, so a later copy is compared with the record that was kept.
Memory: the ids, ~130 bytes a message.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import msgspec

from .readers.oasst import LocatedTree
from .records import ExportMessage


class _FirstRead(msgspec.Struct, frozen=True, gc=False):
    """The record that first brought an id; shared by all the ids one record brought.

    A msgspec Struct: made in C and never tracked by the garbage collector (one per record kept).
    """

    tree_id: str
    source: str
    line: int
    is_thread: bool

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass(frozen=True)
class Repeat:
    """A record read before: the funnel's drop reason and the sentence for the error or quarantine."""

    reason: str
    message: str


_HINT = "(overlapping inputs? give each once, or --on-bad-record skip keeps the first copy)"


class SeenRecords:
    """Remembers the trees, threads and messages read; names a record read before."""

    def __init__(self) -> None:
        self._trees: dict[str, _FirstRead] = {}
        self._threads: dict[str, _FirstRead] = {}
        self._messages: dict[str, _FirstRead] = {}
        self._thread_ends: set[str] = set()
        # Records the tree filters dropped, by (is a thread record, key) and reason: a later copy's
        # error says so, as "skip keeps the first copy" would keep one that is not trained on.
        self._dropped: dict[tuple[bool, str], str] = {}

    def check_record(self, located: LocatedTree) -> Repeat | None:
        """The repeat `located` is by its tree id (or a thread record's last message), or None after remembering it."""
        seen, key = self._key(located)
        earlier = seen.get(key)
        if earlier is not None:
            what, reason = (f"thread ending at message {key}", "duplicate_thread") if seen is self._threads else (f"tree {key}", "duplicate_tree")
            dropped = self._dropped.get((seen is self._threads, key))
            if dropped is not None:
                return Repeat(reason, f"{what} was already read at {earlier.where}, where the filters dropped it ({dropped}): "
                                      "give the copy you want once (--on-bad-record skip keeps that first, dropped copy)")
            return Repeat(reason, f"{what} was already read at {earlier.where} {_HINT}")
        seen[key] = _first_read(located)
        return None

    def check_messages(self, located: LocatedTree, message_ids: Collection[str] | None = None) -> Repeat | None:
        """The message of `located` read before in another record, or None after remembering its ids.

        `message_ids` are the record's ids when known (`validate_tree` returns them), else the
        tree is walked. A repeat found here also forgets the record's key (`forget_record`).
        """
        messages = self._messages
        first = _first_read(located)
        if message_ids is None:
            message_ids = _message_ids(located.tree.prompt)
        # The common case (no id seen before) stays in C: one disjointness test, one update.
        if messages.keys().isdisjoint(message_ids):
            messages.update(dict.fromkeys(message_ids, first))
            return None
        for message_id in _message_ids(located.tree.prompt):  # in tree order, so the first repeat is named
            earlier = messages.get(message_id)
            if earlier is not None and not (first.is_thread and earlier.is_thread and earlier.tree_id == first.tree_id):
                self.forget_record(located)
                return Repeat("duplicate_message", _repeated_message(message_id, first, earlier))
        messages.update(dict.fromkeys((i for i in message_ids if i not in messages), first))
        return None

    def forget_record(self, located: LocatedTree) -> None:
        """`located` (remembered by `check_record`) is set aside: a later copy is not its repeat."""
        seen, key = self._key(located)
        if seen.get(key) == _first_read(located):
            del seen[key]

    def note_dropped(self, located: LocatedTree, reason: str) -> None:
        """The tree filters dropped `located` (checked by `check_record`) for `reason`."""
        seen, key = self._key(located)
        if seen.get(key) == _first_read(located):
            self._dropped[(seen is self._threads, key)] = reason

    def first_thread_end(self, message_id: str) -> bool:
        """Whether no thread record before gave a thread ending at `message_id` (its trailing prompter trimmed).

        Thread records ending in sibling prompter leaves ([Q, A, Q2] and [Q, A, Q3]) are distinct
        records that trim to the same thread [Q, A]: not bad records, but one thread.
        """
        if message_id in self._thread_ends:
            return False
        self._thread_ends.add(message_id)
        return True

    def _key(self, located: LocatedTree) -> tuple[dict[str, _FirstRead], str]:
        if located.kind == "thread":
            return self._threads, _leaf(located.tree.prompt).message_id
        return self._trees, located.tree.message_tree_id


def _first_read(located: LocatedTree) -> _FirstRead:
    return _FirstRead(located.tree.message_tree_id, located.source, located.line, located.kind == "thread")


def _leaf(root: ExportMessage) -> ExportMessage:
    """The last message of a one-path tree (a thread record), without recursion."""
    message = root
    while message.replies:
        message = message.replies[-1]
    return message


def _message_ids(root: ExportMessage) -> list[str]:
    """Every message id of the tree, depth first with replies in order, without recursion.

    Not `traversal.iter_messages`: its (message, depth) tuples made extraction ~4% slower, and
    every tree the filters drop is walked here.
    """
    ids: list[str] = []
    stack = [root]
    while stack:
        message = stack.pop()
        ids.append(message.message_id)
        replies = message.replies
        if replies:
            stack.extend(reversed(replies))
    return ids


def _repeated_message(message_id: str, first: _FirstRead, earlier: _FirstRead) -> str:
    here = "thread record" if first.is_thread else "tree"
    there = f"thread record of tree {earlier.tree_id}" if earlier.is_thread else f"tree {earlier.tree_id}"
    if first.is_thread != earlier.is_thread and first.tree_id == earlier.tree_id:
        why = "(a tree and its threads given both? give one of them, or --on-bad-record skip keeps the first)"
    elif first.tree_id == earlier.tree_id:
        why = _HINT
    else:
        why = "(a message id in two trees: a damaged export? --on-bad-record skip keeps the first)"
    return f"message {message_id} of this {here} (tree {first.tree_id}) was already read in the {there} at {earlier.where} {why}"
