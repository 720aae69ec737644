"""Deterministic train/validation assignment by id, so a tree never lands in both splits.

The decision depends only on (seed, id): it does not change when trees are added, removed or
filtered differently, and it is the same on every machine and PYTHONHASHSEED.
"""

from __future__ import annotations

import hashlib

from .conversation import Split

_SCALE = float(1 << 64)


def unit_hash(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from (seed, key)."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def assign_split(key: str, val_split: float, seed: int) -> Split:
    return Split.VALIDATION if unit_hash(seed, key) < val_split else Split.TRAIN
