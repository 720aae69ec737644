"""sha256 of files and of canonical JSON (for the manifest and `verify`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_json(value) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def shards_digest(manifest: dict) -> str:
    """One sha256 for the data of a build: of its shards' sha256, in manifest order."""
    return sha256_json([shard["sha256"] for shard in manifest["shards"]])
