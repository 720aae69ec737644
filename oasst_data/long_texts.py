"""Encode texts far longer than a row can hold in bounded memory.

The `tokenizers` pipeline keeps per-character alignments and offsets: about 130 bytes a character,
so a 30 MB message took 5 GB and a 300 MB one aborted the process inside Rust. A row keeps at
most `max_length` tokens, and no token covers more than `longest_token` characters (the longest
vocabulary entry), so a text longer than `max_length * longest_token` characters has more tokens
than any row holds. Such a text is encoded from a prefix that long plus a margin, and its first
`max_length` ids are kept: they lie at least the margin before the cut, where the cut cannot
change them (pre-tokenization and BPE decide each piece from its own characters and its next).
"""

from __future__ import annotations

from collections.abc import Sequence

# Characters encoded past the last one the kept ids can cover: the context the cut leaves intact.
MARGIN_CHARS = 4096


def longest_token_chars(encoder) -> int:
    """Characters in the longest vocabulary entry: a bound on what one token covers (byte-level
    entries have one character a byte, so bytes of text, hence characters, are bounded too)."""
    return max((len(token) for token in encoder.get_vocab(with_added_tokens=True)), default=1)


class BoundedEncoder:
    """`encode_batch` for texts of any length, keeping at most `keep` ids of the longest ones.

    `capped` counts the texts encoded from a prefix (each has more than `keep` tokens)."""

    def __init__(self, encoder, keep: int):
        self.encoder = encoder
        self.keep = keep
        self.cap = keep * longest_token_chars(encoder) + MARGIN_CHARS
        self.capped = 0

    def encode_ids(self, texts: Sequence[str]) -> list[list[int]]:
        long = [index for index, text in enumerate(texts) if len(text) > self.cap]
        if not long:
            return [encoding.ids for encoding in self.encoder.encode_batch(list(texts), add_special_tokens=False)]
        batch = [text[: self.cap] if len(text) > self.cap else text for text in texts]
        ids = [encoding.ids for encoding in self.encoder.encode_batch(batch, add_special_tokens=False)]
        for index in long:
            if len(ids[index]) >= self.keep:
                ids[index] = ids[index][: self.keep]
                self.capped += 1
            else:  # a normalizer that drops characters: the prefix held fewer; encode it whole
                ids[index] = self.encoder.encode(texts[index], add_special_tokens=False).ids
        return ids
