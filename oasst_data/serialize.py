"""Open-Assistant's SFT string format.

`<|prompter|>Q<|endoftext|><|assistant|>A<|endoftext|>...`, with an optional
`<|system|>S<|endoftext|>` before the first turn. The markers are special tokens; the
closing token is the tokenizer's EOS (`<|endoftext|>` on Pythia).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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


class SpecialText:
    """Tells which texts hold a special token's text literally: a marker, the EOS, or another
    special token of the tokenizer (Pythia's `<|padding|>`). Such text is encoded as plain text,
    never as the control id, so its row's `input_ids` differ from `tokenizer(text)`: counted."""

    def __init__(self, specials: Iterable[str] = (*MARKERS, EOS)):
        self.specials = tuple(sorted({special for special in specials if special}))
        # A text without any special token's first two characters needs no further look (the
        # common case: one fast substring search for Pythia's "<|").
        self._heads = tuple(sorted({special[:2] for special in self.specials}))

    @classmethod
    def of_tokenizer(cls, tokenizer) -> SpecialText:
        """The markers, the EOS and every special added token of a Hugging Face fast tokenizer."""
        added = tokenizer.backend_tokenizer.get_added_tokens_decoder().values()
        return cls((*MARKERS, tokenizer.eos_token or EOS, *(token.content for token in added if token.special)))

    def __call__(self, text: str) -> bool:
        return any(head in text for head in self._heads) and any(special in text for special in self.specials)

    def first_in(self, text: str) -> str | None:
        return next((special for special in self.specials if special in text), None)
