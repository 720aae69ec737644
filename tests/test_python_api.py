"""The notebook-facing API takes one source or several: a bare string or Path is one file (it was
read one "file" per character), and None means none, as the CLI's missing options do."""

from __future__ import annotations

from pathlib import Path

from oasst_data import BuildConfig, extract_threads
from oasst_data.stats import collect_stats

from .conftest import FIXTURES

TREES = FIXTURES / "oasst" / "trees.jsonl"
ALPACA = FIXTURES / "alpaca" / "alpaca.json"


def test_extract_threads_takes_one_path_a_list_or_none():
    listed, listed_funnel = extract_threads([str(TREES)], alpaca=[str(ALPACA)])
    for inputs, alpaca in ((str(TREES), str(ALPACA)), (TREES, ALPACA), ((TREES,), (ALPACA,))):
        threads, funnel = extract_threads(inputs, alpaca=alpaca)
        assert [t.id for t in threads] == [t.id for t in listed] and funnel == listed_funnel
    oasst_only, _ = extract_threads(str(TREES), alpaca=None)
    assert oasst_only and {t.source.value for t in oasst_only} == {"oasst"}
    alpaca_only, _ = extract_threads(None, alpaca=str(ALPACA))
    assert alpaca_only and {t.source.value for t in alpaca_only} == {"alpaca"}


def test_collect_stats_takes_one_path_and_no_alpaca():
    one = collect_stats(str(TREES), alpaca=None)
    assert one["inputs"] == [{"name": "trees.jsonl", "kind": "oasst", "bytes": TREES.stat().st_size}]
    assert one["export"] == collect_stats([TREES])["export"]


def test_build_config_takes_one_path():
    config = BuildConfig(inputs=str(TREES), alpaca=Path(ALPACA))
    assert config.inputs == [str(TREES)] and config.alpaca == [str(ALPACA)]
    assert BuildConfig(inputs=None, alpaca=None).inputs == []
