"""The companion trainer: fine-tune a causal LM on the shards of `oasst-data build`, nothing else.

Needs the `train` extra (torch, accelerate, deepspeed). Modules, one idea each:
`config` (settings and presets), `shards` (open a build, check manifest and tokenizer),
`sampler` (length-bucket batches), `collator` (padding and labels), `model` (load the LM),
`trainer` (the `transformers.Trainer` subclass), `run` (`train(config)`, what the CLI calls).
Importing this package loads no torch; `run`, `trainer`, `model` and `collator` do.
"""

from __future__ import annotations

from .config import TrainConfig, resolve_config

__all__ = ["TrainConfig", "resolve_config"]
