"""Token counts of message texts, the way a build counts them.

A build encodes each message's text on its own, with special-token matching switched off (a
literal `<|endoftext|>` typed by a user stays plain text), and adds a marker before and an EOS
after every turn: a thread costs sum(len(ids(text)) + 2) tokens, and an assistant turn trains
on its text and its EOS (len + 1).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..long_texts import BoundedEncoder
from ..tokenizer import LoadedTokenizer, load_tokenizer

TURN_OVERHEAD = 2  # the role marker and the closing EOS
TRAINED_OVERHEAD = 1  # an assistant turn trains on its closing EOS too
# Tokens counted exactly by default: one more than the default max length, so a thread past it is
# still known to be over-long. export_stats raises it to its max_length + 1.
DEFAULT_COUNT_BOUND = 2049


class TokenCounter:
    """Counts the content tokens of texts with a private copy of the tokenizer's backend."""

    def __init__(self, loaded: LoadedTokenizer):
        from tokenizers import Tokenizer

        self.loaded = loaded
        self._encoder = Tokenizer.from_str(loaded.tokenizer.backend_tokenizer.to_str())
        self._encoder.encode_special_tokens = True
        self._bounded: BoundedEncoder | None = None
        self.bound(DEFAULT_COUNT_BOUND)

    def bound(self, tokens: int) -> None:
        """Count a text's tokens exactly up to `tokens`; one with more (over a million characters
        at 2,049 for Pythia's tokenizer) is counted from a prefix, as `tokens`: a lower bound, so
        memory stays bounded (tokenizers needs ~130 bytes a character; a 30 MB message took 5 GB)."""
        self._bounded = BoundedEncoder(self._encoder, tokens)

    @property
    def capped(self) -> int:
        """Texts counted from a prefix (their counts are lower bounds)."""
        return self._bounded.capped

    @property
    def cap_chars(self) -> int:
        return self._bounded.cap

    @classmethod
    def load(cls, name_or_path: str) -> "TokenCounter":
        return cls(load_tokenizer(name_or_path))

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in self._bounded.encode_ids(texts)]

    def describe(self) -> dict:
        return {"name": self.loaded.name, "fingerprint": self.loaded.fingerprint}
