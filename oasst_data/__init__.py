"""oasst-data: Open-Assistant and Alpaca conversations to trainer-ready SFT shards.

Notebook use::

    import oasst_data
    threads, funnel = oasst_data.extract_threads(["export.jsonl.gz"], config=oasst_data.ThreadConfig(lang="en"))
    result = oasst_data.build_shards(oasst_data.BuildConfig(inputs=["export.jsonl.gz"], tokenizer="path/or/name"), "out/")
    train = oasst_data.load_shards("out/", split="train")
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import ThreadConfig
from .conversation import Role, Source, Split, Thread, Turn
from .errors import BadRecordError, ConfigError, CorruptStreamError, OasstDataError
from .funnel import Funnel
from .threads import ThreadExtractor, extract_threads, write_threads_jsonl


def __getattr__(name: str):
    # The shard API pulls in pyarrow and the tokenizer stack: import it on first use only.
    if name in {"BuildConfig", "BuildResult", "build_shards", "load_shards", "load_manifest", "verify_shards"}:
        from . import shards

        return getattr(shards, name)
    raise AttributeError(f"module 'oasst_data' has no attribute {name!r}")


__all__ = [
    "BadRecordError",
    "BuildConfig",
    "BuildResult",
    "ConfigError",
    "CorruptStreamError",
    "Funnel",
    "OasstDataError",
    "Role",
    "Source",
    "Split",
    "Thread",
    "ThreadConfig",
    "ThreadExtractor",
    "Turn",
    "__version__",
    "build_shards",
    "extract_threads",
    "load_manifest",
    "load_shards",
    "verify_shards",
    "write_threads_jsonl",
]
