"""`build_shards`: inputs -> threads -> token ids + loss masks -> bucketed, shuffled Parquet shards.

Stages: (1) read, extract, tokenize (the tokenizer of batch k runs while batch k+1 is being
read) and spill rows to disk; (2) choose buckets from all lengths and route rows to
(split, bucket, part) groups; (3) write each group as a shard; (4) dataset card, then the
manifest last. Everything is written in a staging folder beside the output and renamed into
place only on success.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path

from .. import __version__
from ..atomic import StagingFolder, atomic_open, remove_abandoned_staging
from ..config import ThreadConfig, check_system_prompt
from ..conversation import Thread
from ..errors import ConfigError, OasstDataError
from ..funnel import Funnel, what_removed_everything
from ..output_paths import check_not_in_a_build, check_outputs, check_replaced_folder, is_a_build
from ..quarantine import BadRecordHandler, OnBadRecord
from ..serialize import SpecialText
from ..readers.alpaca_sources import ResolvedAlpaca
from ..readers.files import as_sources, expand_inputs
from ..threads import ThreadExtractor
from ..tokenizer import DEFAULT_TOKENIZER, load_tokenizer, save_tokenizer
from .buckets import Bucket, buckets_from_bounds, choose_buckets, padding_report
from .card import dataset_card
from .hashing import sha256_file, sha256_json
from .schema import FORMAT_VERSION, TOKENIZER_FOLDER
from .spill import SpillWriter
from .tokenize import Overflow, ThreadTokenizer, TokenizeCounts
from .writer import bucket_rows, plan_parts, route_to_groups, write_all_shards

log = logging.getLogger(__name__)


# Far beyond any context length, still small enough for int32 token offsets and numpy sums.
MAX_LENGTH_LIMIT = 1 << 24
MIN_SHARD_MB = 0.001  # 1 KiB: below, a target of 0 bytes
MAX_SHARD_MB = float(1 << 30)  # 1 PiB: "no limit" in practice, and a byte count that fits an int64


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass
class BuildConfig:
    """Everything that decides a build's output (besides the input bytes)."""

    inputs: list[str] = _help("Open-Assistant export files or globs.", default_factory=list)
    alpaca: list[str] = _help("Alpaca sources: files, dataset folders or hub names.", default_factory=list)
    threads: ThreadConfig = _help("Thread selection, split and bad-record policy.", default_factory=ThreadConfig)
    tokenizer: str = _help("Hugging Face tokenizer name or local folder.", default=DEFAULT_TOKENIZER)
    max_length: int = _help("Longest row in tokens (the seed model's context: 2048).", default=2048)
    overflow: Overflow = _help("Rows longer than max_length: truncate (keep the start) or drop.", default=Overflow.TRUNCATE)
    buckets: list[int] | None = _help("Explicit bucket upper bounds (e.g. 128,256,...); default: chosen from the data.", default=None)
    bucket_batch_size: int = _help("Batch size the automatic buckets are tuned for.", default=4)
    bucket_batch_tokens: int | None = _help(
        "Tune the automatic buckets for token-budget batches of this many padded tokens (the trainer's "
        "--batch-tokens) instead of bucket_batch_size rows.",
        default=None,
    )
    max_padding_waste: float = _help("Automatic buckets: target expected padding share per batch.", default=0.05)
    shard_size_mb: float = _help("Target size of one shard (MiB, before compression).", default=128.0)
    shard_rows: int | None = _help("Also cap rows per shard (shards of a bucket then hold equal row counts, within one).", default=None)
    tokenize_batch: int = _help("Threads per tokenizer call (chunks <= 10k strings keep memory low).", default=1024)
    workers: int = _help("Threads for tokenization (1 = no overlap of reading and tokenizing). Output does not depend on it.", default=2)

    def __post_init__(self) -> None:
        # A bare string is one source (not one per character); paths are kept as text for the manifest.
        self.inputs = [os.fspath(source) for source in as_sources(self.inputs)]
        self.alpaca = [os.fspath(source) for source in as_sources(self.alpaca)]
        if isinstance(self.threads, dict):
            self.threads = ThreadConfig(**self.threads)
        self.overflow = Overflow(self.overflow)
        if self.max_length < 8:
            raise ConfigError(f"max_length must be at least 8, got {self.max_length}")
        if self.max_length > MAX_LENGTH_LIMIT:
            raise ConfigError(f"max_length must be at most {MAX_LENGTH_LIMIT:,}, got {self.max_length:,}")
        if not math.isfinite(self.shard_size_mb) or not MIN_SHARD_MB <= self.shard_size_mb <= MAX_SHARD_MB:
            raise ConfigError(
                f"shard_size_mb must be a number of MiB from {MIN_SHARD_MB} to {MAX_SHARD_MB:.0f}, got {self.shard_size_mb}"
            )
        if self.shard_rows is not None and self.shard_rows < 1:
            raise ConfigError(f"shard_rows must be at least 1, got {self.shard_rows}")
        if not 0 < self.max_padding_waste < 1:  # also refuses nan
            raise ConfigError(f"max_padding_waste must be in (0, 1), got {self.max_padding_waste}")
        if self.workers < 1:
            raise ConfigError("workers must be at least 1")
        if isinstance(self.buckets, str):
            self.buckets = parse_buckets(self.buckets)
        if self.buckets is not None and not len(self.buckets):
            self.buckets = None  # an empty list has always meant: choose them from the data
        if self.buckets is not None:
            bounds = [int(b) for b in self.buckets]
            if any(b < 1 for b in bounds):
                raise ConfigError(f"buckets must be positive token counts (upper bounds), got {list(self.buckets)}")
            # Recorded as the bounds actually used (sorted, once each, capped by max_length), so
            # `256,128` and `128,256,256` hash alike, as they build alike.
            self.buckets = sorted({b for b in bounds if b < self.max_length}) + [self.max_length]
        if self.bucket_batch_size < 1:
            raise ConfigError(f"bucket_batch_size must be at least 1, got {self.bucket_batch_size}")
        if self.bucket_batch_tokens is not None and self.bucket_batch_tokens < 1:
            raise ConfigError(f"bucket_batch_tokens must be at least 1, got {self.bucket_batch_tokens}")

    def to_manifest(self) -> dict:
        """The resolved config as recorded in the manifest: no absolute paths, nothing that cannot
        change the shards (worker count, tokenizer batch size), so equal shards get equal hashes."""
        out: dict = {}
        for item in fields(self):
            if item.name in ("workers", "tokenize_batch"):
                continue
            value = getattr(self, item.name)
            if item.name == "threads":
                value = value.to_dict()
                value.pop("quarantine", None)
            elif item.name in ("inputs", "alpaca"):
                value = [Path(v).name if Path(v).exists() else v for v in value]
            elif item.name == "tokenizer":
                # A local folder is recorded by its name, as inputs are: its path, however typed
                # (relative to a working directory, or absolute), would make equal builds differ.
                # The trainer loads the copy saved in the build; a Hub name is kept as given.
                value = Path(value).name if Path(value).exists() else value
            elif hasattr(value, "value"):
                value = value.value
            out[item.name] = value
        return out


def parse_buckets(text: str) -> list[int]:
    try:
        bounds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--buckets expects comma-separated integers, got {text!r}") from None
    if not bounds:  # an empty list would silently mean "choose automatically"
        raise ConfigError(f"--buckets expects comma-separated integers, got {text!r}")
    return bounds


@dataclass
class BuildProgress:
    bytes_read: int = 0
    bytes_total: int = 0
    threads: int = 0
    rows: int = 0
    stage: str = "tokenizing"


@dataclass
class BuildResult:
    out_dir: Path
    manifest: dict
    funnels: dict[str, Funnel]
    counts: TokenizeCounts
    quarantined: int
    quarantine_path: Path | None = None  # where the skipped records went (None: none were skipped)


def _chunks(items: Iterable[Thread], size: int) -> Iterator[list[Thread]]:
    chunk: list[Thread] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _describe_inputs(paths: list[Path], alpaca: list[ResolvedAlpaca]) -> list[dict]:
    """Each input by name, size and sha256; a dataset by its split, Hub revision and data files."""
    described = [{"name": p.name, "kind": "oasst", "size": p.stat().st_size, "sha256": sha256_file(p)} for p in paths]
    return described + [source.describe(sha256_file) for source in alpaca]


def _prepare_output(out_dir: Path, overwrite: bool) -> StagingFolder:
    out_dir = Path(out_dir)
    if out_dir.is_symlink():
        # Replacing it would put a real folder where the link was and leave the linked build stale.
        raise OasstDataError(f"{out_dir}: is a symbolic link; give the folder it points to ({os.path.realpath(out_dir)})")
    here = Path.cwd().resolve()
    if out_dir.resolve() == here or out_dir.resolve() in here.parents:
        raise OasstDataError(f"{out_dir}: is the current folder or holds it; the build replaces its output folder whole: give a new folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise OasstDataError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise OasstDataError(f"{out_dir}: directory exists and is not empty (pass --overwrite to replace it)")
        # --overwrite deletes the folder: only an earlier build's (`--out .` must not cost a checkout,
        # nor a browser extension's folder its files: it has a manifest.json too).
        if not is_a_build(out_dir):
            raise OasstDataError(
                f"{out_dir}: not an oasst-data build (no oasst-data manifest.json), so --overwrite will not delete it; "
                "give a new or empty folder, or remove this one yourself"
            )
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned_staging(out_dir)
        return StagingFolder(out_dir).create()
    except OSError as error:
        raise OasstDataError(f"{out_dir}: cannot write here: {error.strerror or error}") from None


def _repair_killed_builds(out_dir: Path) -> None:
    try:
        remove_abandoned_staging(out_dir)
    except OSError as error:
        raise OasstDataError(f"{out_dir}: cannot clean up after an earlier build: {error.strerror or error}") from None


def build_shards(
    config: BuildConfig,
    out_dir: str | Path,
    overwrite: bool = False,
    on_progress: Callable[[BuildProgress], None] | None = None,
) -> BuildResult:
    """Build the shards of `config` into `out_dir`; nothing appears there unless it succeeds."""
    out_dir = Path(out_dir)
    # First: a build killed between its two renames (filesystems without renameat2's swap) left
    # DIR missing and the old build aside; it goes back before DIR is checked, not after the work.
    _repair_killed_builds(out_dir)
    paths = expand_inputs(config.inputs)
    if not paths and not config.alpaca:
        raise ConfigError("nothing to build: give at least one input file or an Alpaca source")
    quarantine = config.threads.quarantine
    # A local tokenizer folder is an input too: nothing may be written into it or replace it.
    read = [*paths, *config.alpaca, config.tokenizer]
    # The folder first: a quarantine inside an earlier build of DIR is named as inside the folder replaced.
    check_replaced_folder(out_dir, read, {"--quarantine": quarantine})
    check_not_in_a_build(out_dir, "--out")
    check_outputs({"--quarantine": quarantine}, read)
    loaded = load_tokenizer(config.tokenizer)
    check_system_prompt(config.threads.system_prompt, SpecialText.of_tokenizer(loaded.tokenizer))
    staging = _prepare_output(out_dir, overwrite)
    handler = _bad_record_handler(config, staging.path)
    try:
        result = _build_in(staging.path, out_dir, config, paths, loaded, handler, on_progress)
        staging.publish(overwrite)
        handler.publish()  # a --quarantine file outside the build follows its shards, never precedes them
        result.out_dir = out_dir
        if result.quarantined:
            result.quarantine_path = Path(quarantine) if quarantine is not None else out_dir / "quarantine.jsonl"
    except BaseException:
        handler.discard()
        staging.discard()
        raise
    totals = result.manifest["totals"]
    if totals["validation"]["rows"] and not totals["train"]["rows"]:
        log.warning("%s: no training rows: all %d went to the validation split (--val-split)", out_dir, totals["validation"]["rows"])
    elif not totals["train"]["rows"]:
        log.warning("%s: no training rows: %s", out_dir, what_removed_everything(result.manifest["funnel"]))
    return result


def _bad_record_handler(config: BuildConfig, staging: Path) -> BadRecordHandler:
    """Skipped records go to --quarantine, published after the shards; by default to the build's
    own quarantine.jsonl, which moves into place with the rest of the build."""
    policy, given = config.threads.on_bad_record, config.threads.quarantine
    if given is not None:
        return BadRecordHandler(policy, Path(given), publish_on_close=False)
    return BadRecordHandler(policy, staging / "quarantine.jsonl" if policy is OnBadRecord.SKIP else None)


def _build_in(staging: Path, out_dir: Path, config: BuildConfig, paths: list[Path], loaded, handler: BadRecordHandler, on_progress) -> BuildResult:
    extractor = ThreadExtractor(config.threads, handler)
    tokenizer = ThreadTokenizer(loaded, config.max_length, config.overflow)
    progress = BuildProgress(bytes_total=sum(p.stat().st_size for p in paths))
    spill = SpillWriter(staging / "_spill.arrow", config.threads.seed)

    def report() -> None:
        if on_progress is not None:
            progress.bytes_read = extractor.bytes_read.value
            on_progress(progress)

    threads = extractor.run(paths, config.alpaca)
    # Stage 1: while the tokenizer (Rust, GIL released) encodes one chunk, Python reads the next.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for chunk in _chunks(threads, config.tokenize_batch):
            texts, keys = tokenizer.unique_texts(chunk)
            if config.workers > 1:
                future = pool.submit(tokenizer.encode_texts, texts)
            else:
                future = None
                encoded = tokenizer.encode_texts(texts)
            if pending is not None:
                _flush(pending, tokenizer, spill, progress)
                report()
            pending = (chunk, texts, keys, future if future is not None else encoded)
        if pending is not None:
            _flush(pending, tokenizer, spill, progress)
    spill.close()
    extractor.forget_seen()  # before the shards are grouped and written: the ids are not needed any more
    report()
    funnel_problems = extractor.funnel.check()
    if funnel_problems:  # pragma: no cover - an internal invariant, not user input
        raise OasstDataError(f"internal error: funnel does not add up: {funnel_problems}")

    # Stage 2: buckets from the complete length distribution, then groups of one shard each.
    progress.stage = "writing shards"
    report()
    lengths = spill.all_lengths()
    if config.buckets:
        buckets = buckets_from_bounds(config.buckets, config.max_length)
    else:
        buckets = choose_buckets(
            lengths, config.max_length, config.bucket_batch_size, config.max_padding_waste, batch_tokens=config.bucket_batch_tokens
        )
    bucket_of_row = bucket_rows(lengths, buckets)
    is_validation = spill.all_is_validation()
    parts = plan_parts(
        is_validation, bucket_of_row, spill.all_row_bytes(), spill.all_keys(), buckets,
        int(config.shard_size_mb * (1 << 20)), config.shard_rows,
    )
    groups = route_to_groups(spill.path, staging / "_groups", is_validation, bucket_of_row, parts)
    spill.path.unlink()
    # Stage 3: shards.
    shards = write_all_shards(groups, staging, buckets)
    shutil.rmtree(staging / "_groups", ignore_errors=True)

    # The tokenizer travels with its shards: the trainer needs no name or path for it.
    saved_tokenizer = save_tokenizer(loaded, staging / TOKENIZER_FOLDER)

    manifest = _manifest(config, out_dir, paths, loaded, buckets, shards, extractor, tokenizer.counts, lengths, bucket_of_row)
    manifest["tokenizer"]["saved"] = {"folder": TOKENIZER_FOLDER, "files": saved_tokenizer}
    # Stage 4: the card, then the manifest last: its presence marks a complete build.
    with atomic_open(staging / "README.md") as handle:
        handle.write(dataset_card(manifest))
    with atomic_open(staging / "manifest.json", "wb") as handle:
        handle.write(_pretty_json(manifest))
    return BuildResult(staging, manifest, dict(extractor.funnels), tokenizer.counts, extractor.handler.count)


def _flush(pending, tokenizer: ThreadTokenizer, spill: SpillWriter, progress: BuildProgress) -> None:
    chunk, texts, keys, encoded = pending
    if hasattr(encoded, "result"):
        encoded = encoded.result()
    batch = tokenizer.assemble(chunk, texts, keys, encoded)
    spill.write(batch)
    progress.threads += len(chunk)
    progress.rows = spill.rows


def _pretty_json(value) -> bytes:
    import json

    return (json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode("utf-8")


def _manifest(config, out_dir: Path, paths, loaded, buckets: list[Bucket], shards, extractor, counts: TokenizeCounts, lengths, bucket_of_row) -> dict:
    resolved = config.to_manifest()
    totals: dict[str, dict] = {}
    for split in ("train", "validation"):
        chosen = [s for s in shards if s["split"] == split]
        totals[split] = {
            "rows": sum(s["rows"] for s in chosen),
            "tokens": sum(s["tokens"] for s in chosen),
            "trainable_tokens": sum(s["trainable_tokens"] for s in chosen),
            "shards": len(chosen),
        }
    funnel = extractor.funnel.to_dict()
    funnel["by_source"] = {name: f.to_dict() for name, f in sorted(extractor.funnels.items())}
    funnel.update(
        {
            "rows_written": counts.rows,
            "rows_truncated": counts.rows_truncated,
            "rows_dropped_overflow": counts.rows_dropped_overflow,
            "rows_dropped_no_trainable_tokens": counts.rows_dropped_no_trainable_tokens,
            "marker_text_messages": counts.marker_text_messages,
            "quarantined": extractor.handler.count,
        }
    )
    return {
        "format_version": FORMAT_VERSION,
        "package": "oasst-data",
        "package_version": __version__,
        # The shards' and tokenizer files' bytes also depend on these: a rebuild that differs
        # byte for byte can be told apart from a changed input here.
        "library_versions": _library_versions(),
        "config": resolved,
        # The tokenizer enters the hash by what it does (its fingerprint), not by how --tokenizer
        # was spelled: `tok`, `./tok` and `/abs/tok` build the same shards, so the same hash.
        "config_hash": sha256_json(resolved | {"tokenizer": loaded.fingerprint}),
        "tokenizer": loaded.describe() | {"name": resolved["tokenizer"]},
        "inputs": _describe_inputs(paths, extractor.alpaca_read),
        "buckets": [b.to_dict() for b in buckets],
        "padding": padding_report(
            lengths, bucket_of_row, buckets, sorted({1, 4, 8, config.bucket_batch_size}), config.bucket_batch_tokens
        ),
        "shards": shards,
        "totals": totals,
        "funnel": funnel,
        "quarantine": _quarantine_entry(config, out_dir, extractor.handler.count),
    }


def _library_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    # datasets decides which files of an Alpaca dataset folder are read (its data-file patterns).
    # Read from the installed metadata: importing datasets only for its version costs ~1 s. A
    # library that is not installed (datasets, on a machine that reads files only) is null.
    versions: dict[str, str | None] = {}
    for name in ("datasets", "pyarrow", "tokenizers", "transformers"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def _quarantine_entry(config: BuildConfig, out_dir: Path, count: int) -> str | None:
    """The quarantine file as the manifest names it: relative to the build folder, as
    `quarantine.jsonl` inside it is, so no machine path (and no working directory) is recorded."""
    if not count:
        return None
    given = config.threads.quarantine
    if given is None:
        return "quarantine.jsonl"
    try:
        return os.path.relpath(os.path.abspath(given), os.path.abspath(out_dir))
    except ValueError:  # Windows, another drive: no relative path leads there
        return os.path.abspath(given)


__all__ = ["BuildConfig", "BuildProgress", "BuildResult", "build_shards"]
