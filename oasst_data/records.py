"""On-disk record layouts, as msgspec Structs: decoded and type-checked in one pass.

These mirror Open-Assistant's export format (`oasst_data/schemas.py` there). Unknown extra
fields are ignored; a missing required field, a wrong type or an unknown role is a decode
error naming the JSON path. The JSON Schemas in `schemas/` are generated from these classes
(`python -m oasst_data.schemas`), and a test checks both accept and reject the same documents.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

import msgspec

MessageRole = Literal["prompter", "assistant"]

# JSON has one number type, and JSON Schema's "integer" accepts any number with a zero
# fractional part (`1.0`, `1e2`), as do exports written through pandas/NumPy. msgspec's `int`
# rejects those, so integer fields take an int or an integral float (normalized to int in
# __post_init__); 1.5 is rejected. The schema of such a field is plain {"type": "integer"}.
Integer = Annotated[
    Union[int, Annotated[float, msgspec.Meta(multiple_of=1)]],
    msgspec.Meta(extra_json_schema={"type": "integer"}),
]


def _as_int(value):
    """An integral float (already checked by the decoder) as int; anything else unchanged."""
    return int(value) if type(value) is float else value


class LabelValue(msgspec.Struct, omit_defaults=True):
    """Mean label value over the reviewers who set it."""

    value: Optional[float]
    count: Integer = 0

    def __post_init__(self) -> None:
        if type(self.count) is float:
            self.count = int(self.count)


class ExportMessageEvent(msgspec.Struct, omit_defaults=True):
    """An event on a message (emoji, rating, ranking); kept, not interpreted."""

    type: str
    user_id: Optional[str] = None
    emoji: Optional[str] = None
    rating: Optional[str] = None
    ranking: Optional[list[Integer]] = None
    ranked_message_ids: Optional[list[str]] = None
    ranking_parent_id: Optional[str] = None
    message_tree_id: Optional[str] = None
    not_rankable: Optional[bool] = None

    def __post_init__(self) -> None:
        if self.ranking and any(type(v) is float for v in self.ranking):
            self.ranking = [_as_int(v) for v in self.ranking]


class ExportMessage(msgspec.Struct, omit_defaults=True):
    """One message of an export, possibly with its replies nested (a tree)."""

    message_id: str
    text: str
    role: MessageRole
    parent_id: Optional[str] = None
    user_id: Optional[str] = None
    created_date: Optional[str] = None
    lang: Optional[str] = None
    review_count: Optional[Integer] = None
    review_result: Optional[bool] = None
    deleted: Optional[bool] = None
    rank: Optional[Integer] = None
    synthetic: Optional[bool] = None
    model_name: Optional[str] = None
    emojis: Optional[dict[str, Integer]] = None
    replies: Optional[list["ExportMessage"]] = None
    labels: Optional[dict[str, LabelValue]] = None
    events: Optional[dict[str, list[ExportMessageEvent]]] = None
    # A score may be null: Hugging Face rows hold detoxify as a struct whose missing keys read as null.
    detoxify: Optional[dict[str, Optional[float]]] = None
    # Only on flat messages (Hugging Face `oasst1` rows); trees carry these on the outside.
    message_tree_id: Optional[str] = None
    tree_state: Optional[str] = None

    def __post_init__(self) -> None:
        if type(self.rank) is float:
            self.rank = int(self.rank)
        if type(self.review_count) is float:
            self.review_count = int(self.review_count)
        # `float in map(type, ...)` scans in C: this runs for every message decoded.
        if self.emojis and float in map(type, self.emojis.values()):
            self.emojis = {name: _as_int(count) for name, count in self.emojis.items()}


class LabelColumns(msgspec.Struct):
    """Labels of a Hugging Face `oasst1` row: parallel lists (one entry per label)."""

    name: list[str]
    value: list[Optional[float]]
    count: list[Integer]


class EmojiColumns(msgspec.Struct):
    """Emojis of a Hugging Face `oasst1` row: parallel lists (one entry per emoji)."""

    name: list[str]
    count: list[Integer]


class Oasst1Row(msgspec.Struct, omit_defaults=True):
    """A flat message in the Hugging Face `OpenAssistant/oasst1` layout (labels/emojis as columns).

    Converted to an ExportMessage on reading (`readers.oasst.message_from_row`), which also
    requires the parallel lists of `labels` and `emojis` to have equal lengths.
    """

    message_id: str
    text: str
    role: MessageRole
    parent_id: Optional[str] = None
    user_id: Optional[str] = None
    created_date: Optional[str] = None
    lang: Optional[str] = None
    review_count: Optional[Integer] = None
    review_result: Optional[bool] = None
    deleted: Optional[bool] = None
    rank: Optional[Integer] = None
    synthetic: Optional[bool] = None
    model_name: Optional[str] = None
    emojis: Optional[EmojiColumns] = None
    replies: Optional[list[ExportMessage]] = None
    labels: Optional[LabelColumns] = None
    events: Optional[dict[str, list[ExportMessageEvent]]] = None
    detoxify: Optional[dict[str, Optional[float]]] = None
    message_tree_id: Optional[str] = None
    tree_state: Optional[str] = None


class ExportMessageTree(msgspec.Struct, omit_defaults=True):
    """One conversation tree: the root prompt with all replies nested."""

    message_tree_id: str
    prompt: ExportMessage
    tree_state: Optional[str] = None
    origin: Optional[str] = None


class ExportMessageThread(msgspec.Struct, omit_defaults=True):
    """One pre-extracted conversation path, root first."""

    thread_id: str
    thread: list[ExportMessage]
    message_tree_id: Optional[str] = None
    tree_state: Optional[str] = None


class AlpacaRecord(msgspec.Struct):
    """One instruction-following example: prompt = instruction [+ "\\n" + input], answer = output."""

    instruction: str
    output: str
    input: Optional[str] = None


class _RecordKind(msgspec.Struct):
    """Reads only the keys that tell the record kind apart (the reference's detection order)."""

    message_id: msgspec.Raw = msgspec.Raw(b"")
    message_tree_id: msgspec.Raw = msgspec.Raw(b"")
    thread_id: msgspec.Raw = msgspec.Raw(b"")


class _TreeLine(msgspec.Struct):
    """A line read as a message tree in one pass, with the keys that would make it another kind.

    The reader's fast path: when this decodes with message_tree_id and prompt set and neither
    message_id nor thread_id present, the line is exactly the ExportMessageTree the detection by
    _RecordKind would decode; in every other case the reader takes the detection path.
    """

    message_tree_id: Optional[str] = None
    prompt: Optional[ExportMessage] = None
    tree_state: Optional[str] = None
    origin: Optional[str] = None
    message_id: msgspec.Raw = msgspec.Raw(b"")
    thread_id: msgspec.Raw = msgspec.Raw(b"")


EXPORT_RECORD_TYPES = {
    "message_tree": ExportMessageTree,
    "message": ExportMessage,
    "thread": ExportMessageThread,
    "oasst1_row": Oasst1Row,
    "alpaca": AlpacaRecord,
}
