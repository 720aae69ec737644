"""Open a build for training: check its manifest and tokenizer, load the rows as flat arrays.

Only the columns training needs are read (`input_ids`, `loss_mask`, `length`, `bucket`), into
one flat array of ids and one of mask values per split plus row offsets: indexing a row is a
slice, nothing is tokenized again. No torch here; the sampler and tests run without it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import OasstDataError

log = logging.getLogger(__name__)

COLUMNS = ("input_ids", "loss_mask", "length", "bucket")


class ShardsError(OasstDataError):
    """The build cannot be trained on as it is (incomplete, changed on disk, inconsistent)."""


class TokenizerMismatchError(OasstDataError):
    """The shards were built with a different tokenizer than the one given for training."""


@dataclass(frozen=True)
class SplitRows:
    """One split's rows: row i is `ids[offsets[i]:offsets[i+1]]` with the same slice of `mask`.

    A map-style dataset for `torch.utils.data.DataLoader` (items are dicts of numpy arrays).
    """

    name: str
    ids: np.ndarray  # int32, all rows concatenated
    mask: np.ndarray  # uint8, 1 = trained token
    offsets: np.ndarray  # int64, len(rows) + 1
    lengths: np.ndarray  # int64
    buckets: np.ndarray  # int32, index into the manifest's buckets

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        start, end = self.offsets[index], self.offsets[index + 1]
        return {"input_ids": self.ids[start:end], "loss_mask": self.mask[start:end]}

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())

    @property
    def trained_tokens(self) -> int:
        return int(self.mask.sum(dtype=np.int64))


@dataclass(frozen=True)
class OpenedBuild:
    path: Path
    manifest: dict
    train: SplitRows
    validation: SplitRows | None

    @property
    def buckets(self) -> list[dict]:
        return self.manifest["buckets"]

    @property
    def tokenizer_info(self) -> dict:
        return self.manifest["tokenizer"]


def check_tokenizer(manifest: dict, fingerprint: str, name: str, where: str | Path = "", eos_token_id: int | None = None) -> None:
    """Refuse a tokenizer whose fingerprint differs from the one the shards were built with, or
    whose end-of-text id does (the fingerprint is its tokenizer.json: two tokenizers may share it
    and name another token EOS, and the model would learn to stop on a token no row ends with)."""
    built = manifest["tokenizer"]
    if built.get("fingerprint") == fingerprint and eos_token_id is not None and built.get("eos_token_id") not in (None, eos_token_id):
        raise TokenizerMismatchError(
            f"{where}: every turn of the shards ends with token {built['eos_token_id']} (the build's EOS), but the "
            f"tokenizer given, {name!r}, has EOS {eos_token_id}: the same vocabulary with another EOS (its "
            "tokenizer_config.json or special_tokens_map.json differ). Pass the build's tokenizer with --tokenizer."
        )
    if built.get("fingerprint") != fingerprint:
        raise TokenizerMismatchError(
            f"{where}: the shards were built with tokenizer {built.get('name')!r} (fingerprint "
            f"{str(built.get('fingerprint'))[:12]}, {built.get('vocab_size')} tokens) but the tokenizer given, "
            f"{name!r}, has fingerprint {fingerprint[:12]}: its token ids mean other tokens. "
            "Pass the build's tokenizer with --tokenizer, or rebuild the shards with this one."
        )


def open_build(
    path: str | Path,
    fingerprint: str,
    tokenizer_name: str = "the given tokenizer",
    vocab_size: int | None = None,
    max_length: int | None = None,
    verify_checksums: bool = True,
    eos_token_id: int | None = None,
) -> OpenedBuild:
    """Check a build (manifest, tokenizer fingerprint, checksums, row consistency) and load it.

    `vocab_size`: ids must be below it (the tokenizer's length). `max_length`: no row may be
    longer (the trainer never truncates: rebuild with `--max-length` instead); by default the
    build's own max_length.
    """
    from ..shards.load import load_manifest

    path = Path(path)
    manifest = load_manifest(path)
    for key in ("tokenizer", "buckets", "shards"):
        if key not in manifest:
            raise ShardsError(f"{path}/manifest.json: no {key!r} entry")
    check_tokenizer(manifest, fingerprint, tokenizer_name, path, eos_token_id)
    if verify_checksums:
        check_checksums(path)
    splits = {}
    for split in ("train", "validation"):
        entries = [s for s in manifest["shards"] if s["split"] == split]
        splits[split] = _load_split(path, split, entries, manifest["buckets"]) if entries else None
    if splits["train"] is None or len(splits["train"]) == 0:
        raise ShardsError(f"{path}: the build has no train rows")
    if max_length is None:
        max_length = manifest["config"].get("max_length")
    for rows in filter(None, splits.values()):
        _check_rows(path, rows, vocab_size, max_length)
    return OpenedBuild(path=path, manifest=manifest, train=splits["train"], validation=splits["validation"])


def check_checksums(path: Path) -> None:
    """Refuse a build whose shards differ from the manifest's sha256 (the saved tokenizer's files
    are checked where that tokenizer is used: a build whose tokenizer folder is gone trains with
    --tokenizer). Shards the manifest does not list are ignored, with a warning."""
    from ..shards.verify import verify_shards

    report = verify_shards(path, tokenizer_files=False)
    damage = report.damage()
    if damage:
        raise ShardsError(f"{path}: shards do not match the manifest ({damage}); rebuild, or run `oasst-data verify`")
    if report.unlisted:
        log.warning(
            "%s: shards not in the manifest are not trained on: %s (a glob over data/, as polars or DuckDB take, would read them)",
            path, report.unlisted_shards(),
        )


def _load_split(root: Path, split: str, entries: list[dict], buckets: list[dict]) -> SplitRows:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for entry in entries:
        file = root / entry["path"]
        try:
            table = pq.read_table(file, columns=list(COLUMNS))
        except (OSError, pa.ArrowInvalid, KeyError) as error:
            raise ShardsError(f"{file}: cannot read shard: {error}") from None
        if table.num_rows != entry["rows"]:
            raise ShardsError(f"{file}: {table.num_rows} rows, the manifest says {entry['rows']}")
        tables.append(table)
    try:
        table = pa.concat_tables(tables).combine_chunks()
    except pa.ArrowInvalid as error:  # a shard rewritten by another tool (pandas) with other column types
        raise ShardsError(f"{root}: {split}: the shards' columns differ in type ({str(error).splitlines()[0]}); rebuild") from None
    ids_list = table.column("input_ids").chunk(0) if table.num_rows else pa.array([], pa.list_(pa.int32()))
    mask_list = table.column("loss_mask").chunk(0) if table.num_rows else pa.array([], pa.list_(pa.uint8()))
    offsets = ids_list.offsets.to_numpy().astype(np.int64)
    if not np.array_equal(offsets, mask_list.offsets.to_numpy()):
        raise ShardsError(f"{root}: {split}: loss_mask and input_ids differ in length on some row")
    start, end = int(offsets[0]), int(offsets[-1])
    rows = SplitRows(
        name=split,
        ids=ids_list.values.to_numpy(zero_copy_only=False)[start:end],
        mask=mask_list.values.to_numpy(zero_copy_only=False)[start:end],
        offsets=offsets - start,
        lengths=table.column("length").to_numpy().astype(np.int64),
        buckets=table.column("bucket").to_numpy().astype(np.int32),
    )
    if not np.array_equal(np.diff(rows.offsets), rows.lengths):
        raise ShardsError(f"{root}: {split}: the length column disagrees with input_ids")
    bounds = {b["index"]: (b["min_length"], b["max_length"]) for b in buckets}
    unknown = set(np.unique(rows.buckets).tolist()) - set(bounds)
    if unknown:
        raise ShardsError(f"{root}: {split}: rows in bucket(s) {sorted(unknown)} the manifest does not list")
    low = np.array([bounds[b][0] for b in rows.buckets.tolist()], dtype=np.int64)
    high = np.array([bounds[b][1] for b in rows.buckets.tolist()], dtype=np.int64)
    if len(rows) and ((rows.lengths < low) | (rows.lengths > high)).any():
        raise ShardsError(f"{root}: {split}: some rows lie outside their bucket's length bounds")
    return rows


def _check_rows(root: Path, rows: SplitRows, vocab_size: int | None, max_length: int | None) -> None:
    if len(rows) == 0:
        return
    if vocab_size is not None and rows.ids.size and int(rows.ids.max()) >= vocab_size:
        raise ShardsError(f"{root}: {rows.name}: token id {int(rows.ids.max())} is outside the tokenizer ({vocab_size} tokens)")
    longest = int(rows.lengths.max())
    if max_length is not None and longest > max_length:
        raise ShardsError(
            f"{root}: {rows.name}: a row has {longest} tokens, more than max_length {max_length}; "
            f"rebuild with `oasst-data build --max-length {max_length}` (the trainer does not truncate)"
        )


def describe(rows: SplitRows) -> str:
    return f"{len(rows):,} rows, {rows.tokens:,} tokens ({rows.trained_tokens:,} trained)"
