"""Reading a build: its manifest, and its shards as a Hugging Face `datasets.Dataset`."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import msgspec

from ..errors import OasstDataError
from .hashing import sha256_file, sha256_json
from .schema import FORMAT_VERSION, ManifestShape


def load_manifest(out_dir: str | Path) -> dict:
    """The manifest of a finished build; a missing manifest means an incomplete build."""
    folder = Path(out_dir)
    if not folder.exists():
        raise OasstDataError(f"{out_dir}: no such folder (give the folder `oasst-data build --out` wrote)")
    if folder.is_file():
        hint = f": give the build folder, {folder.parent}" if folder.name == "manifest.json" else " (give the folder `oasst-data build --out` wrote)"
        raise OasstDataError(f"{out_dir}: is a file, not a build folder{hint}")
    path = folder / "manifest.json"
    if not path.is_file():
        raise OasstDataError(f"{out_dir}: no manifest.json -- not a finished oasst-data build")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise OasstDataError(f"{path}: malformed JSON: {error}") from None
    except UnicodeDecodeError as error:
        raise OasstDataError(f"{path}: not UTF-8 text (byte {error.start})") from None
    if not isinstance(manifest, dict):
        raise OasstDataError(f"{path}: not an oasst-data manifest (expected a JSON object)")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise OasstDataError(f"{path}: format_version {version!r} is not supported (expected {FORMAT_VERSION})")
    try:
        msgspec.convert(manifest, ManifestShape)
    except msgspec.ValidationError as error:
        raise OasstDataError(f"{path}: not an oasst-data manifest: {error}") from None
    problem = manifest_inconsistency(manifest)
    if problem is not None:
        raise OasstDataError(f"{path}: {problem}: the manifest was edited or damaged; rebuild, or restore it")
    return manifest


def manifest_inconsistency(manifest: dict) -> str | None:
    """The first place where the manifest contradicts itself, or None. Shard checksums cover the
    shards; this covers the manifest: its totals must add up from its shard entries, each shard
    must lie in its bucket, and the config must hash to its config_hash."""
    shards = manifest["shards"]
    totals = manifest["totals"]
    for split in sorted({s["split"] for s in shards} - set(totals)):
        return f"shards of split {split!r} but no totals.{split}"
    for split, recorded in totals.items():
        listed = [s for s in shards if s["split"] == split]
        counted = {"shards": len(listed)} | {key: sum(s[key] for s in listed) for key in ("rows", "tokens", "trainable_tokens")}
        for key, value in counted.items():
            if recorded[key] != value:
                return f"totals.{split}.{key} is {recorded[key]:,} but its shard entries add up to {value:,}"
    listed: set[str] = set()
    for shard in shards:
        path = PurePosixPath(shard["path"])
        if path.is_absolute() or ".." in path.parts or path.parts[:1] != ("data",):
            return f"shard path {shard['path']!r} is outside the build's data/ folder"
        if shard["path"] in listed:
            return f"shard {shard['path']} is listed twice"
        listed.add(shard["path"])
    buckets = {b.get("index"): b for b in manifest["buckets"] if isinstance(b, dict)}
    for shard in shards:
        bucket = buckets.get(shard["bucket"])
        if bucket is None or (bucket.get("min_length"), bucket.get("max_length")) != (shard["min_length"], shard["max_length"]):
            return f"shard {shard['path']} does not match bucket {shard['bucket']} of the bucket list"
    recorded_hash = manifest.get("config_hash")
    if recorded_hash is not None:
        config = manifest["config"]
        # The hash takes the tokenizer's fingerprint; builds before that took the name as given.
        candidates = (sha256_json(config | {"tokenizer": manifest["tokenizer"]["fingerprint"]}), sha256_json(config))
        if recorded_hash not in candidates:
            return "config does not hash to config_hash"
    return None


def load_shards(out_dir: str | Path, split: str = "train", verify: bool = True):
    """The rows of one split as a `datasets.Dataset` (memory-mapped Arrow, not loaded into RAM).

    Each of the split's shards is checked against the manifest first: its sha256 (`verify=False`
    skips that, trusting the files: faster on a large build), and the rows read against the
    rows listed. A shard copied in from another build gave its rows (another tokenizer's ids)
    without a word; a missing one, datasets' FileNotFoundError.
    """
    import datasets

    manifest = load_manifest(out_dir)
    entries = [shard for shard in manifest["shards"] if shard["split"] == split]
    if not entries:
        splits = sorted({s["split"] for s in manifest["shards"]})
        raise OasstDataError(f"{out_dir}: no {split!r} shards (splits present: {', '.join(splits) or 'none'})")
    files = [Path(out_dir) / shard["path"] for shard in entries]
    for entry, file in zip(entries, files):
        try:
            if not file.is_file():
                raise OasstDataError(f"{file}: missing: the manifest lists it; rebuild, or run `oasst-data verify`")
            if verify and sha256_file(file) != entry["sha256"]:
                raise OasstDataError(f"{file}: its sha256 differs from the manifest's; rebuild, or run `oasst-data verify`")
        except OSError as error:
            raise OasstDataError(f"{file}: cannot read shard: {error.strerror or error}") from None
    try:
        dataset = datasets.Dataset.from_parquet([str(f) for f in files], split=split)
    except Exception as error:  # datasets and pyarrow raise many types for a damaged file
        raise OasstDataError(f"{out_dir}: cannot read the {split!r} shards: {str(error).splitlines()[0] if str(error) else type(error).__name__}") from None
    listed = sum(shard["rows"] for shard in entries)
    if dataset.num_rows != listed:
        raise OasstDataError(f"{out_dir}: the {split!r} shards hold {dataset.num_rows:,} rows, the manifest lists {listed:,}; rebuild")
    return dataset
