"""Filters (oasst_data/filters.py): what `--lang` says when a code it was given matched no tree."""

from __future__ import annotations

import logging

import pytest

from oasst_data.config import ThreadConfig
from oasst_data.threads import extract_threads

from .conftest import FIXTURES

TREES = FIXTURES / "oasst" / "trees.jsonl"  # English roots (10 reach the lang filter) and one German


def lang_warnings(caplog, lang: str) -> list[str]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="oasst_data"):
        extract_threads([TREES], config=ThreadConfig(lang=lang, tree_states="*"))
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("--lang")]


@pytest.mark.parametrize("code", ["EN", "en-US", "en_GB", "En"])
def test_a_code_spelt_otherwise_than_the_data_is_named_with_the_datas_code(caplog, code):
    """Found by an audit: `--lang EN` dropped all 100 real trees, said only "dropped: tree lang 100"."""
    assert lang_warnings(caplog, f"{code},de") == [
        f"--lang {code.strip()}: no tree's root prompt has this code; codes match exactly, "
        "and the trees dropped under `lang` have 'en' (10 trees)"
    ]


def test_codes_that_matched_nothing_are_told_what_the_roots_have(caplog):
    assert lang_warnings(caplog, "fr,it") == [
        "--lang fr,it: no tree's root prompt has any of these codes; the trees dropped under `lang` have 'en' (10 trees), 'de' (1 tree)"
    ]


@pytest.mark.parametrize("lang", ["en", "en,de", "*", "en,fr", "bg,ca,cs,da,de,en,es,fr"])
def test_no_warning_when_a_code_matched_and_none_looks_misspelt(caplog, lang):
    """The reference list names 20 languages: an export holding a few of them is no mistake."""
    assert lang_warnings(caplog, lang) == []
