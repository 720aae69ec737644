"""In-memory conversation records: what the thread extractor emits and the tokenizer consumes."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Role(str, enum.Enum):
    PROMPTER = "prompter"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class Source(str, enum.Enum):
    OASST = "oasst"
    ALPACA = "alpaca"


class Split(str, enum.Enum):
    TRAIN = "train"
    VALIDATION = "validation"


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a thread."""

    role: Role
    text: str
    id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.role, Role):
            raise TypeError(f"role must be a Role, not {self.role!r}")
        if not isinstance(self.text, str):
            raise TypeError("text must be a string")


@dataclass(frozen=True, slots=True)
class Thread:
    """A conversation path ready to serialize: prompter/assistant turns, ending with an assistant.

    Validated on construction, so no later stage has to re-check the shape.
    """

    id: str
    tree_id: str
    source: Source
    lang: str | None
    split: Split
    turns: tuple[Turn, ...]
    system: str | None = None
    # Index of each turn's text in the tree's message list (shared prefixes tokenize once).
    message_keys: tuple[int, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if len(self.turns) < 2:
            raise ValueError(f"thread {self.id}: needs at least two turns")
        for index, turn in enumerate(self.turns):
            expected = Role.PROMPTER if index % 2 == 0 else Role.ASSISTANT
            if turn.role is not expected:
                raise ValueError(f"thread {self.id}: turn {index} is {turn.role.value}, expected {expected.value}")
        if self.turns[-1].role is not Role.ASSISTANT:
            raise ValueError(f"thread {self.id}: must end with an assistant turn")

    @property
    def num_turns(self) -> int:
        return len(self.turns)

    def to_json(self) -> dict:
        from .serialize import format_training

        turns = ((Turn(Role.SYSTEM, self.system),) if self.system is not None else ()) + self.turns
        return {
            "id": self.id,
            "tree_id": self.tree_id,
            "source": self.source.value,
            "lang": self.lang,
            "split": self.split.value,
            "text": format_training(turns),
            "messages": [{"role": t.role.value, "text": t.text, "id": t.id} for t in self.turns],
        }
