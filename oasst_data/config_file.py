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
`alpaca` entries (the seed model's `reference-data`). Trainer keys are ignored; other datasets
and the entries' options oasst-data does not use (fraction, limit, max_val_set, ...) are ignored
with a warning. Relative paths (data_path, input_file_path) are relative to the file's folder.
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
_OA_EXPORT_USED = {"input_file_path", *_OA_EXPORT_KEYS}


class FileValues(dict):
    """`config_from_file`'s result: BuildConfig keyword arguments that remember their file.

    `merge` uses `source` to name the file when one of its values fails validation.
    """

    def __init__(self, values: dict[str, Any], source: str):
        super().__init__(values)
        self.source = source


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
    return FileValues(_typed(values, str(path)), str(path))


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
    nested = data.get("threads")
    if nested is not None and not isinstance(nested, dict):
        raise ConfigError(f"{path}: threads must be a mapping of thread options, got {nested!r}")
    threads: dict[str, Any] = dict(nested or {})
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
        raise ConfigError(f"{path}: unknown thread option(s) {sorted(map(str, unknown))}")
    if "inputs" in out:
        out["inputs"] = [_resolve(p, path.parent) for p in _paths(out["inputs"], path, "inputs")]
    if "alpaca" in out:
        out["alpaca"] = [_resolve_maybe(p, path.parent) for p in _paths(out["alpaca"], path, "alpaca")]
    if isinstance(out.get("tokenizer"), str):
        out["tokenizer"] = _resolve_maybe(out["tokenizer"], path.parent)
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
    # A relative data_path is taken relative to the config file's folder, like input paths.
    base = path.parent
    if merged.get("data_path") is not None:
        base = base / _path_text(merged["data_path"], path, "data_path")
    out: dict[str, Any] = {"inputs": [], "alpaca": [], "threads": {}}
    if "max_length" in merged:
        out["max_length"] = merged["max_length"]
    for key in ("tokenizer_name", "model_name"):
        if merged.get(key) is not None and not isinstance(merged[key], str):
            raise ConfigError(f"{path}: {key} must be a model name or folder (text), got {merged[key]!r}")
    tokenizer = merged.get("tokenizer_name") or merged.get("model_name")
    if tokenizer:
        out["tokenizer"] = _resolve_maybe(tokenizer, path.parent)
    datasets = merged.get("datasets")
    if datasets is None:
        datasets = []
    elif isinstance(datasets, (str, dict)):
        datasets = [datasets]  # a single entry
    elif not isinstance(datasets, (list, tuple)):
        raise ConfigError(f"{path}: datasets must be a list of dataset entries, got {datasets!r}")
    exports = []
    for entry in datasets:
        if isinstance(entry, str):
            name, options = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            name, options = next(iter(entry.items()))
        else:
            raise ConfigError(f"{path}: datasets: cannot read entry {entry!r} (expected a name, or a name mapped to its options)")
        if options is None:
            options = {}
        if name in ("oasst_export", "alpaca") and not isinstance(options, dict):
            raise ConfigError(f"{path}: datasets: {name} must be a mapping of options, got {options!r}")
        if name == "oasst_export":
            exports.append(options)
            ignored = set(options) - _OA_EXPORT_USED
        elif name == "alpaca":
            out["alpaca"].append("yahma/alpaca-cleaned")
            ignored = set(options)
        else:
            log.warning("%s: dataset %r is not supported by oasst-data and is ignored", path, name)
            continue
        if ignored:
            log.warning(
                "%s: %s option(s) %s are not supported by oasst-data and are ignored",
                path, name, ", ".join(sorted(map(str, ignored))),
            )
    thread_options: dict[str, Any] = {}
    for options in exports:
        if options.get("input_file_path") is None:
            raise ConfigError(f"{path}: oasst_export needs input_file_path")
        out["inputs"].append(_resolve(_path_text(options["input_file_path"], path, "input_file_path"), base))
        for oa_key, our_key in _OA_EXPORT_KEYS.items():
            if oa_key in options:
                value = options[oa_key]
                if our_key in thread_options and thread_options[our_key] != value:
                    raise ConfigError(f"{path}: oasst_export entries disagree on {oa_key}; use one entry")
                thread_options[our_key] = value
    out["threads"] = thread_options
    return out


def _paths(value: Any, path: Path, key: str) -> list[str]:
    """A file-list setting: one path or a list of paths, each non-empty text."""
    if value is None:
        raise ConfigError(f"{path}: {key} must not be empty (give a list of paths, or leave the key out)")
    if isinstance(value, str):
        value = [value]
    elif not isinstance(value, (list, tuple)):
        raise ConfigError(f"{path}: {key} must be a list of paths, got {value!r}")
    return [_path_text(item, path, key) for item in value]


def _path_text(value: Any, path: Path, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{path}: {key} must be a path (non-empty text), got {value!r}")
    return value


def _resolve(value: str, base: Path) -> str:
    candidate = Path(value)
    return str(candidate if candidate.is_absolute() else base / candidate)


def _resolve_maybe(value: str, base: Path) -> str:
    """Alpaca sources and tokenizers may be hub names: resolve only those that exist relative to the file."""
    candidate = base / value
    return str(candidate) if not Path(value).is_absolute() and candidate.exists() else value


def merge(file_values: dict[str, Any], flag_values: dict[str, Any], thread_flags: dict[str, Any]):
    """BuildConfig from defaults < file < flags.

    When `file_values` came from `config_from_file`, a value of the file that the flags do not
    override and that BuildConfig / ThreadConfig refuse is reported as `FILE: SETTING: reason`.
    """
    from .shards.build import BuildConfig

    flags = {key: value for key, value in flag_values.items() if value is not None and not (key in ("inputs", "alpaca") and not value)}
    file_threads = dict(file_values.get("threads") or {})
    file_build = {key: value for key, value in file_values.items() if key != "threads"}
    source = getattr(file_values, "source", None)
    if source is not None:
        _check_file_values(
            source,
            {key: value for key, value in file_build.items() if key not in flags},
            {key: value for key, value in file_threads.items() if key not in thread_flags},
        )
    threads = {**file_threads, **thread_flags}
    values = {**file_build, **flags}
    try:
        return BuildConfig(**values, threads=ThreadConfig(**threads))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"invalid configuration: {error}") from None


def _check_file_values(source: str, build_values: dict[str, Any], thread_values: dict[str, Any]) -> None:
    """Run each file value alone through the dataclasses' own checks (all others at their defaults)."""
    from .shards.build import BuildConfig

    checks = [(key, ThreadConfig, value) for key, value in thread_values.items()]
    checks += [(key, BuildConfig, value) for key, value in build_values.items()]
    for key, cls, value in checks:
        try:
            cls(**{key: value})
        except (ConfigError, TypeError, ValueError) as error:
            reason = str(error)
            if reason.startswith(f"{key} "):
                reason = reason[len(key) + 1 :]
            raise ConfigError(f"{source}: {key}: {reason}") from None
