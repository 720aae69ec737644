"""Typed configuration of thread selection, with help on every field (used by CLI and YAML)."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from .errors import ConfigError
from .filters import LangScope, SyntheticPolicy
from .quarantine import OnBadRecord
from .serialize import SpecialText


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass
class ThreadConfig:
    """Which trees and threads to keep, how to split them, and what to do with bad input."""

    lang: str = _help("Comma-separated language codes of the root prompt to keep ('*' = any).", default="en")
    lang_scope: LangScope = _help("'root': only the root prompt's lang is checked (reference); 'all': every message's.", default=LangScope.ROOT)
    tree_states: str = _help("Comma-separated tree_state values to keep ('*' = any).", default="ready_for_export")
    synthetic: SyntheticPolicy = _help("exclude (reference) / include / only threads with synthetic messages.", default=SyntheticPolicy.EXCLUDE)
    top_k: int | None = _help("Keep threads whose assistants all have rank < K (unranked only without siblings).", default=None)
    max_label: list[str] = _help("NAME=VALUE: drop threads with a message whose label mean is above VALUE.", default_factory=list)
    min_label: list[str] = _help("NAME=VALUE: drop threads with a message whose label mean is below VALUE.", default_factory=list)
    val_split: float = _help("Share of trees (and Alpaca records) assigned to validation.", default=0.05)
    seed: int = _help("Seed of the per-tree train/validation assignment.", default=287631038922)
    system_prompt: str | None = _help("Optional system message serialized as <|system|>TEXT<|endoftext|> first.", default=None)
    on_bad_record: OnBadRecord = _help("fail: stop at the first bad record; skip: count it, set it aside (threads and build write a quarantine file; stats only counts) and go on.", default=OnBadRecord.FAIL)
    quarantine: Path | None = _help("Where skipped records are written (JSONL); default beside the output.", default=None)

    def __post_init__(self) -> None:
        self.lang_scope = LangScope(self.lang_scope)
        self.synthetic = SyntheticPolicy(self.synthetic)
        self.on_bad_record = OnBadRecord(self.on_bad_record)
        if not 0.0 <= self.val_split < 1.0:
            raise ConfigError(f"val_split must be in [0, 1), got {self.val_split}")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {self.top_k}")
        if self.system_prompt is not None and not str(self.system_prompt).strip():
            raise ConfigError("system_prompt is empty: it would add an empty <|system|> turn to every thread (leave --system out for none)")
        check_system_prompt(self.system_prompt, SpecialText())
        if self.quarantine is not None:
            self.quarantine = Path(self.quarantine)
        # The filters parse their own options (languages, tree states, label thresholds): build
        # them once now, so a bad value is refused where it is given (a config file names itself).
        from .filters import build_filters

        build_filters(self)

    def to_dict(self) -> dict:
        out = {}
        for item in fields(self):
            value = getattr(self, item.name)
            if hasattr(value, "value"):
                value = value.value
            elif isinstance(value, Path):
                value = value.name
            out[item.name] = value
        return out


def field_help(cls, name: str, with_default: bool = False) -> str:
    """A config field's help; `with_default` appends its default where the text does not say it
    (command-line options default to None so presets and files can fill them: typer cannot show it)."""
    for item in fields(cls):
        if item.name == name:
            text = item.metadata.get("help", "")
            if with_default and item.default is not MISSING and item.default is not None and "default" not in text:
                value = getattr(item.default, "value", item.default)
                shown = ("on" if value else "off") if isinstance(value, bool) else value
                text = f"{text} (default: {shown})"
            return text
    raise KeyError(name)


def check_system_prompt(system_prompt: str | None, special_text: SpecialText) -> None:
    """Refuse a system prompt holding a special token's text: like a message's, it would be
    encoded as plain text, never as that token, in every row (the serializer adds markers itself)."""
    special = special_text.first_in(system_prompt) if system_prompt is not None else None
    if special is not None:
        raise ConfigError(
            f"system_prompt holds {special}, a special token of the tokenizer: it would be trained as plain text in every row, "
            "not as that token (the serializer adds the markers and the end-of-text token itself); leave it out"
        )
