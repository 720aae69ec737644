"""From inputs to serializable threads: read, filter trees, extract and filter threads, split.

`ThreadExtractor(config).run(inputs, alpaca=...)` yields `Thread` objects lazily; its
`funnel` (per source, addable) is complete once the iterator is exhausted.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from .config import ThreadConfig
from .conversation import Role, Source, Split, Thread, Turn, is_blank
from .errors import BadRecordError
from .filters import LabelThreshold, RootLangFilter, build_filters, parse_langs, warn_about_unknown_labels
from .funnel import Funnel
from .quarantine import BadRecordHandler
from .readers.alpaca import AlpacaReader, alpaca_prompt, check_distinct_sources
from .readers.alpaca_sources import ResolvedAlpaca
from .readers.files import ByteCounter, as_sources, expand_inputs
from .readers.oasst import LocatedTree, OasstExportReader
from .records import AlpacaRecord, ExportMessage
from .repeats import Repeat, SeenRecords
from .split import assign_split
from .traversal import InvalidTreeError, iter_candidate_paths, trim_trailing_prompter, validate_tree

log = logging.getLogger(__name__)

# Called after each tree or Alpaca record; a progress bar reads `ThreadExtractor.bytes_read`.
ProgressHook = Callable[[], None]

# Role(value) goes through Enum.__call__; a dict lookup is several times faster per turn.
_ROLES = {role.value: role for role in Role}


# Tree drops that are also bad records, set aside whole in the quarantine.
QUARANTINED_TREE_DROPS = ("invalid_tree", "duplicate_tree", "duplicate_thread", "duplicate_message")


def quarantined_trees(funnel: Funnel) -> int:
    """Trees of `funnel` set aside as bad records (counted both as a drop and as a bad record)."""
    return sum(funnel.tree_drops.get(reason, 0) for reason in QUARANTINED_TREE_DROPS)


def _first_drop(filters: Sequence, item) -> str | None:
    for candidate in filters:
        reason = candidate.check(item)
        if reason is not None:
            return reason
    return None


class ThreadExtractor:
    def __init__(self, config: ThreadConfig | None = None, handler: BadRecordHandler | None = None):
        self.config = config or ThreadConfig()
        self.handler = handler or BadRecordHandler(self.config.on_bad_record, self.config.quarantine)
        self.tree_filters, self.thread_filters = build_filters(self.config)
        warn_about_unknown_labels(self.thread_filters)
        self.funnels: dict[str, Funnel] = {}
        self.bytes_read = ByteCounter()
        # Alpaca ids seen so far, across sources: identical records get unique ids.
        self._alpaca_seen: dict[str, int] = {}
        # Trees, threads and messages read so far, across files: a second copy would be trained on twice.
        self._seen = SeenRecords()
        # Input lines of the trees set aside whole (QUARANTINED_TREE_DROPS), each quarantined.
        self._quarantined_tree_lines = 0
        # Ids of the messages with blank text in the threads given: kept, but worth a warning.
        self._blank_messages: set[str] = set()
        self._warned_alpaca_lang = False
        # What each Alpaca source was read from (its files, split, Hub revision), in reading order.
        self.alpaca_read: list[ResolvedAlpaca] = []

    def forget_seen(self) -> None:
        """Free the ids kept to detect repeats (~130 bytes a message), once every input is read.

        A later `run` of this extractor is then not compared with what was read before.
        """
        self._seen = SeenRecords()

    @property
    def funnel(self) -> Funnel:
        total = Funnel()
        for funnel in self.funnels.values():
            total = total + funnel
        return total

    def run(
        self,
        inputs: Iterable[str | Path] = (),
        alpaca: Sequence[str] = (),
        progress: ProgressHook | None = None,
    ) -> Iterator[Thread]:
        paths = expand_inputs(inputs)
        alpaca = [os.fspath(source) for source in as_sources(alpaca)]
        check_distinct_sources(paths, alpaca)
        finished = False
        try:
            if paths:
                yield from self.oasst_threads(paths, progress)
            for source in alpaca:
                yield from self.alpaca_threads(source, progress)
            finished = True
        finally:
            self.handler.close(finished)

    # --- Open-Assistant -------------------------------------------------------------------
    def oasst_threads(self, paths: Sequence[Path], progress: ProgressHook | None = None) -> Iterator[Thread]:
        funnel = self.funnels.setdefault(Source.OASST.value, Funnel())
        reader = OasstExportReader(paths, self.handler, self.bytes_read)
        quarantined_lines_before = self._quarantined_tree_lines
        stateless_before = funnel.tree_drops.get("tree_state_missing", 0)
        blank_before = len(self._blank_messages)
        candidates_before = funnel.candidates
        try:
            for located in reader:
                funnel.trees_read += 1
                yield from self.tree_threads(located, funnel)
                if progress is not None:
                    progress()
        finally:
            funnel.records_read += reader.counts.lines
            funnel.bad_records += reader.counts.bad_lines
            # An invalid or repeated tree is quarantined whole: each of its lines counts as bad too
            # (one for a tree line, one a message for a tree rebuilt from flat messages).
            funnel.bad_records += self._quarantined_tree_lines - quarantined_lines_before
        blank = len(self._blank_messages) - blank_before
        if blank:
            # Open-Assistant's trainer keeps them too; a blank reply teaches the model to say nothing.
            log.warning(
                "%d message(s) in the threads kept have blank text (empty or whitespace); they are kept, "
                "as Open-Assistant's trainer keeps them: `oasst-data stats` counts them", blank,
            )
        for lang_filter in (f for f in self.tree_filters if isinstance(f, RootLangFilter)):
            lang_filter.warn_about_unmatched_codes()
        if funnel.candidates > candidates_before:
            for unmet in (f for f in self.thread_filters if isinstance(f, LabelThreshold) and not f.met):
                log.warning(
                    "%s: no message of the threads checked has label %r (with a value), so it dropped nothing",
                    unmet.option, unmet.label,
                )
        stateless = funnel.tree_drops.get("tree_state_missing", 0) - stateless_before
        if stateless:
            log.warning(
                "%d tree(s) or thread(s) have no tree_state and were dropped by the tree-state filter; "
                "pass --tree-states '*' to keep them",
                stateless,
            )

    def tree_threads(self, located: LocatedTree, funnel: Funnel) -> Iterator[Thread]:
        tree = located.tree
        repeat = self._seen.check_record(located)
        if repeat is not None:
            self._set_aside_repeat(located, repeat, funnel)
            return
        reason = _first_drop(self.tree_filters, tree)
        if reason is not None:
            # A repeat is a bad record whatever the selection (so stats describe one export).
            repeat = self._seen.check_messages(located)
            if repeat is not None:
                self._set_aside_repeat(located, repeat, funnel)
                return
            funnel.tree_drops[reason] += 1
            self._seen.note_dropped(located, reason)
            return
        try:
            message_ids = validate_tree(tree.prompt)
        except InvalidTreeError as error:
            funnel.tree_drops["invalid_tree"] += 1
            self._seen.forget_record(located)  # set aside: a valid copy later is not its repeat
            self._set_aside(located, f"invalid tree {tree.message_tree_id}: {error}")
            return
        repeat = self._seen.check_messages(located, message_ids)
        if repeat is not None:
            self._set_aside_repeat(located, repeat, funnel)
            return
        funnel.trees_kept += 1
        split = assign_split(tree.message_tree_id, self.config.val_split, self.config.seed)
        thread_filters = self.thread_filters
        # Threads of a tree share prefixes: each message's (immutable) Turn is made once.
        turns: dict[int, Turn] = {}
        for path in iter_candidate_paths(tree.prompt):
            funnel.candidates += 1
            reason = _first_drop(thread_filters, path)
            if reason is not None:
                funnel.thread_drops[reason] += 1
                continue
            path = trim_trailing_prompter(path)
            if located.kind == "thread" and not self._seen.first_thread_end(path[-1].message_id):
                # Thread records ending in sibling prompter leaves trim to one thread: trained once.
                funnel.thread_drops["duplicate_path"] += 1
                continue
            thread = self._make_thread(path, tree.message_tree_id, split, turns)
            funnel.threads += 1
            funnel.threads_by_split[split.value] += 1
            yield thread

    def _set_aside_repeat(self, located: LocatedTree, repeat: Repeat, funnel: Funnel) -> None:
        funnel.tree_drops[repeat.reason] += 1
        self._set_aside(located, repeat.message)

    def _set_aside(self, located: LocatedTree, reason: str) -> None:
        """Quarantine a whole tree: one bad record per input line it was read from, same reason on each."""
        for line, raw in located.record_lines():
            self._quarantined_tree_lines += 1  # counted before the handler raises (fail) or records it (skip)
            self.handler(BadRecordError(located.source, line, reason, raw))

    def _make_thread(self, path: list[ExportMessage], tree_id: str, split: Split, cache: dict[int, Turn] | None = None) -> Thread:
        cache = {} if cache is None else cache
        turns = []
        for message in path:
            turn = cache.get(id(message))
            if turn is None:
                turn = cache[id(message)] = Turn(_ROLES[message.role], message.text, message.message_id)
                if is_blank(message.text):
                    self._blank_messages.add(message.message_id)
            turns.append(turn)
        return Thread(
            id=path[-1].message_id,
            tree_id=tree_id,
            source=Source.OASST,
            lang=path[0].lang,
            split=split,
            turns=tuple(turns),
            system=self.config.system_prompt,
        )

    # --- Alpaca ---------------------------------------------------------------------------
    def saw_alpaca_record(self, record: AlpacaRecord) -> None:
        """Hook: every Alpaca record read, before any filter (statistics look at them all)."""

    def alpaca_threads(self, source: str, progress: ProgressHook | None = None) -> Iterator[Thread]:
        funnel = self.funnels.setdefault(Source.ALPACA.value, Funnel())
        langs = parse_langs(self.config.lang)
        if not self._warned_alpaca_lang and "*" not in langs and "en" not in langs:
            self._warned_alpaca_lang = True
            log.warning(
                "--lang %s selects Open-Assistant trees only: Alpaca records (English) are all kept; "
                "leave out --alpaca to train without them", self.config.lang,
            )
        reader = AlpacaReader(source, self.handler)
        seen = self._alpaca_seen
        try:
            for located in reader:
                funnel.trees_read += 1
                record = located.record
                self.saw_alpaca_record(record)
                if is_blank(record.instruction) or is_blank(record.output):
                    funnel.tree_drops["empty_text"] += 1
                    continue
                funnel.trees_kept += 1
                funnel.candidates += 1
                digest = hashlib.sha256(
                    "\x00".join((record.instruction, record.input or "", record.output)).encode("utf-8")
                ).hexdigest()[:16]
                record_id = f"alpaca-{digest}"
                # Identical records share an id prefix and hence a split; the suffix keeps ids unique.
                occurrence = seen.get(record_id, 0)
                seen[record_id] = occurrence + 1
                split = assign_split(record_id, self.config.val_split, self.config.seed)
                if occurrence:
                    record_id = f"{record_id}-{occurrence}"
                thread = Thread(
                    id=record_id,
                    tree_id=record_id,
                    source=Source.ALPACA,
                    lang="en",
                    split=split,
                    turns=(Turn(Role.PROMPTER, alpaca_prompt(record)), Turn(Role.ASSISTANT, record.output)),
                    system=self.config.system_prompt,
                )
                funnel.threads += 1
                funnel.threads_by_split[split.value] += 1
                if progress is not None:
                    progress()
                yield thread
        finally:
            funnel.records_read += reader.records_read
            if reader.resolved is not None:
                self.alpaca_read.append(reader.resolved)
            funnel.bad_records += reader.bad_records


def extract_threads(
    inputs: Iterable[str | Path] = (),
    alpaca: Sequence[str] = (),
    config: ThreadConfig | None = None,
) -> tuple[list[Thread], Funnel]:
    """Notebook-friendly: all threads of the inputs as a list, and the drop funnel."""
    extractor = ThreadExtractor(config)
    threads = list(extractor.run(inputs, alpaca))
    return threads, extractor.funnel


def write_threads_jsonl(threads: Iterable[Thread], path: Path) -> int:
    """Write one JSON object per thread to `path` atomically; returns the number written."""
    import msgspec

    from .atomic import atomic_open

    encoder = msgspec.json.Encoder()
    count = 0
    with atomic_open(Path(path), "wb") as handle:
        for thread in threads:
            handle.write(encoder.encode(thread.to_json()))
            handle.write(b"\n")
            count += 1
    return count
