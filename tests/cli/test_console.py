"""The one-line error exit: in a distributed launch each rank's line says which rank it is."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from oasst_data_cli.app import app


@pytest.mark.parametrize(
    ("env", "label"),
    [({}, "error: "), ({"WORLD_SIZE": "1", "RANK": "0"}, "error: "), ({"WORLD_SIZE": "8", "RANK": "5"}, "error (rank 5 of 8): ")],
    ids=["plain", "one-process", "rank-5-of-8"],
)
def test_the_error_line_names_the_rank_only_in_a_distributed_launch(tmp_path, monkeypatch, env, label):
    for name in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    missing = tmp_path / "absent.jsonl"
    result = CliRunner().invoke(app, ["build", str(missing), "--tokenizer", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert output.startswith(label) and "absent.jsonl" in output, output
    assert "Traceback" not in result.output
