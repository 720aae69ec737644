"""The 100 real trees in ../shared (skipped without it): figures from shared/README.md."""

from __future__ import annotations

import json

import jsonschema
import pytest

from oasst_data.stats import export_stats, shard_stats, to_json

from ..conftest import REAL_TOKENIZER, REAL_TREES, needs_real_data, needs_real_tokenizer
from .helpers import SCHEMA, runner

pytestmark = needs_real_data


@pytest.fixture(scope="module")
def report() -> dict:
    return export_stats([REAL_TREES])


def _assert_valid(report: dict) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(json.loads(to_json(report)))]
    assert errors == []


def test_real_export_figures(report):
    _assert_valid(report)
    e = report["export"]
    assert e["totals"]["trees"] == 100
    assert e["totals"]["messages"] == 1167
    roles = {r["role"]: r["messages"] for r in e["roles"]}
    assert roles == {"prompter": 480, "assistant": 687}
    assert e["flags"]["synthetic"] == 22
    assert e["depth"]["max"] == 6
    assert e["tree_states"] == [{"tree_state": "ready_for_export", "trees": 100, "messages": 1167}]
    assert e["synthetic_models"] == [{"model_name": "chip20b", "messages": 22}]
    # The reference's 538 threads (README), with the default filters.
    assert e["totals"]["threads"] == 538 == e["funnel"]["threads"]


@needs_real_tokenizer
def test_real_export_and_build_agree_on_threads_and_truncation(tmp_path):
    from oasst_data_cli.app import app

    out = tmp_path / "shards"
    result = runner.invoke(app, ["build", str(REAL_TREES), "--tokenizer", str(REAL_TOKENIZER), "--out", str(out)])
    assert result.exit_code == 0, result.output
    export_report, shard_report = export_stats([REAL_TREES], tokenizer=str(REAL_TOKENIZER)), shard_stats(out)
    for report in (export_report, shard_report):  # both match schemas/stats.schema.json
        _assert_valid(report)
    e, s = export_report["export"], shard_report["shards"]
    assert e["totals"]["threads"] == s["totals"]["rows"] == 538
    o = s["overflow"]
    # Threads over 2,048 tokens are exactly the rows the build truncated (or dropped).
    assert e["threads"]["over_max_length"] == o["rows_truncated"] + o["rows_dropped_no_trainable_tokens"]
    if o["rows_truncated"] == 0:
        assert e["threads"]["tokens_total"] == s["totals"]["tokens"]
    else:
        assert e["threads"]["tokens_total"] > s["totals"]["tokens"]
