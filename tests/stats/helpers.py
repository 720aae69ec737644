"""Shared by the stats tests: fixture paths, a local typer app with `stats`, a fixture build."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from oasst_data_cli.stats_command import stats

from ..conftest import FIXTURE_TOKENIZER, FIXTURES, REPO

TREES = FIXTURES / "oasst" / "trees.jsonl"
MESSAGES = FIXTURES / "oasst" / "messages.jsonl"
ALPACA = FIXTURES / "alpaca" / "alpaca.json"
TOKENIZER = str(FIXTURE_TOKENIZER)
SCHEMA = json.loads((REPO / "schemas" / "stats.schema.json").read_text(encoding="utf-8"))

runner = CliRunner()


def stats_app() -> typer.Typer:
    """A typer app with only `stats` registered (as cli/app.py registers it)."""
    app = typer.Typer(pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:  # a callback keeps `stats` a subcommand
        pass

    app.command("stats")(stats)
    return app


def build_with_cli(out: Path, *extra: str) -> Path:
    """`oasst-data build fixtures/oasst/trees.jsonl --tokenizer fixtures/tokenizer --out OUT`."""
    from oasst_data_cli.app import app

    result = runner.invoke(app, ["build", str(TREES), "--tokenizer", TOKENIZER, "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out
