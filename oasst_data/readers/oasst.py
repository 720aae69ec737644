"""Open-Assistant export reader: message trees, single messages and threads, one JSON object a line.

Trees stream in constant memory. Flat messages (one message a line, or Hugging Face `oasst1`
rows) are buffered per file and rebuilt into trees in any row order, without recursion. A tree
line nested deeper than msgspec parses is re-read without recursion (`deep_json`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ..errors import BadRecordError
from ..quarantine import BadRecordHandler
from ..records import ExportMessage, ExportMessageThread, ExportMessageTree, LabelValue, Oasst1Row, _RecordKind, _TreeLine
from . import deep_json
from .files import JSON_WHITESPACE, ByteCounter, iter_lines
from .hints import alpaca_record_hint, array_hint, compressed_reason, lone_surrogate_escape, pretty_printed_hint

log = logging.getLogger(__name__)

_kind_decoder = msgspec.json.Decoder(_RecordKind)
_tree_decoder = msgspec.json.Decoder(ExportMessageTree)
_message_decoder = msgspec.json.Decoder(ExportMessage)
_thread_decoder = msgspec.json.Decoder(ExportMessageThread)
_row_decoder = msgspec.json.Decoder(Oasst1Row)
_line_decoder = msgspec.json.Decoder(_TreeLine)


@dataclass(slots=True)
class LocatedTree:
    """A message tree and where it came from (for error messages and quarantine)."""

    tree: ExportMessageTree
    source: str
    line: int
    raw: bytes | None = None
    kind: str = "message_tree"
    # A tree rebuilt from flat messages (kind "messages") under the skip policy: the (line, raw)
    # of each of its messages, in line order, so a tree set aside is quarantined line by line.
    # None otherwise (one line holds the tree; or under fail only `line` names the first error).
    lines: tuple[tuple[int, bytes], ...] | None = None

    def record_lines(self) -> tuple[tuple[int, bytes | None], ...]:
        """The input lines (number, raw) this tree was read from: several for flat messages under skip."""
        return self.lines if self.lines is not None else ((self.line, self.raw),)


@dataclass
class ReadCounts:
    """Lines read per record kind, and those set aside as bad."""

    lines: int = 0
    message_trees: int = 0
    messages: int = 0
    threads: int = 0
    bad_lines: int = 0
    # Good lines whose messages were set aside while rebuilding trees (duplicates, orphans, cycles).
    unplaced_messages: int = 0
    # Blank lines (empty or whitespace): no record, so not counted in `lines`; skipped, as the JSON
    # Lines readers of datasets, pyarrow and pandas skip them.
    blank_lines: int = 0
    files: list[str] = field(default_factory=list)

    def __add__(self, other: "ReadCounts") -> "ReadCounts":
        return ReadCounts(
            self.lines + other.lines,
            self.message_trees + other.message_trees,
            self.messages + other.messages,
            self.threads + other.threads,
            self.bad_lines + other.bad_lines,
            self.unplaced_messages + other.unplaced_messages,
            self.blank_lines + other.blank_lines,
            self.files + other.files,
        )


def _describe_decode_error(error: Exception, data: bytes | None = None) -> str:
    if isinstance(error, msgspec.DecodeError) and data is not None:
        # msgspec calls this "truncated" or a bad escape; say what it is.
        lone = lone_surrogate_escape(data)
        if lone is not None:
            return lone
    if isinstance(error, RecursionError):
        return "nesting deeper than the JSON parser allows"
    # msgspec < 0.23 raised UnicodeDecodeError on invalid UTF-8; 0.23 a DecodeError saying so.
    if isinstance(error, UnicodeDecodeError) or (isinstance(error, msgspec.DecodeError) and "UTF-8" in str(error)):
        # msgspec reports the offset inside the string it was decoding; find it in the line.
        start = getattr(error, "start", 0)
        if data is not None:
            try:
                data.decode("utf-8")
            except UnicodeDecodeError as whole:
                start = whole.start
        return f"invalid UTF-8 at byte {start} of the line"
    message = str(error)
    if isinstance(error, msgspec.ValidationError):
        return f"invalid record: {_shorten_reply_path(message)}"
    constant = _non_standard_constant(error, data)
    if constant is not None:
        return f"malformed JSON: {message} ({constant} is not JSON; write null or a string)"
    return f"malformed JSON: {message}"


_INVALID_AT_BYTE = re.compile(r"invalid character \(byte (\d+)\)")


def _non_standard_constant(error: Exception, data: bytes | None) -> str | None:
    """The NaN/Infinity that Python's json writes for a float that is no number (json.dumps
    allows it by default), when that is where msgspec stopped: its message names only a byte."""
    match = _INVALID_AT_BYTE.search(str(error)) if data is not None else None
    if match is None:
        return None
    at = int(match.group(1))
    if data.startswith(b"-Infinity", at - 1):  # msgspec points at the 'I' after the sign
        return "-Infinity"
    for constant in ("NaN", "Infinity"):
        if data.startswith(constant.encode(), at):
            return constant
    return None


def check_utf8(data: bytes, source: str, line: int) -> None:
    """Raise BadRecordError when a decoded line holds invalid UTF-8 that the decoder passed over.

    msgspec skips unknown keys and the values of fields it does not keep without checking their
    bytes: a corrupted key (`review_\xffresult`) would otherwise just vanish, and with it a
    filter's field. About 1% of the decoding time (ASCII lines are checked at memory speed).
    """
    if data.isascii():
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadRecordError(source, line, f"invalid UTF-8 at byte {error.start} of the line", data) from None


# A run of `.replies[i]` steps in a msgspec error path: a message 1,500 replies deep made a
# 16 KB error line. The first and last few steps are kept, the middle counted.
_REPLY_STEPS = re.compile(r"(?:\.replies\[\d+\]){7,}")
_REPLY_STEP = re.compile(r"\.replies\[\d+\]")
_KEPT_STEPS = 3


def _shorten_reply_path(message: str) -> str:
    def shorten(run: re.Match) -> str:
        steps = _REPLY_STEP.findall(run.group(0))
        hidden = len(steps) - 2 * _KEPT_STEPS
        return "".join(steps[:_KEPT_STEPS]) + f" ... {hidden} more .replies[i] ... " + "".join(steps[-_KEPT_STEPS:])

    return _REPLY_STEPS.sub(shorten, message)


def decode_record(data: bytes, source: str, line: int) -> ExportMessageTree | ExportMessage | ExportMessageThread:
    record = _decode_record(data, source, line)
    check_utf8(data, source, line)
    return record


def _decode_record(data: bytes, source: str, line: int) -> ExportMessageTree | ExportMessage | ExportMessageThread:
    """Decode one export line into its typed record, detecting the kind as the reference does.

    The kind is decided by the top-level keys in the order message_id, thread_id, message_tree_id.
    A valid tree line (the common case) is decoded in a single pass; anything else takes the
    detection path, which also gives the canonical error.
    """
    try:
        fast = _line_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        pass  # the detection path below reports the problem
    else:
        if not fast.message_id and not fast.thread_id:
            if fast.message_tree_id is not None and fast.prompt is not None:
                return ExportMessageTree(fast.message_tree_id, fast.prompt, fast.tree_state, fast.origin)
        elif fast.message_id:
            return _decode_known(_decode_message, data, source, line)
        else:
            return _decode_known(_thread_decoder.decode, data, source, line)
    return _decode_detected(data, source, line)


def _decode_known(decode, data: bytes, source: str, line: int):
    try:
        return decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as error:
        raise BadRecordError(source, line, _describe_decode_error(error, data), data) from None


def _decode_detected(data: bytes, source: str, line: int) -> ExportMessageTree | ExportMessage | ExportMessageThread:
    try:
        kind = _kind_decoder.decode(data)
        if kind.message_id:
            return _decode_message(data)
        if kind.thread_id:
            return _thread_decoder.decode(data)
        if kind.message_tree_id:
            return _tree_decoder.decode(data)
    except RecursionError as error:
        deep = _decode_deep_tree(data, source, line)
        if deep is None:
            raise BadRecordError(source, line, _describe_decode_error(error, data), data) from None
        return deep
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as error:
        raise BadRecordError(source, line, _describe_with_hint(error, data, source, line), data) from None
    raise BadRecordError(
        source,
        line,
        "unknown record: expected a message tree (message_tree_id), a message (message_id) or a thread (thread_id)"
        + alpaca_record_hint(data),
        data,
    )


def _describe_with_hint(error: Exception, data: bytes, source: str, line: int) -> str:
    """The reason a line is no export record, with what it looks like when that is telling:
    compressed bytes, a JSON array (Alpaca data, or records that should be one a line), or
    the first line of a pretty-printed object."""
    compressed = compressed_reason(data, source, line)
    if compressed is not None:
        return compressed
    reason = _describe_decode_error(error, data)
    if data.lstrip()[:1] == b"[":
        return reason + array_hint(data)
    return reason + pretty_printed_hint(error, data, line)


# JSON types by the names msgspec's errors give them.
_JSON_TYPE_NAMES = {list: "array", dict: "object", str: "str", int: "int", float: "float", bool: "bool", type(None): "null"}


def _decode_deep_tree(data: bytes, source: str, line: int) -> ExportMessageTree | None:
    """A tree line nested deeper than msgspec goes, read without recursion, message by message.

    Each message (its replies taken out) is decoded by the same decoder as any other, so it is
    validated the same way; replies are linked in order. None when the line is not such a tree
    (then the depth itself is the error).
    """
    try:
        document = deep_json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise BadRecordError(source, line, _describe_decode_error(error, data), data) from None
    except deep_json.DeepJSONError as error:
        raise BadRecordError(source, line, lone_surrogate_escape(data) or f"malformed JSON: {error}", data) from None
    if not (isinstance(document, dict) and "message_id" not in document and "thread_id" not in document and "message_tree_id" in document):
        return None
    if not isinstance(document.get("prompt"), dict):
        # A tree whose depth is in its prompt's value, not in messages: the type is the error.
        if "prompt" not in document:
            raise BadRecordError(source, line, "invalid record: Object missing required field `prompt`", data)
        got = _JSON_TYPE_NAMES.get(type(document["prompt"]), "value")
        raise BadRecordError(source, line, f"invalid record: Expected `object`, got `{got}` - at `$.prompt`", data)
    try:
        head = _line_decoder.decode(_reencode({key: value for key, value in document.items() if key != "prompt"}))
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as error:
        raise BadRecordError(source, line, _describe_decode_error(error, None), data) from None
    if not isinstance(head.message_tree_id, str):
        raise BadRecordError(source, line, "invalid record: Expected `str`, got `null` - at `$.message_tree_id`", data)
    try:
        root = _link_messages(document["prompt"], source, line, data)
    except RecursionError:  # deep nesting inside a message's own fields, not in its replies
        return None
    return ExportMessageTree(head.message_tree_id, root, head.tree_state, head.origin)


# Parsed values back to JSON for the typed decoders; a Decimal (an integer too long for Python)
# is written as the number it was.
_reencode = msgspec.json.Encoder(decimal_format="number").encode


def _link_messages(prompt: dict, source: str, line: int, data: bytes) -> ExportMessage:
    """Decode each message dict of a parsed tree on its own and link the replies, depth first."""
    root = None
    stack: list[tuple[dict, ExportMessage | None, int]] = [(prompt, None, 1)]
    while stack:
        node, parent, depth = stack.pop()
        replies = node.get("replies")
        if replies is not None and not (isinstance(replies, list) and all(isinstance(reply, dict) for reply in replies)):
            raise BadRecordError(source, line, f"invalid record: replies of message at depth {depth} must be an array of objects", data)
        fields = {key: value for key, value in node.items() if key != "replies"}
        try:
            message = _decode_message(_reencode(fields))
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            where = f" (message {fields.get('message_id')!r} at depth {depth})"
            raise BadRecordError(source, line, _describe_decode_error(error, None) + where, data) from None
        message.replies = [] if replies is not None else None
        if parent is None:
            root = message
        else:
            parent.replies.append(message)
        stack.extend((reply, message, depth + 1) for reply in reversed(replies or ()))
    return root


def _is_column_layout_error(error: msgspec.ValidationError) -> bool:
    text = str(error)
    return "$.labels" in text or "$.emojis" in text


def _has_columns(row: object) -> bool:
    """True when labels or emojis hold parallel lists ({"name": [...], ...}), the `oasst1` layout."""
    if not isinstance(row, dict):
        return False
    for name in ("labels", "emojis"):
        value = row.get(name)
        if isinstance(value, dict) and isinstance(value.get("name"), list):
            return True
    return False


def _decode_message(data: bytes) -> ExportMessage:
    try:
        return _message_decoder.decode(data)
    except msgspec.ValidationError as error:
        # Hugging Face `oasst1` rows store labels/emojis as column lists; accept that layout too.
        # Anything else keeps the error of the export layout (e.g. a label without its value).
        if not _is_column_layout_error(error) or not _has_columns(msgspec.json.decode(data)):
            raise
    return message_from_row(_row_decoder.decode(data))


def _columns(field: str, columns: dict[str, list]) -> list[tuple]:
    """Zip parallel lists, refusing different lengths or repeated names (nothing dropped silently)."""
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{name} {length}" for name, length in lengths.items())
        raise msgspec.ValidationError(f"column lists of different lengths ({detail}) - at `$.{field}`")
    names = columns["name"]
    if len(set(names)) != len(names):
        raise msgspec.ValidationError(f"a name appears twice in the column lists - at `$.{field}.name`")
    return list(zip(*columns.values()))


def message_from_row(row: Oasst1Row) -> ExportMessage:
    """An `oasst1`-layout message (labels/emojis as parallel lists) as an ExportMessage."""
    fields = msgspec.structs.asdict(row)
    if row.emojis is not None:
        fields["emojis"] = dict(_columns("emojis", {"name": row.emojis.name, "count": row.emojis.count}))
    if row.labels is not None:
        rows = _columns("labels", {"name": row.labels.name, "value": row.labels.value, "count": row.labels.count})
        fields["labels"] = {name: LabelValue(value=value, count=count) for name, value, count in rows}
    return ExportMessage(**fields)


def message_from_columns(row: dict[str, Any]) -> ExportMessage:
    """Convert a message dict, where labels/emojis may be HF column lists, to an ExportMessage.

    Raises msgspec.ValidationError naming the field when the row is invalid.
    """
    try:
        return msgspec.convert(row, ExportMessage)
    except msgspec.ValidationError as error:
        if not _is_column_layout_error(error) or not _has_columns(row):
            raise
    return message_from_row(msgspec.convert(row, Oasst1Row))


def thread_as_tree(thread: ExportMessageThread) -> ExportMessageTree:
    """A pre-extracted thread becomes a one-path tree, so the same rules and filters apply."""
    messages = [msgspec.structs.replace(m, replies=[]) for m in thread.thread]
    for parent, child in zip(messages, messages[1:]):
        parent.replies = [child]
    if not messages:
        raise ValueError("empty thread")
    # The tree, not the thread, decides the split: every thread of a tree must land on the same
    # side. Without a tree id the root's stands in (Open-Assistant names a tree by its root);
    # without a tree state, the state its root message carries (as flat messages do).
    root = messages[0]
    return ExportMessageTree(
        message_tree_id=thread.message_tree_id or root.message_tree_id or root.message_id,
        prompt=messages[0],
        tree_state=thread.tree_state or root.tree_state,
    )


class FlatMessageAssembler:
    """Rebuilds trees from flat messages given in any order; no recursion over user data."""

    def __init__(self, source: str, handler: BadRecordHandler):
        self.source = source
        self.handler = handler
        self.messages: dict[str, ExportMessage] = {}
        self.lines: dict[str, int] = {}
        self.raw: dict[str, bytes] = {}
        self.order: list[str] = []
        self.unplaced = 0

    def add(self, message: ExportMessage, line: int, raw: bytes) -> None:
        if message.message_id in self.messages:
            self.unplaced += 1  # counted before the handler raises (strict) or records it (skip)
            self.handler(
                BadRecordError(
                    self.source,
                    line,
                    f"duplicate message_id {message.message_id} (first seen on line {self.lines[message.message_id]})",
                    raw,
                )
            )
            return
        if message.replies is None:
            message.replies = []
        self.messages[message.message_id] = message
        self.lines[message.message_id] = line
        if self.handler.policy.value == "skip":
            self.raw[message.message_id] = raw
        self.order.append(message.message_id)

    def _reject(self, message_id: str, reason: str) -> None:
        self.unplaced += 1
        self.handler(BadRecordError(self.source, self.lines[message_id], reason, self.raw.get(message_id)))

    def trees(self) -> Iterator[LocatedTree]:
        """Attach replies in row order (after any nested ones) and yield trees by root row order."""
        children: dict[str, list[str]] = {}
        roots: list[str] = []
        orphans: list[str] = []
        for message_id in self.order:
            parent = self.messages[message_id].parent_id
            if parent is None:
                roots.append(message_id)
            elif parent not in self.messages:
                orphans.append(message_id)
            else:
                children.setdefault(parent, []).append(message_id)
        for message_id in orphans:
            parent = self.messages[message_id].parent_id
            # Nested replies and other files are not searched: flat messages are rebuilt file by file.
            self._reject(message_id, f"message {message_id}: its parent {parent} is not a flat message of this file")
        placed: set[str] = set()
        # Descendants of orphans are unreachable too; they are reported with the orphan's id.
        for orphan in orphans:
            stack = list(children.get(orphan, ()))
            while stack:
                current = stack.pop()
                placed.add(current)
                self._reject(current, f"message {current}: an ancestor ({orphan}) has no parent in this file")
                stack.extend(children.get(current, ()))
        placed.update(orphans)
        # Under skip, each tree's message ids, so a tree set aside later is quarantined line by line.
        keep_lines = self.handler.policy.value == "skip"
        members: dict[str, list[str]] = {}
        for root_id in roots:
            stack = [root_id]
            if keep_lines:
                members[root_id] = member_ids = []
            while stack:
                current = stack.pop()
                placed.add(current)
                if keep_lines:
                    member_ids.append(current)
                node = self.messages[current]
                kids = children.get(current, ())
                node.replies.extend(self.messages[k] for k in kids)
                stack.extend(kids)
        cyclic = [m for m in self.order if m not in placed]
        for message_id in cyclic:
            self._reject(message_id, f"message {message_id}: part of a parent_id cycle (never reaches a root)")
        for root_id in roots:
            root = self.messages[root_id]
            tree_id = root.message_tree_id or root.message_id
            tree = ExportMessageTree(message_tree_id=tree_id, prompt=root, tree_state=root.tree_state)
            lines = None
            if keep_lines:
                # The raw bytes leave the assembler with their tree (freed once it is processed).
                ids = members.pop(root_id)
                lines = tuple(sorted(((self.lines[m], self.raw.pop(m)) for m in ids), key=lambda pair: pair[0]))
            yield LocatedTree(tree, self.source, self.lines[root_id], None, "messages", lines)
        self.messages.clear()
        self.raw.clear()


def log_blank_lines(source: str, blank: int) -> None:
    if blank:
        log.info("%s: skipped %d blank line(s): they hold no record (JSON Lines readers such as datasets skip them too)", source, blank)


def log_empty_file(source: str) -> None:
    """An input that holds no record at all is most often a mistake (a copy cut short, the wrong file)."""
    log.warning("%s: holds no record", source)


class OasstExportReader:
    """Streams LocatedTree objects from Open-Assistant JSONL exports (.jsonl, .gz, .zst)."""

    def __init__(self, paths: Iterable[Path], handler: BadRecordHandler | None = None, counter: ByteCounter | None = None):
        self.paths = list(paths)
        self.handler = handler or BadRecordHandler()
        self.counts = ReadCounts()
        self.bytes = counter or ByteCounter()

    def __iter__(self) -> Iterator[LocatedTree]:
        for path in self.paths:
            yield from self._read_file(path)

    def _read_file(self, path: Path) -> Iterator[LocatedTree]:
        source = str(path)
        counts = self.counts
        counts.files.append(source)
        assembler: FlatMessageAssembler | None = None
        lines = iter_lines(path, source, self.bytes)
        blank_before = counts.blank_lines
        lines_before = counts.lines
        threads_with_replies = 0
        while True:
            try:
                line = next(lines)
            except StopIteration:
                break
            except BadRecordError as error:  # the stream itself broke: nothing more to read here
                # The unreadable rest counts as one record read and set aside.
                counts.lines += 1
                counts.bad_lines += 1
                self.handler(error)
                break
            data = line.data
            if not data.strip(JSON_WHITESPACE):
                counts.blank_lines += 1
                continue
            counts.lines += 1
            try:
                record = decode_record(data, source, line.number)
            except BadRecordError as error:
                counts.bad_lines += 1
                self.handler(error)
                continue
            if isinstance(record, ExportMessageTree):
                counts.message_trees += 1
                yield LocatedTree(record, source, line.number, data)
            elif isinstance(record, ExportMessageThread):
                counts.threads += 1
                if not record.thread:
                    counts.bad_lines += 1
                    counts.threads -= 1
                    self.handler(BadRecordError(source, line.number, f"thread {record.thread_id} has no messages", data))
                    continue
                if any(message.replies for message in record.thread):
                    threads_with_replies += 1
                yield LocatedTree(thread_as_tree(record), source, line.number, data, "thread")
            else:
                counts.messages += 1
                if record.parent_id is None and record.replies:
                    # A root with its replies nested is a complete tree: stream it.
                    tree_id = record.message_tree_id or record.message_id
                    tree = ExportMessageTree(message_tree_id=tree_id, prompt=record, tree_state=record.tree_state)
                    yield LocatedTree(tree, source, line.number, data, "message")
                    continue
                if assembler is None:
                    assembler = FlatMessageAssembler(source, self.handler)
                assembler.add(record, line.number, data)
        log_blank_lines(source, counts.blank_lines - blank_before)
        if counts.lines == lines_before:
            log_empty_file(source)
        if threads_with_replies:
            # A thread record is its list of messages; replies nested in them would be a tree.
            log.warning(
                "%s: %d thread record(s) carry replies inside their messages: a thread record is the path its list "
                "holds, so they were ignored (give whole trees as message trees)", source, threads_with_replies,
            )
        if assembler is not None:
            yield from assembler.trees()
            counts.unplaced_messages += assembler.unplaced
            counts.bad_lines += assembler.unplaced


def trees_from_hf_rows(rows: Iterable[dict[str, Any]], source: str, handler: BadRecordHandler | None = None) -> Iterator[LocatedTree]:
    """Rebuild trees from Hugging Face `OpenAssistant/oasst1`-style rows (any order)."""
    handler = handler or BadRecordHandler()
    assembler = FlatMessageAssembler(source, handler)
    for number, row in enumerate(rows, start=1):
        try:
            message = message_from_columns(row)
        except msgspec.ValidationError as error:
            handler(BadRecordError(source, number, f"invalid record: {error}", msgspec.json.encode(row)))
            continue
        raw = msgspec.json.encode(row) if handler.policy.value == "skip" else b""
        assembler.add(message, number, raw)
    yield from assembler.trees()
