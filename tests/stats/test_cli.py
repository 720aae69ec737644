"""`oasst-data stats` end to end through typer: files written, tables printed, one-line errors."""

from __future__ import annotations

import json

import jsonschema

from oasst_data.config import ThreadConfig
from oasst_data.stats import export_stats

from .helpers import ALPACA, SCHEMA, TOKENIZER, TREES, build_with_cli, runner, stats_app

app = stats_app()


def test_export_stats_to_every_format(tmp_path):
    paths = {kind: tmp_path / f"stats.{kind}" for kind in ("json", "html", "md")}
    result = runner.invoke(
        app,
        ["stats", str(TREES), "--alpaca", str(ALPACA), "--top-k", "2", "--tokenizer", TOKENIZER,
         "--json", str(paths["json"]), "--html", str(paths["html"]), "--markdown", str(paths["md"])],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(paths["json"].read_text(encoding="utf-8"))
    jsonschema.validate(report, SCHEMA)
    # The CLI passes its filters and tokenizer on: same figures as the library call.
    assert report == json.loads(json.dumps(export_stats([TREES], [str(ALPACA)], ThreadConfig(top_k=2), TOKENIZER)))
    assert report["export"]["totals"] == {"trees": 17, "messages": 56, "threads": 14}
    assert paths["html"].read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert "| trees | 17 |" in paths["md"].read_text(encoding="utf-8")
    assert "Drop funnel" in result.stdout and "top_k" in result.stdout
    for path in paths.values():
        assert f"wrote {path}" in result.output.replace("\n", "")


def test_quiet_prints_no_tables(tmp_path):
    result = runner.invoke(app, ["stats", str(TREES), "-q", "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    assert "Drop funnel" not in result.output
    assert json.loads((tmp_path / "s.json").read_text())["kind"] == "export"


def test_build_directory_gives_shard_stats(tmp_path):
    build = build_with_cli(tmp_path / "shards")
    result = runner.invoke(app, ["stats", str(build), "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["kind"] == "shards" and report["shards"]["totals"]["rows"] == 12
    assert "Splits" in result.stdout
    # Filters belong to the build (its manifest): giving them is an error, not silently ignored.
    result = runner.invoke(app, ["stats", str(build), "--lang", "de"])
    assert result.exit_code == 1
    assert "drop --lang" in result.output and "Traceback" not in result.output


def test_user_errors_are_one_line(tmp_path):
    cases = [
        (["stats", str(tmp_path / "missing.jsonl")], "no such file"),
        (["stats", str(tmp_path)], "without manifest.json"),
        (["stats", str(TREES), "--max-label", "spam"], "NAME=NUMBER"),
        (["stats", str(TREES), "--tokenizer", str(tmp_path / "no-tokenizer")], "cannot load tokenizer"),
        (["stats", str(TREES), "--max-length", "512"], "it needs --tokenizer"),  # was silently ignored
        (["stats", str(TREES), "--tokenizer", str(TOKENIZER), "--max-length", "0"], "N >= 1"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output
        assert "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) <= 2
    result = runner.invoke(app, ["stats"])
    assert result.exit_code == 2  # typer's usage error: nothing given


def _bracket_tree(path):
    """A tree whose values look like rich markup: a closing tag that matches nothing, a style."""
    assistant = {"message_id": "a1", "parent_id": "p1", "text": "yo", "role": "assistant", "lang": "en", "review_result": True,
                 "rank": 0, "synthetic": True, "model_name": "gpt [/oops]", "replies": [], "labels": {"[bold]odd": {"value": 0.5, "count": 1}}}
    prompt = {"message_id": "p1", "text": "hi", "role": "prompter", "lang": "en", "review_result": True, "replies": [assistant]}
    path.write_text(json.dumps({"message_tree_id": "t1", "tree_state": "ready [/s]", "prompt": prompt}) + "\n", encoding="utf-8")
    return path


def test_values_and_paths_that_look_like_markup_are_printed_as_they_are(tmp_path):
    """'[/oops]' in a model name (or an output path) crashed stats with a rich MarkupError
    traceback; '[bold]' in a label name vanished from the table."""
    tree = _bracket_tree(tmp_path / "t.jsonl")
    out = tmp_path / "[b]x[/b].json"
    result = runner.invoke(app, ["stats", str(tree), "--tree-states", "*", "--synthetic", "include", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "gpt [/oops]" in result.stdout and "ready [/s]" in result.stdout and "[bold]odd" in result.stdout
    assert f"wrote {out}" in " ".join(result.output.split())
    assert out.is_file()


def test_a_report_on_standard_output_stays_alone_there(tmp_path):
    """`--json -` (or /dev/stdout) is the JSON alone on stdout: the tables go to stderr."""
    import subprocess
    import sys

    for target in ("-", "/dev/stdout"):
        done = subprocess.run(
            [sys.executable, "-m", "oasst_data_cli", "stats", str(TREES), "--json", target],
            capture_output=True, text=True, timeout=120, cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        jsonschema.validate(report, SCHEMA)
        assert "Drop funnel" in done.stderr or "funnel" in done.stderr.lower()
        assert list(tmp_path.iterdir()) == []


def test_a_full_temp_disk_is_one_line_naming_the_spill_file(tmp_path, monkeypatch):
    """Found by an audit: a full $TMPDIR gave a traceback ending in ArrowInvalid "Operation on
    closed file" (the cleanup wrote again into the failed writer), and under `ulimit -f` an error
    that named no file."""
    import errno

    import pyarrow.parquet as pq

    def disk_full(self, batch, *args, **kwargs):
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", disk_full)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    result = runner.invoke(app, ["stats", str(TREES), "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "closed file" not in result.output
    assert "messages.parquet: No space left on device" in " ".join(result.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the spill folder is gone, no s.json


def test_a_closed_stdout_pipe_loses_no_report_file_and_exits_141(tmp_path):
    """Found by an audit: `stats ... --json FILE | head -1` exited 1 without writing FILE (the
    tables came first, and rich turned the closed pipe into SystemExit(1))."""
    import os
    import subprocess
    import sys

    out = tmp_path / "s.json"
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: the first write to stdout meets a closed pipe
    try:
        done = subprocess.run(
            [sys.executable, "-m", "oasst_data_cli", "stats", str(TREES), "--json", str(out)],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=300,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(out.read_text())["kind"] == "export"
