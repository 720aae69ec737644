"""Build configs from YAML: the package's own layout, or Open-Assistant's training-config layout.

Own layout: a mapping of BuildConfig fields, with thread options either nested under
`threads:` or at the top level::

    inputs: [data/2023-03-25_oasst_ready.jsonl.gz]
    alpaca: [yahma/alpaca-cleaned]
    lang: en
    tokenizer: EleutherAI/pythia-12b-deduped
    max_length: 2048

Open-Assistant layout: named sections merged in the order given by `--configs`, whose
`datasets:` list holds `oasst_export: {lang, input_file_path, val_split, top_k, ...}` and
`alpaca` entries (the seed model's `reference-data`). Trainer keys are ignored.
Precedence: defaults < file < command-line flags.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from .config import ThreadConfig
from .config_values import convert_value
from .errors import ConfigError

log = logging.getLogger(__name__)

_THREAD_FIELDS = {f.name for f in fields(ThreadConfig)}
# OA's dataset-entry keys that mean the same as ours.
_OA_EXPORT_KEYS = {"lang": "lang", "val_split": "val_split", "top_k": "top_k", "manual_seed": "seed"}


def _build_fields() -> set[str]:
    from .shards.build import BuildConfig

    return {f.name for f in fields(BuildConfig)}


def load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(error, 'problem', error)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def config_from_file(path: Path, sections: Sequence[str] = ()) -> dict[str, Any]:
    """BuildConfig keyword arguments (threads as a nested dict) read from a YAML file."""
    data = load_yaml(path)
    values = _from_open_assistant(data, sections, Path(path)) if sections else _from_native(data, Path(path))
    return _typed(values, str(path))


def _typed(values: dict[str, Any], where: str) -> dict[str, Any]:
    """Each value as its field's type: a wrong one names the file and the setting."""
    from .shards.build import BuildConfig

    build_hints, thread_hints = typing.get_type_hints(BuildConfig), typing.get_type_hints(ThreadConfig)
    out = {key: value if key == "threads" else convert_value(key, value, build_hints[key], where) for key, value in values.items()}
    out["threads"] = {key: convert_value(key, value, thread_hints[key], where) for key, value in values.get("threads", {}).items()}
    return out


def _from_native(data: dict, path: Path) -> dict[str, Any]:
    build_fields = _build_fields()
    out: dict[str, Any] = {}
    threads: dict[str, Any] = dict(data.get("threads") or {})
    for key, value in data.items():
        if key == "threads":
            continue
        if key in _THREAD_FIELDS:
            threads[key] = value
        elif key in build_fields:
            out[key] = value
        else:
            known = ", ".join(sorted(build_fields | _THREAD_FIELDS))
            raise ConfigError(f"{path}: unknown key {key!r} (known: {known}; for Open-Assistant configs pass --configs SECTION...)")
    unknown = set(threads) - _THREAD_FIELDS
    if unknown:
        raise ConfigError(f"{path}: unknown thread option(s) {sorted(unknown)}")
    for key in ("inputs", "alpaca"):
        if key in out:
            out[key] = [_resolve(p, path.parent) if key == "inputs" else _resolve_maybe(p, path.parent) for p in _as_list(out[key])]
    out["threads"] = threads
    return out


def _from_open_assistant(data: dict, sections: Sequence[str], path: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in sections:
        if name not in data:
            raise ConfigError(f"{path}: no section {name!r} (sections: {', '.join(map(str, data))})")
        section = data[name]
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: section {name!r} is not a mapping")
        merged.update(section)  # OA's own precedence: later sections override earlier ones
    base = Path(merged["data_path"]) if merged.get("data_path") else path.parent
    if not base.is_absolute():
        base = path.parent / base
    out: dict[str, Any] = {"inputs": [], "alpaca": [], "threads": {}}
    if "max_length" in merged:
        out["max_length"] = merged["max_length"]
    tokenizer = merged.get("tokenizer_name") or merged.get("model_name")
    if tokenizer:
        out["tokenizer"] = str(tokenizer)
    exports = []
    for entry in _as_list(merged.get("datasets") or []):
        if isinstance(entry, str):
            name, options = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            name, options = next(iter(entry.items()))
            options = options or {}
        else:
            raise ConfigError(f"{path}: cannot read dataset entry {entry!r}")
        if name == "oasst_export":
            exports.append(options)
        elif name == "alpaca":
            out["alpaca"].append("yahma/alpaca-cleaned")
        else:
            log.warning("%s: dataset %r is not supported by oasst-data and is ignored", path, name)
    thread_options: dict[str, Any] = {}
    for options in exports:
        if "input_file_path" not in options:
            raise ConfigError(f"{path}: oasst_export needs input_file_path")
        out["inputs"].append(_resolve(options["input_file_path"], base))
        for oa_key, our_key in _OA_EXPORT_KEYS.items():
            if oa_key in options:
                value = options[oa_key]
                if our_key in thread_options and thread_options[our_key] != value:
                    raise ConfigError(f"{path}: oasst_export entries disagree on {oa_key}; use one entry")
                thread_options[our_key] = value
    out["threads"] = thread_options
    return out


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _resolve(value: str, base: Path) -> str:
    candidate = Path(value)
    return str(candidate if candidate.is_absolute() else base / candidate)


def _resolve_maybe(value: str, base: Path) -> str:
    """Alpaca sources may be hub names: resolve only those that exist relative to the file."""
    candidate = base / value
    return str(candidate) if not Path(value).is_absolute() and candidate.exists() else value


def merge(file_values: dict[str, Any], flag_values: dict[str, Any], thread_flags: dict[str, Any]):
    """BuildConfig from defaults < file < flags."""
    from .shards.build import BuildConfig

    threads = {**file_values.get("threads", {}), **thread_flags}
    values = {k: v for k, v in file_values.items() if k != "threads"}
    for key, value in flag_values.items():
        if value is None:
            continue
        if key in ("inputs", "alpaca") and not value:
            continue
        values[key] = value
    try:
        return BuildConfig(**values, threads=ThreadConfig(**threads))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid configuration: {error}") from None
