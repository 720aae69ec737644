"""Token counts of message texts, the way a build counts them.

A build encodes each message's text on its own, with special-token matching switched off (a
literal `<|endoftext|>` typed by a user stays plain text), and adds a marker before and an EOS
after every turn: a thread costs sum(len(ids(text)) + 2) tokens, and an assistant turn trains
on its text and its EOS (len + 1).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..tokenizer import LoadedTokenizer, load_tokenizer

TURN_OVERHEAD = 2  # the role marker and the closing EOS
TRAINED_OVERHEAD = 1  # an assistant turn trains on its closing EOS too


class TokenCounter:
    """Counts the content tokens of texts with a private copy of the tokenizer's backend."""

    def __init__(self, loaded: LoadedTokenizer):
        from tokenizers import Tokenizer

        self.loaded = loaded
        self._encoder = Tokenizer.from_str(loaded.tokenizer.backend_tokenizer.to_str())
        self._encoder.encode_special_tokens = True

    @classmethod
    def load(cls, name_or_path: str) -> "TokenCounter":
        return cls(load_tokenizer(name_or_path))

    def count(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encodings = self._encoder.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encodings]

    def describe(self) -> dict:
        return {"name": self.loaded.name, "fingerprint": self.loaded.fingerprint}
