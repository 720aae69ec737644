"""Options shared by several commands, declared once (help texts come from ThreadConfig)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from oasst_data.config import ThreadConfig, field_help
from oasst_data.filters import LangScope, SyntheticPolicy
from oasst_data.quarantine import OnBadRecord

from .console import dash_is_stdout

_FILTERS = "Filters"
_SPLIT = "Split"
_INPUT = "Input"


def _h(name: str) -> str:
    return field_help(ThreadConfig, name, with_default=True)


Inputs = Annotated[
    Optional[list[str]],
    typer.Argument(help="Open-Assistant export files or globs (.jsonl, .jsonl.gz, .jsonl.zst).", show_default=False),
]
Alpaca = Annotated[
    Optional[list[str]],
    typer.Option("--alpaca", help="Alpaca source: a JSON/JSONL file, a dataset folder, or a hub name (e.g. yahma/alpaca-cleaned). Repeatable.", rich_help_panel=_INPUT),
]
Lang = Annotated[Optional[str], typer.Option("--lang", help=_h("lang"), rich_help_panel=_FILTERS)]
LangScopeOpt = Annotated[Optional[LangScope], typer.Option("--lang-scope", help=_h("lang_scope"), rich_help_panel=_FILTERS)]
TreeStates = Annotated[Optional[str], typer.Option("--tree-states", help=_h("tree_states"), rich_help_panel=_FILTERS)]
Synthetic = Annotated[Optional[SyntheticPolicy], typer.Option("--synthetic", help=_h("synthetic"), rich_help_panel=_FILTERS)]
TopK = Annotated[Optional[int], typer.Option("--top-k", help=_h("top_k"), rich_help_panel=_FILTERS)]
MaxLabel = Annotated[Optional[list[str]], typer.Option("--max-label", help=_h("max_label"), rich_help_panel=_FILTERS)]
MinLabel = Annotated[Optional[list[str]], typer.Option("--min-label", help=_h("min_label"), rich_help_panel=_FILTERS)]
ValSplit = Annotated[Optional[float], typer.Option("--val-split", help=_h("val_split"), rich_help_panel=_SPLIT)]
Seed = Annotated[Optional[int], typer.Option("--seed", help=_h("seed"), rich_help_panel=_SPLIT)]
System = Annotated[Optional[str], typer.Option("--system", help=_h("system_prompt"))]
OnBad = Annotated[Optional[OnBadRecord], typer.Option("--on-bad-record", help=_h("on_bad_record"), rich_help_panel=_INPUT)]
Quarantine = Annotated[Optional[Path], typer.Option("--quarantine", help=_h("quarantine") + " ('-': standard output)", rich_help_panel=_INPUT, callback=dash_is_stdout)]


def thread_overrides(
    *,
    lang=None, lang_scope=None, tree_states=None, synthetic=None, top_k=None, max_label=None, min_label=None,
    val_split=None, seed=None, system=None, on_bad_record=None, quarantine=None,
) -> dict:
    """The thread options given on the command line (None = not given), as ThreadConfig fields."""
    values = {
        "lang": lang,
        "lang_scope": lang_scope,
        "tree_states": tree_states,
        "synthetic": synthetic,
        "top_k": top_k,
        "max_label": max_label or None,
        "min_label": min_label or None,
        "val_split": val_split,
        "seed": seed,
        "system_prompt": system,
        "on_bad_record": on_bad_record,
        "quarantine": quarantine,
    }
    return {key: value for key, value in values.items() if value is not None}
