"""Reading a build: its manifest, and its shards as a Hugging Face `datasets.Dataset`."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from ..errors import OasstDataError
from .schema import FORMAT_VERSION, ManifestShape


def load_manifest(out_dir: str | Path) -> dict:
    """The manifest of a finished build; a missing manifest means an incomplete build."""
    path = Path(out_dir) / "manifest.json"
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
    return manifest


def shard_paths(out_dir: str | Path, split: str, manifest: dict | None = None) -> list[Path]:
    manifest = manifest or load_manifest(out_dir)
    return [Path(out_dir) / s["path"] for s in manifest["shards"] if s["split"] == split]


def load_shards(out_dir: str | Path, split: str = "train"):
    """The rows of one split as a `datasets.Dataset` (memory-mapped Arrow, not loaded into RAM)."""
    import datasets

    manifest = load_manifest(out_dir)
    files = shard_paths(out_dir, split, manifest)
    if not files:
        splits = sorted({s["split"] for s in manifest["shards"]})
        raise OasstDataError(f"{out_dir}: no {split!r} shards (splits present: {', '.join(splits) or 'none'})")
    return datasets.Dataset.from_parquet([str(f) for f in files], split=split)
