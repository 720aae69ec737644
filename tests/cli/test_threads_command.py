"""`oasst-data threads` end to end: output lines, funnel JSON, help, bad options."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from typer.testing import CliRunner

from oasst_data_cli.app import app

from ..conftest import FIXTURES

runner = CliRunner()
TREES = str(FIXTURES / "oasst" / "trees.jsonl")
ALPACA = str(FIXTURES / "alpaca" / "alpaca.jsonl")


def test_threads_writes_one_object_per_thread_and_prints_the_funnel(tmp_path):
    out = tmp_path / "threads.jsonl"
    result = runner.invoke(app, ["threads", TREES, "--alpaca", ALPACA, "--val-split", "0", "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 16
    first = lines[0]
    assert set(first) == {"id", "tree_id", "source", "lang", "split", "text", "messages"}
    assert first["id"] == "m5" and first["tree_id"] == "t-basic" and first["source"] == "oasst" and first["split"] == "train"
    assert [m["id"] for m in first["messages"]] == ["m1", "m2", "m4", "m5"]
    assert [line["source"] for line in lines[-4:]] == ["alpaca"] * 4
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["funnel"]["threads"] == 16
    assert report["by_source"]["oasst"]["tree_drops"] == {"lang": 1, "review_result": 1, "tree_state": 1}
    assert report["by_source"]["alpaca"]["tree_drops"] == {"empty_text": 1}


def test_threads_lines_match_the_training_thread_json_schema(tmp_path):
    """Found by a docs audit: thread.schema.json is the input record kind, which no output line matches."""
    import jsonschema

    from ..conftest import REPO

    validator = jsonschema.Draft202012Validator(json.loads((REPO / "schemas" / "training_thread.schema.json").read_text()))
    out = tmp_path / "threads.jsonl"
    result = runner.invoke(app, ["threads", TREES, "--alpaca", ALPACA, "--system", "Be brief.", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    for line in lines:
        validator.validate(line)
    assert {line["source"] for line in lines} == {"oasst", "alpaca"}
    for broken in (dict(lines[0], split="test"), dict(lines[0], messages=lines[0]["messages"][:1]), {k: v for k, v in lines[0].items() if k != "text"}):
        assert not validator.is_valid(broken)


def test_table_output_names_every_drop_reason(tmp_path):
    result = runner.invoke(app, ["threads", TREES, "--top-k", "1", "--out", str(tmp_path / "t.jsonl")])
    assert result.exit_code == 0
    for reason in ("tree_state", "review_result", "lang", "deleted", "synthetic", "top_k", "top_k_unranked"):
        assert reason in result.stdout


def test_records_without_a_tree_state_are_dropped_with_their_own_reason_and_a_hint(tmp_path, caplog):
    record = json.loads((FIXTURES / "oasst" / "threads.jsonl").read_text().splitlines()[0])
    del record["tree_state"]
    source = tmp_path / "threads.jsonl"
    source.write_text(json.dumps(record) + "\n")
    # The hint is logged by the library (the CLI's rich handler shows it). Checked first: the
    # CLI's logging setup replaces the root handlers, caplog's included.
    from oasst_data.config import ThreadConfig
    from oasst_data.threads import ThreadExtractor

    with caplog.at_level("WARNING", logger="oasst_data"):
        assert list(ThreadExtractor(ThreadConfig()).run([source])) == []
    assert any("--tree-states '*'" in r.getMessage() for r in caplog.records)
    out = tmp_path / "t.jsonl"
    result = runner.invoke(app, ["threads", str(source), "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["by_source"]["oasst"]["tree_drops"] == {"tree_state_missing": 1} and report["funnel"]["threads"] == 0
    kept = runner.invoke(app, ["threads", str(source), "--tree-states", "*", "--json", "--out", str(out)])
    assert json.loads(kept.stdout[kept.stdout.index("{"):])["funnel"]["threads"] == 1


def test_bad_option_values_are_one_line_errors(tmp_path):
    result = runner.invoke(app, ["threads", TREES, "--max-label", "spam", "--out", str(tmp_path / "t.jsonl")])
    assert result.exit_code == 1
    assert "NAME=NUMBER" in result.output
    result = runner.invoke(app, ["threads", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "t.jsonl")])
    assert result.exit_code == 1
    assert "missing.jsonl: no such file" in result.output
    assert not (tmp_path / "t.jsonl").exists()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("threads", "build", "verify"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("threads", ["Seed of the per-tree train/validation assignment. (default: 287631038922)", "(default: fail)", "(default: en)"]),
        ("train", ["Peak learning rate. (default: 1e-05)", "(default: 42)", "(default: on)", "(default: buckets)"]),
    ],
)
def test_help_shows_the_defaults_that_options_left_unset_take(command, shown):
    """Options default to None (presets and files fill them first), so the help states the real default."""
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.replace("│", " ").split())  # the panels' wrapped lines, joined
    for fragment in shown:
        assert fragment in text, fragment
    assert "(default: None)" not in text


def test_filters_command_lists_the_registry_in_order():
    from oasst_data.filters import REGISTRY

    result = runner.invoke(app, ["filters"], terminal_width=200)
    assert result.exit_code == 0
    positions = [result.stdout.index(spec.name) for spec in REGISTRY]
    assert positions == sorted(positions)
    assert "--top-k" in result.stdout and "top_k_unranked" in result.stdout


def test_outputs_that_cannot_be_written_are_one_line_errors(tmp_path):
    """A directory given as the output file, or a path under a file: exit 1, one line, no traceback, nothing left."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    tokenizer = str(FIXTURES / "tokenizer")
    cases = [
        (["threads", TREES, "--out", str(tmp_path)], f"{tmp_path}: is a directory"),
        (["threads", TREES, "--out", str(blocker / "t.jsonl")], f"{blocker / 't.jsonl'}: cannot write here"),
        (["build", TREES, "--tokenizer", tokenizer, "--out", str(blocker / "shards")], f"{blocker / 'shards'}: cannot write here"),
        (["stats", TREES, "--html", str(tmp_path)], f"{tmp_path}: is a directory"),
        # Checked before the run: a quarantine is first written at the first bad record, maybe hours in.
        (["build", TREES, "--tokenizer", tokenizer, "--out", str(tmp_path / "s"), "--on-bad-record", "skip",
          "--quarantine", str(tmp_path)], f"{tmp_path}: is a directory (given as --quarantine)"),
        # The tokenizer folder is an input: a quarantine written into it would replace its files.
        (["build", TREES, "--tokenizer", tokenizer, "--out", str(tmp_path / "s"), "--on-bad-record", "skip",
          "--quarantine", str(Path(tokenizer) / "tokenizer.json")], f"{Path(tokenizer) / 'tokenizer.json'}: --quarantine lies inside the input folder"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith(f"error: {message}"), (args, result.stderr)
        assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no temp files left behind


def test_any_system_error_is_one_line_naming_the_file(capsys):
    import pytest
    import typer

    from oasst_data_cli.console import user_errors

    with pytest.raises(typer.Exit) as stopped:
        with user_errors():
            raise OSError(28, "No space left on device", "/data/out.jsonl")
    assert stopped.value.exit_code == 1
    assert capsys.readouterr().err.strip() == "error: /data/out.jsonl: No space left on device"


def test_an_empty_list_option_names_itself(tmp_path):
    for option, message in (("--lang", "--lang needs at least one language code"), ("--tree-states", "--tree-states needs at least one tree state")):
        result = runner.invoke(app, ["threads", TREES, option, " , ", "--out", str(tmp_path / "t.jsonl")])
        assert result.exit_code == 1 and message in result.output, result.output


def test_label_thresholds_refuse_nan_and_out_of_range_and_warn_about_unknown_or_unmet_labels(tmp_path):
    out = ["--out", str(tmp_path / "t.jsonl")]
    nan = runner.invoke(app, ["threads", TREES, "--max-label", "spam=nan", *out])
    assert nan.exit_code == 1 and "--max-label expects NAME=NUMBER" in nan.output  # nan compares false: it would keep all
    typo = runner.invoke(app, ["threads", TREES, "--max-label", "spma=0.1", *out])
    assert typo.exit_code == 0 and "'spma' is not one of Open-Assistant's labels" in " ".join(typo.output.split())
    known = runner.invoke(app, ["threads", TREES, "--max-label", "spam=0.5", *out])
    assert known.exit_code == 0 and "not one of" not in known.output and "dropped nothing" not in known.output
    assert " ".join(typo.output.split()).count("'spma' is not one of") == 1  # once, though the options are parsed twice
    # A label no message carries (a typo, or an export without labels) filters nothing: said so.
    unmet = " ".join(typo.output.split())
    assert "--max-label spma=0.1: no message of the threads checked has label 'spma' (with a value), so it dropped nothing" in unmet
    humor = runner.invoke(app, ["threads", TREES, "--min-label", "humor=0.5", "--max-label", "spam=0.5", *out])
    said = " ".join(humor.output.split())
    assert humor.exit_code == 0 and "has label 'humor'" in said and "has label 'spam'" not in said
    # Label values are means of 0-1 votes: a threshold outside drops every labelled message's thread, or none.
    for bound in ("quality=2", "quality=-0.1"):
        outside = runner.invoke(app, ["threads", TREES, "--min-label", bound, *out])
        assert outside.exit_code == 1 and "the threshold must lie in [0, 1]" in outside.output, outside.output
    assert runner.invoke(app, ["threads", TREES, "--min-label", "quality=1", "--max-label", "spam=0", *out]).exit_code == 0


def test_an_empty_system_prompt_is_refused(tmp_path):
    result = runner.invoke(app, ["threads", TREES, "--system", " ", "--out", str(tmp_path / "t.jsonl")])
    assert result.exit_code == 1 and "system_prompt (--system) is empty" in result.output and not (tmp_path / "t.jsonl").exists()


def test_paths_and_label_names_that_look_like_markup_are_printed_as_they_are(tmp_path):
    """An output path or a --max-label name holding '[/x]' crashed with a rich MarkupError
    traceback after the output was written."""
    out = tmp_path / "[b]t[/b].jsonl"
    result = runner.invoke(app, ["threads", TREES, "--max-label", "[/x]=0.5", "--max-label", "spam=0.1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote 11 threads to {out}" in " ".join(result.output.split())
    assert "max_label:spam" in result.stdout


def test_a_quarantine_in_a_read_only_folder_is_refused_before_the_run(tmp_path, monkeypatch):
    from oasst_data import output_paths

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    # root (as CI runs) may write anywhere: the folder is also reported unwritable, as it is to a user.
    real_access = os.access
    monkeypatch.setattr(output_paths.os, "access", lambda path, mode: False if Path(path) == locked else real_access(path, mode))
    try:
        result = runner.invoke(app, ["threads", TREES, "--out", str(tmp_path / "t.jsonl"), "--on-bad-record", "skip",
                                     "--quarantine", str(locked / "q.jsonl")])
    finally:
        locked.chmod(0o755)
    assert result.exit_code == 1
    assert f"{locked / 'q.jsonl'}: --quarantine cannot be written: {locked} is not writable" in " ".join(result.output.split())
    assert not (tmp_path / "t.jsonl").exists()


def test_filters_command_explains_every_reason_a_funnel_can_count(tmp_path):
    """Reasons no option controls (duplicates, invalid trees, empty Alpaca text, the build's row
    drops) used to be printed by funnels but explained nowhere."""
    from oasst_data.filters import OTHER_DROP_REASONS, REGISTRY

    listed = {reason.split(":")[0] for spec in REGISTRY for reason in spec.reasons} | {o.reason for o in OTHER_DROP_REASONS}
    bad_roles = {"message_tree_id": "t-bad", "tree_state": "ready_for_export", "prompt": {
        "message_id": "b1", "text": "x", "role": "assistant", "lang": "en", "review_result": True, "replies": []}}
    invalid = tmp_path / "invalid.jsonl"
    invalid.write_text(json.dumps(bad_roles) + "\n")
    # A thread record of a tree also given whole: the same messages twice.
    basic = json.loads((FIXTURES / "oasst" / "trees.jsonl").read_text().splitlines()[0])
    path = [basic["prompt"], basic["prompt"]["replies"][0]]
    thread = {"thread_id": "th-basic", "message_tree_id": basic["message_tree_id"], "tree_state": basic["tree_state"],
              "thread": [{k: v for k, v in m.items() if k != "replies"} for m in path]}
    (tmp_path / "thread-of-a-tree.jsonl").write_text(json.dumps(thread) + "\n")
    copies = []
    for name in ("trees.jsonl", "threads.jsonl"):
        copy = tmp_path / f"copy-{name}"
        copy.write_bytes((FIXTURES / "oasst" / name).read_bytes())
        copies += [str(FIXTURES / "oasst" / name), str(copy)]
    seen: set[str] = set()
    for options in (["--lang", "*"], ["--top-k", "1"], ["--max-label", "spam=0.1"], ["--synthetic", "only", "--lang-scope", "all"]):
        result = runner.invoke(app, ["threads", *copies, str(invalid), str(tmp_path / "thread-of-a-tree.jsonl"), "--alpaca", str(FIXTURES / "alpaca" / "alpaca.json"),
                                     "--on-bad-record", "skip", "--json", "--out", str(tmp_path / "t.jsonl"), *options])
        assert result.exit_code == 0, result.output
        funnel = json.loads(result.stdout)["funnel"]
        seen |= {reason.split(":")[0] for reason in [*funnel["tree_drops"], *funnel["thread_drops"]]}
    assert {"duplicate_tree", "duplicate_thread", "duplicate_message", "invalid_tree", "empty_text", "top_k", "max_label"} <= seen
    assert seen <= listed, seen - listed
    shown = runner.invoke(app, ["filters"], terminal_width=200).stdout
    for reason in listed:
        assert reason in shown
    assert "Alpaca records are kept as they are" in " ".join(shown.split())


def test_a_lang_without_english_warns_that_alpaca_records_are_kept(caplog):
    from oasst_data.config import ThreadConfig
    from oasst_data.threads import ThreadExtractor

    sources = [ALPACA, str(FIXTURES / "alpaca" / "alpaca.json")]
    for lang, warned in (("de", True), ("de,en", False), ("*", False)):
        caplog.clear()
        with caplog.at_level("WARNING", logger="oasst_data"):
            threads = list(ThreadExtractor(ThreadConfig(lang=lang)).run([], alpaca=sources))
        assert len(threads) == 8  # the Alpaca records are kept whatever --lang says
        messages = [r.getMessage() for r in caplog.records if "Alpaca records (English) are all kept" in r.getMessage()]
        assert len(messages) == (1 if warned else 0)  # once per run, not per source


@pytest.mark.parametrize("text", ['[{"instruction": "a", "output": "b"}]\n', '[\n  {"instruction": "a", "output": "b"}\n]\n'])
def test_alpaca_data_given_as_an_export_gets_a_hint(tmp_path, text):
    source = tmp_path / "alpaca.json"
    source.write_text(text)
    result = runner.invoke(app, ["threads", str(source), "--out", str(tmp_path / "t.jsonl")])
    assert result.exit_code == 1
    assert f"{source}:1:" in result.output and "Alpaca data? give it with --alpaca" in result.output
    # Alpaca as JSON Lines: an object line of no export kind, with Alpaca's keys.
    source.write_text('{"instruction": "a", "output": "b"}\n')
    result = runner.invoke(app, ["threads", str(source), "--out", str(tmp_path / "t.jsonl")])
    assert result.exit_code == 1 and "unknown record" in result.output and "(an Alpaca record? give the file with --alpaca)" in " ".join(result.output.split())
    # Any other object of no export kind gets no such hint.
    source.write_text('{"question": "a", "answer": "b"}\n')
    result = runner.invoke(app, ["threads", str(source), "--out", str(tmp_path / "t.jsonl")])
    assert result.exit_code == 1 and "unknown record" in result.output and "--alpaca" not in result.output


def test_no_input_is_a_usage_error_in_every_command(tmp_path):
    tokenizer = str(FIXTURES / "tokenizer")
    for command in (["threads", "--out", str(tmp_path / "t.jsonl")], ["stats"], ["build", "--tokenizer", tokenizer, "--out", str(tmp_path / "b")]):
        result = runner.invoke(app, command)
        assert result.exit_code == 2, (command, result.output)  # build used to exit 1
    assert not (tmp_path / "b").exists()


def test_threads_to_stdout_stay_json_lines_the_funnel_goes_to_stderr(tmp_path):
    import subprocess
    import sys

    command = [sys.executable, "-m", "oasst_data_cli", "threads", TREES, "--out", "/dev/stdout"]
    for extra in ([], ["--json"]):
        done = subprocess.run([*command, *extra], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert len(lines) == 12 and all(json.loads(line)["text"] for line in lines)
        assert "records read" in done.stderr or '"funnel"' in done.stderr
    # `-` is standard output too (it wrote a file named '-').
    dash = subprocess.run([*command[:-1], "-"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert dash.returncode == 0 and dash.stdout == done.stdout and list(tmp_path.iterdir()) == []
    # So is `--quarantine -`: the bad lines alone on stdout, the funnel on stderr.
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{broken\n" + Path(TREES).read_text())
    skipped = subprocess.run([*command[:4], str(bad), "--out", "t.jsonl", "--on-bad-record", "skip", "--quarantine", "-"],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert skipped.returncode == 0, skipped.stderr
    assert [json.loads(line)["line"] for line in skipped.stdout.splitlines()] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "t.jsonl"]
    bad.unlink()
    (tmp_path / "t.jsonl").unlink()
    # Skipping needs a quarantine file: beside /dev/stdout is no place for one.
    done = subprocess.run([*command, "--on-bad-record", "skip"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "give --quarantine FILE" in done.stderr
    assert not os.path.exists("/dev/stdout.quarantine.jsonl")


def test_a_reader_that_stops_early_ends_the_run_quietly(tmp_path):
    """`threads --out /dev/stdout | head -1` printed 'error: Broken pipe' and exited 1."""
    import subprocess
    import sys

    alpaca = tmp_path / "many.jsonl"
    alpaca.write_text("".join(json.dumps({"instruction": f"Question {i}? " + "x" * 200, "input": "", "output": f"Answer {i}."}) + "\n" for i in range(3000)))
    command = [sys.executable, "-m", "oasst_data_cli", "threads", "--alpaca", str(alpaca), "--out", "/dev/stdout"]
    producer = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert producer.stdout.readline().startswith(b"{")
    producer.stdout.close()  # the reader goes away after one line; ~700 kB were still to come
    _, errors = producer.communicate(timeout=120)
    assert producer.returncode == 141, errors
    assert b"error" not in errors and b"Traceback" not in errors
