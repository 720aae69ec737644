"""Encode texts far longer than a row can hold in bounded memory.

The `tokenizers` pipeline keeps per-character alignments and offsets: about 130 bytes a character,
so a 30 MB message took 5 GB and a 300 MB one aborted the process inside Rust. A row keeps at
most `max_length` tokens, and no token covers more than `longest_token` characters (the longest
vocabulary entry), so a text longer than `max_length * longest_token` characters has more tokens
than any row holds. Such a text is encoded from a prefix that long plus a margin, and its first
`max_length` ids are kept when they end at least the margin before the cut, where the cut cannot
change them (pre-tokenization and BPE decide each piece from its own characters and its next);
else (a token longer than the vocabulary's longest: WordPiece's [UNK] for a long word) the text
is encoded whole.
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
        encodings = self.encoder.encode_batch(batch, add_special_tokens=False)
        ids = [encoding.ids for encoding in encodings]
        for index in long:
            encoding = encodings[index]
            # The kept ids must end the margin before the cut. They do whenever the premise holds;
            # where it does not (a normalizer that drops characters; WordPiece's [UNK] for a word
            # of any length), the text is encoded whole, in the memory that takes.
            if len(ids[index]) >= self.keep and encoding.offsets[self.keep - 1][1] <= self.cap - MARGIN_CHARS:
                ids[index] = ids[index][: self.keep]
                self.capped += 1
            else:
                ids[index] = self.encoder.encode(texts[index], add_special_tokens=False).ids
        return ids
