"""Open-Assistant's SFT string format.

`<|prompter|>Q<|endoftext|><|assistant|>A<|endoftext|>...`, with an optional
`<|system|>S<|endoftext|>` before the first turn. The markers are special tokens; the
closing token is the tokenizer's EOS (`<|endoftext|>` on Pythia).
"""

from __future__ import annotations

from collections.abc import Sequence

from .conversation import Role, Turn

PROMPTER = "<|prompter|>"
ASSISTANT = "<|assistant|>"
SYSTEM = "<|system|>"
PREFIX_BEGIN = "<|prefix_begin|>"
PREFIX_END = "<|prefix_end|>"
EOS = "<|endoftext|>"

# Fixed order: ids 50277..50281 on the Pythia tokenizer.
MARKERS: tuple[str, ...] = (PROMPTER, ASSISTANT, SYSTEM, PREFIX_BEGIN, PREFIX_END)

ROLE_MARKER: dict[Role, str] = {Role.PROMPTER: PROMPTER, Role.ASSISTANT: ASSISTANT, Role.SYSTEM: SYSTEM}


def format_turn(role: Role, text: str, eos: str = EOS) -> str:
    return f"{ROLE_MARKER[role]}{text}{eos}"


def format_training(turns: Sequence[Turn], eos: str = EOS) -> str:
    """The training string of a conversation: every turn closed by EOS."""
    return "".join(f"{ROLE_MARKER[turn.role]}{turn.text}{eos}" for turn in turns)


def format_inference(turns: Sequence[Turn], eos: str = EOS) -> str:
    """The prompt for generation: the conversation so far, then `<|assistant|>` to answer.

    `turns` must end with a prompter turn (the model card's example:
    `<|prompter|>What is a meme?<|endoftext|><|assistant|>`).
    """
    if not turns or turns[-1].role is not Role.PROMPTER:
        raise ValueError("an inference prompt must end with a prompter turn")
    return format_training(turns, eos) + ASSISTANT


def contains_marker(text: str, eos: str = EOS) -> bool:
    """True when a message's own text contains a marker or the EOS string literally."""
    if eos in text:  # before the "<|" shortcut: another tokenizer's EOS (`</s>`) does not start so
        return True
    return "<|" in text and any(marker in text for marker in MARKERS)
