"""The trainer's typed configuration: defaults < preset(s) < command-line flags.

A preset is a YAML mapping of `TrainConfig` fields: a name shipped in
`oasst_data/train/configs/NAME.yaml` (e.g. `reference-pythia-12b`, the seed model's
hyperparameters) or a path to your own file. Several presets merge in the order given, later
ones winning; flags win over all presets. Open-Assistant's key `model_name` is accepted for
`model`. This module imports no torch, so the CLI stays quick to start.
"""

from __future__ import annotations

import difflib
import json
import math
import typing
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from ..config import field_help as config_field_help
from ..config_values import convert_value
from ..errors import ConfigError

DTYPES = ("auto", "fp32", "fp16", "bf16")
# More epochs than any run makes; the Trainer's step count (epochs x batches) overflows long before 1e308.
MAX_EPOCHS = 1_000_000
ATTENTION = ("auto", "sdpa", "flash_attention_2", "eager")
BATCHING = ("buckets", "random")
MAX_SEED = 2**32 - 1
# Open-Assistant's names for the same settings (its trainer_sft.py configs).
# Other spellings a preset file may use: Open-Assistant's config key, and the flags' names where
# they differ from the field's (a preset written from `--help` must work).
ALIASES = {
    "model_name": "model",
    "num_epochs": "num_train_epochs",
    "per_device_batch_size": "per_device_train_batch_size",
    "num_workers": "dataloader_num_workers",
}


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass
class TrainConfig:
    """Everything `oasst-data train` needs: data, model, batching, optimisation, output."""

    shards: str | None = _help("Output directory of `oasst-data build` (manifest.json and data/). Required.", default=None)
    model: str = _help("Causal LM: Hugging Face name or local folder.", default="EleutherAI/pythia-12b-deduped")
    random_init: bool = _help("Build the model from its config with random weights (benchmarks, tests); loads no weights.", default=False)
    tokenizer: str | None = _help("Tokenizer name or folder; must have the shards' fingerprint (default: the one saved with the shards, else the manifest's name).", default=None)
    output_dir: str | None = _help("Where checkpoints, logs and the final model go. Required.", default=None)
    dtype: str = _help("fp16 / bf16 mixed precision, fp32, or auto (bf16 on a GPU that has it, else fp32).", default="auto")
    attn_implementation: str = _help("auto (flash_attention_2 when installed, else sdpa), sdpa, flash_attention_2 or eager.", default="auto")
    gradient_checkpointing: bool = _help("Recompute activations in the backward pass (less memory, ~30% more compute).", default=False)
    residual_dropout: float | None = _help("Dropout on the residual stream, e.g. GPT-NeoX's hidden_dropout (default: the model's).", default=None)
    max_length: int | None = _help("Refuse shards with longer rows (default: the build's max_length).", default=None)
    per_device_train_batch_size: int = _help("Rows per training batch per device (when no token budget is set).", default=4)
    per_device_eval_batch_size: int = _help("Rows per evaluation batch per device (when no token budget is set).", default=4)
    batch_tokens: int | None = _help("Token budget per device and batch: as many rows of one bucket as fit in N padded tokens.", default=None)
    eval_batch_tokens: int | None = _help("Token budget of evaluation batches (default: batch_tokens).", default=None)
    pad_to_multiple_of: int | None = _help("Pad each batch to a multiple of this many tokens (8 suits tensor cores).", default=None)
    batching: str = _help("buckets: each batch from one length bucket; random: ignore buckets (for comparison only).", default="buckets")
    gradient_accumulation_steps: int = _help("Batches per optimizer step.", default=1)
    learning_rate: float = _help("Peak learning rate.", default=1e-5)
    weight_decay: float = _help("AdamW weight decay.", default=0.0)
    warmup_steps: int = _help(
        "Learning-rate warmup steps, then linear decay to 0. The warmup is linear without DeepSpeed; under a "
        "DeepSpeed config with a scheduler (zero2: WarmupDecayLR) it is DeepSpeed's, logarithmic by default (its warmup_type).",
        default=0,
    )
    max_grad_norm: float = _help("Gradient clipping norm (0: no clipping).", default=1.0)
    num_train_epochs: float = _help("Epochs over the train split.", default=1.0)
    max_steps: int = _help("Stop after this many optimizer steps (overrides epochs when > 0).", default=-1)
    eval_steps: int = _help("Evaluate on the validation split every N optimizer steps (0: only at the end).", default=100)
    save_steps: int = _help("Save a checkpoint every N optimizer steps (0: only the final model).", default=500)
    save_total_limit: int | None = _help("Keep at most this many checkpoints (default: all).", default=None)
    logging_steps: int = _help("Log the training loss every N optimizer steps.", default=10)
    deepspeed: str | None = _help("DeepSpeed config: 'zero2' (the seed's, shipped), a JSON path, or none (the default; the reference-pythia-12b preset sets zero2).", default=None)
    report_to: list[str] = _help("Also log to: tensorboard, wandb (comma-separated) or none.", default_factory=lambda: ["none"])
    run_name: str | None = _help("Run name for TensorBoard / Weights & Biases.", default=None)
    seed: int = _help("Seed of model init, dropout and the batch order (0 to 2**32-1).", default=42)
    resume: str | None = _help(
        "Resume from a checkpoint folder, 'last' for the newest one in output_dir, or 'auto': the newest "
        "if there is one, else start afresh (a job a scheduler may restart).",
        default=None,
    )
    dataloader_num_workers: int = _help("DataLoader worker processes (rows are in memory; 0 is usually enough).", default=0)
    verify_checksums: bool = _help("Check every shard's sha256 against the manifest before training.", default=True)

    def __post_init__(self) -> None:
        _choice("dtype", self.dtype, DTYPES)
        _choice("attn_implementation", self.attn_implementation, ATTENTION)
        _choice("batching", self.batching, BATCHING)
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            _positive(name, getattr(self, name))
        for name in ("batch_tokens", "eval_batch_tokens", "pad_to_multiple_of", "max_length"):
            if getattr(self, name) is not None:
                _positive(name, getattr(self, name))
        if self.residual_dropout is not None and not 0.0 <= self.residual_dropout < 1.0:
            raise ConfigError(f"residual_dropout must be in [0, 1), got {self.residual_dropout}")
        for name in ("learning_rate", "weight_decay", "max_grad_norm", "num_train_epochs"):
            _finite(name, getattr(self, name))
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        for name in ("weight_decay", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.num_train_epochs <= 0 and self.max_steps <= 0:
            raise ConfigError("give num_train_epochs > 0 or max_steps > 0")
        if self.num_train_epochs > MAX_EPOCHS:
            raise ConfigError(f"num_train_epochs must be at most {MAX_EPOCHS:,}, got {self.num_train_epochs} (bound the run with max_steps)")
        _positive("logging_steps", self.logging_steps)
        if self.run_name is not None:
            # It names the TensorBoard folder OUT/runs/RUN_NAME: `../../x` wrote outside OUT;
            # `exp/run1` (a group of runs) stays inside and is fine.
            parts = self.run_name.replace("\\", "/").split("/")
            if not self.run_name.strip() or self.run_name.startswith(("/", "\\", "~")) or ":" in parts[0] or ".." in parts or "" in parts:
                raise ConfigError(f"run_name must be a relative name inside OUT/runs (no .., not absolute), got {self.run_name!r}")
        if self.save_total_limit is not None:
            _positive("save_total_limit", self.save_total_limit)
        for name in ("eval_steps", "save_steps", "warmup_steps", "max_steps", "dataloader_num_workers", "seed"):
            _integer(name, getattr(self, name))
        for name in ("eval_steps", "save_steps", "warmup_steps", "dataloader_num_workers"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.seed <= MAX_SEED:  # numpy's and transformers' set_seed take 32 bits
            raise ConfigError(f"seed must be in [0, {MAX_SEED}] (2**32-1), got {self.seed}")
        if isinstance(self.report_to, str):
            self.report_to = [self.report_to]
        self.report_to = [part.strip() for item in self.report_to for part in str(item).split(",") if part.strip()] or ["none"]
        unknown = set(self.report_to) - {"none", "tensorboard", "wandb"}
        if unknown:
            raise ConfigError(f"report_to: unknown target(s) {sorted(unknown)} (tensorboard, wandb, none)")
        if "none" in self.report_to and len(self.report_to) > 1:
            self.report_to = [r for r in self.report_to if r != "none"]
        if self.deepspeed is not None and self.deepspeed.strip().lower() in ("", "none", "false", "off"):
            self.deepspeed = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


def _positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _integer(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")


def _finite(name: str, value) -> None:
    """A real number that is not nan or +-inf (a YAML preset's are checked on reading; flags' here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")


def field_help(name: str) -> str:
    """The help of a TrainConfig field, with its default."""
    return config_field_help(TrainConfig, name, with_default=True)


def preset_names() -> list[str]:
    """Presets shipped with the package."""
    folder = resources.files("oasst_data.train") / "configs"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(name_or_path: str) -> dict[str, Any]:
    """One preset's values, converted to the field types (unknown keys are an error)."""
    import yaml

    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"preset {name_or_path}: cannot read: {error.strerror or error}") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"preset {name_or_path}: not UTF-8 text (byte {error.start})") from None
        where = str(path)
    else:
        resource = resources.files("oasst_data.train") / "configs" / f"{name_or_path}.yaml"
        if not resource.is_file():
            raise ConfigError(f"unknown preset {name_or_path!r} (shipped: {', '.join(preset_names())}; or give a YAML file)")
        text = resource.read_text(encoding="utf-8")
        where = f"preset {name_or_path}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: invalid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of settings")
    return _typed(data, where)


def _typed(data: dict, where: str) -> dict[str, Any]:
    hints = typing.get_type_hints(TrainConfig)
    out: dict[str, Any] = {}
    for key, value in data.items():
        spelled = key.replace("-", "_") if isinstance(key, str) else key  # `num-epochs:` as the flag is written
        name = ALIASES.get(spelled, spelled)
        if name in out:
            raise ConfigError(f"{where}: {key!r} sets {name!r} a second time; keep one of the two spellings")
        if name not in hints:
            close = difflib.get_close_matches(str(spelled), [*hints, *ALIASES], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"{where}: unknown setting {key!r} ({hint}a preset's keys are the flags' names with _ for -, "
                "as `oasst-data train --help` lists them, or the README's TrainConfig fields)"
            )
        out[name] = convert_value(name, value, hints[name], where)
    return out


def resolve_config(presets: list[str] | tuple[str, ...] = (), **flags: Any) -> TrainConfig:
    """defaults < presets (in order) < flags; flags that are None are not given."""
    values: dict[str, Any] = {}
    loaded_presets = [(preset, load_preset(preset)) for preset in presets]
    for _, loaded in loaded_presets:
        values.update(loaded)
    known = {item.name for item in fields(TrainConfig)}
    for key, value in flags.items():
        if key not in known:
            raise ConfigError(f"unknown setting {key!r}")
        if value is not None:
            values[key] = value
    try:
        return TrainConfig(**values)
    except TypeError as error:
        raise ConfigError(f"invalid configuration: {error}") from None
    except ConfigError as error:
        # Name the preset a refused value came from: the one that fails the same way on its own.
        for preset, loaded in loaded_presets:
            try:
                TrainConfig(**{key: value for key, value in loaded.items() if flags.get(key) is None})
            except ConfigError as alone:
                if str(alone) == str(error):
                    where = preset if Path(preset).suffix in (".yaml", ".yml") or Path(preset).is_file() else f"preset {preset}"
                    raise ConfigError(f"{where}: {error}") from None
        raise


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON file that must hold one object (a checkpoint's state, a DeepSpeed config), or a
    ConfigError naming the file and what it should have been."""
    try:
        loaded = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: cannot read {what}: {error}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: not {what} (expected a JSON object, got {type(loaded).__name__})")
    return loaded


__all__ = ["TrainConfig", "field_help", "load_preset", "preset_names", "read_json_object", "resolve_config"]
