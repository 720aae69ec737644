"""`export_stats`: what is in an export, and what the thread filters would keep of it.

    from oasst_data.stats import export_stats
    report = export_stats(["export.jsonl.gz"], config=ThreadConfig(lang="en,de", top_k=2))
    report["export"]["totals"], report["export"]["funnel"]

One streaming pass: each tree is parsed once, flattened into narrow rows (spilled to a
temporary Parquet file in batches) and run through the same `ThreadExtractor` as `build`,
so the funnel holds the counts a build with these filters would report. polars then
aggregates the spilled rows lazily. Memory is bounded by a batch of rows, not the input.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from pathlib import Path

from .. import __version__
from ..config import ThreadConfig, check_system_prompt
from ..errors import OasstDataError
from ..readers.alpaca_sources import ResolvedAlpaca
from ..readers.files import as_sources, expand_inputs
from ..scratch import STATS_SCRATCH_PREFIX, scratch_folder
from ..serialize import SpecialText
from .collect import RowCollector, StatsExtractor
from .export_summary import summarize_export
from .tokens import TokenCounter

log = logging.getLogger(__name__)

STATS_FORMAT = 1
DEFAULT_MAX_LENGTH = 2048


def _describe_inputs(paths: Sequence[Path], alpaca: Sequence[ResolvedAlpaca]) -> list[dict]:
    """Each input by name, kind (as the build's manifest names them) and size (a dataset's: its data files')."""
    described = [{"name": p.name, "kind": "oasst", "bytes": p.stat().st_size} for p in paths]
    for source in alpaca:
        entry = source.describe(lambda path: None)
        sizes = [entry["size"]] if source.is_file else [f["size"] for f in entry["files"]]
        described.append({"name": entry["name"], "kind": entry["kind"], "bytes": sum(sizes)})
    return described


def _stats_config(config: ThreadConfig) -> ThreadConfig:
    """A copy without quarantine file: stats never write one (bad records are only counted)."""
    copy = ThreadConfig(**{f.name: getattr(config, f.name) for f in fields(ThreadConfig)})
    copy.quarantine = None
    return copy


def export_stats(
    inputs: Iterable[str | Path] = (),
    alpaca: Sequence[str] = (),
    config: ThreadConfig | None = None,
    tokenizer: str | TokenCounter | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    progress: Callable[[int], None] | None = None,
    batch_rows: int = 8192,
) -> dict:
    """Statistics of Open-Assistant exports (and Alpaca sources) as a JSON-ready dict.

    `tokenizer` (a name, a folder or a TokenCounter) adds token counts, serialized as the
    build does; `max_length` only decides which threads are counted as over-long.
    `progress(bytes_read)` is called after every tree.
    """
    config = _stats_config(config or ThreadConfig())
    paths = expand_inputs(inputs)
    alpaca = [os.fspath(source) for source in as_sources(alpaca)]
    if not paths and not alpaca:
        raise OasstDataError("nothing to describe: give at least one export file or an Alpaca source")
    counter = TokenCounter.load(tokenizer) if isinstance(tokenizer, str) else tokenizer
    if counter is not None:
        check_system_prompt(config.system_prompt, SpecialText.of_tokenizer(counter.loaded.tokenizer))  # as the build refuses it
        counter.bound(max(max_length, 1) + 1)  # exact up to max_length, so over-long threads are known
    with scratch_folder(STATS_SCRATCH_PREFIX) as folder:
        collector = RowCollector(Path(folder), counter, batch_rows=batch_rows)
        extractor = StatsExtractor(config, collector)
        hook = (lambda: progress(extractor.bytes_read.value)) if progress is not None else None
        try:
            for thread in extractor.run(paths, alpaca, hook):
                collector.add_thread(thread)
        except BaseException:
            collector.abandon()  # writing on (into a full disk) would only hide the first error
            raise
        collector.close()
        extractor.forget_seen()  # before polars summarizes: the ids are not needed any more
        log.debug("spilled %d messages, %d threads", collector.messages.rows, collector.threads.rows)
        export = summarize_export(Path(folder), counter is not None, max_length if counter is not None else None)
    if counter is not None and counter.capped:
        log.warning(
            "%d message(s) longer than %s characters: their tokens were counted from that prefix (each has "
            "more than %d, so the threads holding them are over-long either way); token totals are lower bounds",
            counter.capped, f"{counter.cap_chars:,}", max_length,
        )
    funnel = extractor.funnel.to_dict()
    funnel["by_source"] = {name: f.to_dict() for name, f in sorted(extractor.funnels.items())}
    funnel["quarantined"] = extractor.handler.count
    export["funnel"] = funnel
    thread_config = config.to_dict()
    thread_config.pop("quarantine", None)
    return {
        "stats_format": STATS_FORMAT,
        "kind": "export",
        "package_version": __version__,
        "inputs": _describe_inputs(paths, extractor.alpaca_read),
        "config": thread_config,
        "tokenizer": _describe_tokenizer(counter, max_length),
        "export": export,
        "shards": None,
    }


def _describe_tokenizer(counter: TokenCounter | None, max_length: int) -> dict | None:
    if counter is None:
        return None
    name = counter.loaded.name
    return {"name": Path(name).name if Path(name).exists() else name, "fingerprint": counter.loaded.fingerprint, "max_length": max_length}
