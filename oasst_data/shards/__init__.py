"""Tokenized, loss-masked, length-bucketed Parquet shards: build, verify, load."""

from .build import BuildConfig, BuildResult, build_shards
from .load import load_manifest, load_shards
from .verify import verify_shards

__all__ = ["BuildConfig", "BuildResult", "build_shards", "load_manifest", "load_shards", "verify_shards"]
