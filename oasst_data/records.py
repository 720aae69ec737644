"""On-disk record layouts, as msgspec Structs: decoded and type-checked in one pass.

These mirror Open-Assistant's export format (`oasst_data/schemas.py` there). Unknown extra
fields are ignored; a missing required field, a wrong type or an unknown role is a decode
error naming the JSON path. The JSON Schemas in `schemas/` are generated from these classes
(`python -m oasst_data.schemas`), and a test checks both accept and reject the same documents.
"""

from __future__ import annotations

from typing import Literal, Optional

import msgspec

MessageRole = Literal["prompter", "assistant"]


class LabelValue(msgspec.Struct, omit_defaults=True):
    """Mean label value over the reviewers who set it."""

    value: Optional[float]
    count: int = 0


class ExportMessageEvent(msgspec.Struct, omit_defaults=True):
    """An event on a message (emoji, rating, ranking); kept, not interpreted."""

    type: str
    user_id: Optional[str] = None
    emoji: Optional[str] = None
    rating: Optional[str] = None
    ranking: Optional[list[int]] = None
    ranked_message_ids: Optional[list[str]] = None
    ranking_parent_id: Optional[str] = None
    message_tree_id: Optional[str] = None
    not_rankable: Optional[bool] = None


class ExportMessage(msgspec.Struct, omit_defaults=True):
    """One message of an export, possibly with its replies nested (a tree)."""

    message_id: str
    text: str
    role: MessageRole
    parent_id: Optional[str] = None
    user_id: Optional[str] = None
    created_date: Optional[str] = None
    lang: Optional[str] = None
    review_count: Optional[int] = None
    review_result: Optional[bool] = None
    deleted: Optional[bool] = None
    rank: Optional[int] = None
    synthetic: Optional[bool] = None
    model_name: Optional[str] = None
    emojis: Optional[dict[str, int]] = None
    replies: Optional[list["ExportMessage"]] = None
    labels: Optional[dict[str, LabelValue]] = None
    events: Optional[dict[str, list[ExportMessageEvent]]] = None
    detoxify: Optional[dict[str, float]] = None
    # Only on flat messages (Hugging Face `oasst1` rows); trees carry these on the outside.
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


EXPORT_RECORD_TYPES = {
    "message_tree": ExportMessageTree,
    "message": ExportMessage,
    "thread": ExportMessageThread,
    "alpaca": AlpacaRecord,
}
