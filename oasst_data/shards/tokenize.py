"""Threads to token ids and loss masks, tokenizing each distinct message text once.

Message texts sit between special tokens, so `[marker] + ids(text) + [eos]` per turn equals
the ids of the whole serialized string (checked on 4,243 real threads, shared/PERFORMANCE.md;
tested here). Shared prefixes of a tree's threads are therefore tokenized once per batch.

Message *content* is encoded with special-token matching switched off, so a literal
`<|endoftext|>` or `<|assistant|>` typed by a user stays plain text and never becomes a
control id; such messages are counted (`marker_text_messages`).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..conversation import Role, Thread
from ..long_texts import BoundedEncoder
from ..serialize import ASSISTANT, EOS, PROMPTER, SYSTEM, SpecialText
from ..tokenizer import LoadedTokenizer


class Overflow(str, enum.Enum):
    TRUNCATE = "truncate"  # keep the first max_length tokens
    DROP = "drop"  # drop the row


@dataclass
class TokenizeCounts:
    rows: int = 0
    rows_truncated: int = 0
    rows_dropped_overflow: int = 0
    rows_dropped_no_trainable_tokens: int = 0
    marker_text_messages: int = 0
    tokens: int = 0
    trainable_tokens: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TokenizedBatch:
    """Rows of one batch, as flat numpy buffers plus offsets (ready for Arrow list arrays)."""

    threads: list[Thread] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    input_ids: np.ndarray | None = None
    loss_mask: np.ndarray | None = None


class ThreadTokenizer:
    def __init__(self, loaded: LoadedTokenizer, max_length: int, overflow: Overflow = Overflow.TRUNCATE):
        from tokenizers import Tokenizer

        self.loaded = loaded
        self.max_length = max_length
        self.overflow = Overflow(overflow)
        # A private copy of the backend, so switching special-token matching off does not
        # change the user's tokenizer object.
        self.content_encoder = Tokenizer.from_str(loaded.tokenizer.backend_tokenizer.to_str())
        self.content_encoder.encode_special_tokens = True
        # A row holds max_length tokens: a text with more is encoded from a prefix (bounded memory).
        self._bounded = BoundedEncoder(self.content_encoder, max_length)
        self.eos = np.array([loaded.eos_token_id], dtype=np.int32)
        self.eos_text = loaded.tokenizer.eos_token or EOS
        self.special_text = SpecialText.of_tokenizer(loaded.tokenizer)
        self.marker = {
            Role.PROMPTER: np.array([loaded.marker_id(PROMPTER)], dtype=np.int32),
            Role.ASSISTANT: np.array([loaded.marker_id(ASSISTANT)], dtype=np.int32),
            Role.SYSTEM: np.array([loaded.marker_id(SYSTEM)], dtype=np.int32),
        }
        self.counts = TokenizeCounts()
        # Messages whose text holds a marker, each once however many threads (and batches) share
        # it; the system prompt is configuration, not a message.
        self._marker_messages: set[tuple[str, str | int]] = set()

    def _count_marker_messages(self, threads, texts, keys) -> None:
        special_text = self.special_text
        marked = {index for index, text in enumerate(texts) if special_text(text)}
        if not marked:
            return
        seen = self._marker_messages
        for thread, turn_keys in zip(threads, keys):
            offset = 0 if thread.system is None else 1
            for position, (turn, key) in enumerate(zip(thread.turns, turn_keys[offset:])):
                if key in marked:
                    seen.add((thread.tree_id, turn.id) if turn.id is not None else (thread.id, position))
        self.counts.marker_text_messages = len(seen)

    def encode_texts(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(ids, dtype=np.int32) for ids in self._bounded.encode_ids(texts)]

    def unique_texts(self, threads: Sequence[Thread]) -> tuple[list[str], list[list[int]]]:
        """Distinct texts of the batch, and for each thread the index of each turn's text."""
        index: dict[str, int] = {}
        keys: list[list[int]] = []
        for thread in threads:
            turn_keys = []
            if thread.system is not None:
                turn_keys.append(index.setdefault(thread.system, len(index)))
            for turn in thread.turns:
                turn_keys.append(index.setdefault(turn.text, len(index)))
            keys.append(turn_keys)
        return list(index), keys

    def tokenize(self, threads: Sequence[Thread]) -> TokenizedBatch:
        texts, keys = self.unique_texts(threads)
        encoded = self.encode_texts(texts)
        return self.assemble(threads, texts, keys, encoded)

    def assemble(self, threads, texts, keys, encoded) -> TokenizedBatch:
        """Concatenate `[marker] + ids(text) + [eos]` per turn, and the matching loss mask.

        Works on the whole batch at once: one np.concatenate for all ids and one for all mask
        pieces, then per-row offsets; only over-long rows are handled one by one.
        """
        counts = self.counts
        self._count_marker_messages(threads, texts, keys)
        eos = self.eos
        zero = np.zeros(1, np.uint8)
        ones = [np.ones(len(e) + 1, np.uint8) for e in encoded]
        nils = [np.zeros(len(e) + 1, np.uint8) for e in encoded]
        id_pieces: list[np.ndarray] = []
        mask_pieces: list[np.ndarray] = []
        row_lengths = np.zeros(len(threads), dtype=np.int64)
        for row, (thread, turn_keys) in enumerate(zip(threads, keys)):
            roles = thread.turns if thread.system is None else ((None,) + thread.turns)
            length = 0
            for turn, key in zip(roles, turn_keys):
                role = Role.SYSTEM if turn is None else turn.role
                body = encoded[key]
                id_pieces += (self.marker[role], body, eos)
                mask_pieces += (zero, ones[key] if role is Role.ASSISTANT else nils[key])
                length += len(body) + 2
            row_lengths[row] = length
        all_ids = np.concatenate(id_pieces) if id_pieces else np.zeros(0, np.int32)
        all_mask = np.concatenate(mask_pieces) if mask_pieces else np.zeros(0, np.uint8)
        starts = np.zeros(len(threads) + 1, dtype=np.int64)
        np.cumsum(row_lengths, out=starts[1:])
        batch = TokenizedBatch()
        keep_ids: list[np.ndarray] = []
        keep_mask: list[np.ndarray] = []
        for row, thread in enumerate(threads):
            ids = all_ids[starts[row] : starts[row + 1]]
            mask = all_mask[starts[row] : starts[row + 1]]
            truncated = False
            if len(ids) > self.max_length:
                if self.overflow is Overflow.DROP:
                    counts.rows_dropped_overflow += 1
                    continue
                ids = ids[: self.max_length]
                mask = mask[: self.max_length]
                truncated = True
            trainable = int(np.count_nonzero(mask))
            if trainable == 0:
                counts.rows_dropped_no_trainable_tokens += 1
                continue
            counts.rows_truncated += truncated
            counts.rows += 1
            counts.tokens += len(ids)
            counts.trainable_tokens += trainable
            batch.threads.append(thread)
            batch.lengths.append(len(ids))
            batch.truncated.append(truncated)
            keep_ids.append(ids)
            keep_mask.append(mask)
        batch.input_ids = np.concatenate(keep_ids) if keep_ids else np.zeros(0, np.int32)
        batch.loss_mask = np.concatenate(keep_mask) if keep_mask else np.zeros(0, np.uint8)
        return batch
