"""In-memory conversation records: what the thread extractor emits and the tokenizer consumes."""

from __future__ import annotations

import enum

import msgspec


class Role(str, enum.Enum):
    PROMPTER = "prompter"
    ASSISTANT = "assistant"
    SYSTEM = "system"


_PROMPTER = Role.PROMPTER
_ASSISTANT = Role.ASSISTANT


def is_blank(text: str) -> bool:
    """Empty or only whitespace (without the copy `strip()` makes)."""
    return not text or text.isspace()


class Source(str, enum.Enum):
    OASST = "oasst"
    ALPACA = "alpaca"


class Split(str, enum.Enum):
    TRAIN = "train"
    VALIDATION = "validation"


class Turn(msgspec.Struct, frozen=True):
    """One message of a thread."""

    role: Role
    text: str
    id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.role, Role):
            raise TypeError(f"role must be a Role, not {self.role!r}")
        if not isinstance(self.text, str):
            raise TypeError("text must be a string")


class Thread(msgspec.Struct, frozen=True):
    """A conversation path ready to serialize: prompter/assistant turns, ending with an assistant.

    Validated on construction, so no later stage has to re-check the shape. (A frozen
    msgspec Struct: constructed in C, several times cheaper than a frozen dataclass.)
    """

    id: str
    tree_id: str
    source: Source
    lang: str | None
    split: Split
    turns: tuple[Turn, ...]
    system: str | None = None

    def __post_init__(self) -> None:
        turns = self.turns
        if len(turns) < 2:
            raise ValueError(f"thread {self.id}: needs at least two turns")
        for index, turn in enumerate(turns):
            expected = _PROMPTER if index % 2 == 0 else _ASSISTANT
            if turn.role is not expected:
                raise ValueError(f"thread {self.id}: turn {index} is {turn.role.value}, expected {expected.value}")
        if turns[-1].role is not _ASSISTANT:
            raise ValueError(f"thread {self.id}: must end with an assistant turn")

    @property
    def num_turns(self) -> int:
        return len(self.turns)

    def all_turns(self) -> tuple[Turn, ...]:
        """The turns as serialized: the system message (if any) first."""
        if self.system is None:
            return self.turns
        return (Turn(Role.SYSTEM, self.system),) + self.turns

    def text(self) -> str:
        """The training string (see `serialize.format_training`)."""
        from .serialize import format_training

        return format_training(self.all_turns())

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "tree_id": self.tree_id,
            "source": self.source.value,
            "lang": self.lang,
            "split": self.split.value,
            "text": self.text(),
            "messages": [{"role": t.role.value, "text": t.text, "id": t.id} for t in self.turns],
        }
