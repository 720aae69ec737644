"""The one-line error exit: in a distributed launch each rank's line says which rank it is."""

from __future__ import annotations

import sys

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


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["threads", "T", "--val-split", "2"], "val_split (--val-split) must be in [0, 1), got 2.0"),
        (["threads", "T", "--top-k", "0"], "top_k (--top-k) must be at least 1"),
        (["threads", "T", "--system", " "], "system_prompt (--system) is empty"),
        (["build", "T", "--max-length", "4"], "max_length (--max-length) must be at least 8"),
        (["train", "--per-device-batch-size", "0"], "per_device_train_batch_size (--per-device-batch-size) must be a positive integer"),
    ],
    ids=["val-split", "top-k", "system", "max-length", "per-device-batch-size"],
)
def test_a_refused_value_names_the_option_typed(tmp_path, args, said):
    """Config checks name the field (as a config file spells it); the command line adds the option."""
    from ..conftest import FIXTURE_TOKENIZER, FIXTURES

    trees = str(FIXTURES / "oasst" / "trees.jsonl")
    command = [trees if arg == "T" else arg for arg in args]
    if command[0] == "build":
        command += ["--tokenizer", str(FIXTURE_TOKENIZER), "--out", str(tmp_path / "b")]
    elif command[0] == "threads":
        command += ["--out", str(tmp_path / "t.jsonl")]
    else:
        command += ["--shards", str(tmp_path), "--model", "m", "--output-dir", str(tmp_path / "o")]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1 and said in " ".join(result.output.split()), result.output


def test_every_option_an_error_may_name_exists():
    from oasst_data_cli.console import _OPTION_OF_FIELD, command_line_options, name_the_option

    assert set(_OPTION_OF_FIELD.values()) <= command_line_options()
    # Not an option of any command: the message stays as it was.
    assert name_the_option("rows per batch must be at least 1, got 0") == "rows per batch must be at least 1, got 0"
    assert name_the_option("residual_dropout must be in [0, 1), got 2") == "residual_dropout (--residual-dropout) must be in [0, 1), got 2"


def test_a_ctrl_c_while_the_app_is_imported_is_no_traceback(monkeypatch, capsys):
    """Found by an audit: Ctrl-C in the first ~0.3 s (rich, numpy being imported) printed a
    KeyboardInterrupt traceback and exited -2; later it says "interrupted" and exits 130."""
    import importlib.abc

    from oasst_data_cli import entry

    class InterruptedImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "oasst_data_cli.app":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "oasst_data_cli.app", raising=False)
    monkeypatch.setattr(sys, "meta_path", [InterruptedImport(), *sys.meta_path])
    # The console script's handlers must not stay in the test process (a CI `timeout -s TERM`
    # could not stop pytest then; found by a review).
    monkeypatch.setattr(entry, "install_signal_handlers", lambda: None)
    with pytest.raises(SystemExit) as exited:
        entry.main()
    assert exited.value.code == 130
    assert capsys.readouterr().err == "interrupted\n"


@pytest.mark.parametrize("error", [MemoryError(), "arrow"], ids=["MemoryError", "ArrowMemoryError"])
def test_running_out_of_memory_is_one_line(tmp_path, monkeypatch, error):
    """Found by an audit: under `ulimit -v` a MemoryError (or pyarrow's ArrowMemoryError, one of
    them) printed a traceback."""
    import pyarrow

    from oasst_data import threads

    raised = pyarrow.ArrowMemoryError("malloc of size 1073741824 failed") if error == "arrow" else error

    def out_of_memory(*args, **kwargs):
        raise raised

    monkeypatch.setattr(threads.ThreadExtractor, "run", out_of_memory)
    trees = tmp_path / "t.jsonl"
    trees.write_text("")
    result = CliRunner().invoke(app, ["threads", str(trees), "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert " ".join(result.output.split()).startswith("error: out of memory (")


def _tree_with_control_characters(tmp_path, valid: bool = False):
    """Ids and a language holding an ESC sequence and a line break (found by an audit: printed raw,
    they cleared the screen or forged an output line)."""
    import json

    bad = "b\x1b[2J\nFAKE: ok"
    replies = [{"message_id": "a1", "parent_id": "p1", "text": "x", "role": "assistant", "lang": "\x1b[31mxx", "review_result": True,
                "replies": [{"message_id": bad, "parent_id": "a1", "text": "y", "role": "prompter" if valid else "assistant", "lang": "en", "replies": []}]}]
    prompt = {"message_id": "p1", "text": "hi", "role": "prompter", "lang": "\x1b[31mxx", "review_result": True, "replies": replies}
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"message_tree_id": "t\x1b]0;title\x07", "tree_state": "ready_for_export", "prompt": prompt}) + "\n")
    return path


def test_control_characters_from_the_data_are_shown_as_escapes_in_errors(tmp_path):
    path = _tree_with_control_characters(tmp_path)
    result = CliRunner().invoke(app, ["threads", str(path), "--lang", "*", "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 1, result.output
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    lines = result.stderr.strip().splitlines()
    joined = "".join(lines)  # rich may wrap a long line: the data's own line break must not show up as one
    assert joined.startswith("error: ") and "\\x1b[2J\\nFAKE: ok" in joined, result.stderr
    assert not any(line.startswith("FAKE") for line in lines)


def test_control_characters_from_the_data_are_shown_as_escapes_in_stats(tmp_path):
    path = _tree_with_control_characters(tmp_path, valid=True)
    html, markdown = tmp_path / "s.html", tmp_path / "s.md"
    result = CliRunner().invoke(app, ["stats", str(path), "--lang", "*", "--tree-states", "*", "--html", str(html), "--markdown", str(markdown)])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\\x1b[31mxx" in result.output
    assert "\x1b" not in html.read_text(encoding="utf-8") and "\\x1b[31mxx" in html.read_text(encoding="utf-8")
    assert "\x1b" not in markdown.read_text(encoding="utf-8") and "\\\\x1b\\[31mxx" in markdown.read_text(encoding="utf-8")


def test_log_lines_show_control_characters_as_escapes(capsys):
    import logging

    from oasst_data_cli.console import setup_logging

    setup_logging(verbose=False)
    try:
        logging.getLogger("oasst_data.test").warning("label %r from %s", "spam", "x\x1b[2J\ny\udce9")
    finally:
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err
    assert "\x1b" not in err and "x\\x1b[2J\\ny\\xe9" in err, err
