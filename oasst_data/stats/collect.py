"""One pass over the inputs: flat rows spilled to Parquet, and the drop funnel of the filters.

`StatsExtractor` is the package's `ThreadExtractor` with one hook: every tree it reads is
also handed to the collector, so an export is parsed once for both the statistics and the
funnel (the same counts `build` reports). Alpaca sources are read twice (a record the
extractor drops yields no thread, but its messages still count); they are small.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..config import ThreadConfig
from ..conversation import Role, Thread
from ..funnel import Funnel
from ..readers.alpaca import alpaca_prompt
from ..readers.oasst import LocatedTree
from ..records import AlpacaRecord
from ..serialize import SpecialText
from ..threads import ThreadExtractor, quarantined_trees
from .rows import (
    LABEL_SCHEMA,
    MESSAGE_SCHEMA,
    THREAD_SCHEMA,
    TREE_SCHEMA,
    alpaca_message_rows,
    tree_rows,
)
from .spill import ParquetSpill
from .tokens import TRAINED_OVERHEAD, TURN_OVERHEAD, TokenCounter


class RowCollector:
    """Receives trees, Alpaca records and threads; writes their rows to four Parquet spills.

    With a token counter, message and thread rows wait in a small buffer until `batch_texts`
    distinct texts (or `batch_rows` rows) are pending, then one `encode_batch` call counts them.
    """

    def __init__(self, folder: Path, counter: TokenCounter | None = None, batch_rows: int = 8192, batch_texts: int = 4096):
        folder = Path(folder)
        self.messages = ParquetSpill(folder / "messages.parquet", MESSAGE_SCHEMA, batch_rows)
        self.labels = ParquetSpill(folder / "labels.parquet", LABEL_SCHEMA, batch_rows)
        self.trees = ParquetSpill(folder / "trees.parquet", TREE_SCHEMA, batch_rows)
        self.threads = ParquetSpill(folder / "threads.parquet", THREAD_SCHEMA, batch_rows)
        self.counter = counter
        # Marker text is counted with the tokenizer's special tokens, as the build counts it.
        self.special_text = SpecialText.of_tokenizer(counter.loaded.tokenizer) if counter is not None else SpecialText()
        self.batch_rows = batch_rows
        self.batch_texts = batch_texts
        self._texts: dict[str, int] = {}
        self._message_rows: list[tuple[dict, int]] = []
        self._thread_rows: list[tuple[dict, list[int], list[bool]]] = []
        self._thread_record_messages: set[str] = set()

    def _key(self, text: str) -> int:
        return self._texts.setdefault(text, len(self._texts))

    def _add_message(self, row: dict, text: str) -> None:
        if self.counter is None:
            self.messages.add(row)
        else:
            self._message_rows.append((row, self._key(text)))

    def add_tree(self, located: LocatedTree) -> None:
        messages, labels = tree_rows(located, special_text=self.special_text)
        max_depth = max(row["depth"] for row, _ in messages)
        if located.kind == "thread":
            # The thread records of one tree share their prefixes: each message is described once,
            # and the summary adds up a tree's records (one row each) by tree id.
            known = self._thread_record_messages
            messages = [(row, text) for row, text in messages if row["message_id"] not in known]
            new = {row["message_id"] for row, _ in messages}
            labels = [label for label in labels if label["message_id"] in new]
            known.update(new)
        if self.counter is None:
            self.messages.extend(row for row, _ in messages)
        else:
            key = self._key
            self._message_rows.extend((row, key(text)) for row, text in messages)
        if labels:
            self.labels.extend(labels)
        tree = located.tree
        self.trees.add(
            {
                "source": "oasst",
                "tree_id": tree.message_tree_id,
                "tree_state": tree.tree_state,
                "lang": tree.prompt.lang,
                "messages": len(messages),
                "max_depth": max_depth,
            }
        )
        self._maybe_encode()

    def add_alpaca(self, record, index: int) -> None:
        prompt = alpaca_prompt(record)
        record_id = f"alpaca-{index}"
        for row, text in zip(alpaca_message_rows(record, prompt, record_id, self.special_text), (prompt, record.output)):
            self._add_message(row, text)
        self.trees.add({"source": "alpaca", "tree_id": record_id, "tree_state": None, "lang": "en", "messages": 2, "max_depth": 2})
        self._maybe_encode()

    def add_thread(self, thread: Thread) -> None:
        turns = ((thread.system, False),) if thread.system is not None else ()
        turns += tuple((t.text, t.role is Role.ASSISTANT) for t in thread.turns)
        row = {
            "source": thread.source.value,
            "tree_id": thread.tree_id,
            "lang": thread.lang,
            "split": thread.split.value,
            "turns": thread.num_turns,
            "chars": sum(len(text) for text, _ in turns),
            "tokens": None,
            "trainable_tokens": None,
        }
        if self.counter is None:
            self.threads.add(row)
            return
        self._thread_rows.append((row, [self._key(text) for text, _ in turns], [trained for _, trained in turns]))
        self._maybe_encode()

    def _maybe_encode(self) -> None:
        # Rows count too: repeated texts (copies of a tree) would otherwise never fill the batch.
        pending = len(self._message_rows) + len(self._thread_rows)
        if len(self._texts) >= self.batch_texts or pending >= self.batch_rows:
            self._encode()

    def _encode(self) -> None:
        if self.counter is None or not self._texts:
            return
        lengths = self.counter.count(list(self._texts))
        for row, key in self._message_rows:
            row["tokens"] = lengths[key]
            self.messages.add(row)
        for row, keys, trained in self._thread_rows:
            row["tokens"] = sum(lengths[k] + TURN_OVERHEAD for k in keys)
            row["trainable_tokens"] = sum(lengths[k] + TRAINED_OVERHEAD for k, t in zip(keys, trained) if t)
            self.threads.add(row)
        self._texts = {}
        self._message_rows = []
        self._thread_rows = []

    def close(self) -> None:
        self._encode()
        self._thread_record_messages = set()
        for spill in (self.messages, self.labels, self.trees, self.threads):
            spill.close()

    def abandon(self) -> None:
        """After a failure: let go of the spill files without writing more into them."""
        for spill in (self.messages, self.labels, self.trees, self.threads):
            spill.abandon()


class StatsExtractor(ThreadExtractor):
    """A ThreadExtractor that shows every tree and Alpaca record to a RowCollector as it reads."""

    def __init__(self, config: ThreadConfig, collector: RowCollector):
        super().__init__(config)
        self.collector = collector
        self._alpaca_index = 0

    def tree_threads(self, located: LocatedTree, funnel: Funnel) -> Iterator[Thread]:
        # A tree set aside as a bad record (a repeated copy, roles that do not alternate) is
        # counted as such in the funnel, not described as part of the export: a skipped bad
        # line is not either. The threads of one tree are few; they are made before it is shown.
        before = quarantined_trees(funnel)
        threads = list(super().tree_threads(located, funnel))
        if quarantined_trees(funnel) == before:
            self.collector.add_tree(located)
        return iter(threads)

    def saw_alpaca_record(self, record: AlpacaRecord) -> None:
        self.collector.add_alpaca(record, self._alpaca_index)
        self._alpaca_index += 1

