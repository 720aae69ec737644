"""Outputs never destroy inputs: every command refuses, before any work, an output path that is an
input, lies inside an input build, or is named by two options; `build --overwrite` deletes only an
earlier build, never a folder holding an input."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from typer.testing import CliRunner

from oasst_data.errors import OasstDataError
from oasst_data.output_paths import check_outputs, check_replaced_folder
from oasst_data_cli.app import app

from ..conftest import FIXTURE_TOKENIZER, FIXTURES

runner = CliRunner()
TOKENIZER = ["--tokenizer", str(FIXTURE_TOKENIZER)]


@pytest.fixture
def work(tmp_path, monkeypatch):
    shutil.copy(FIXTURES / "oasst" / "trees.jsonl", tmp_path / "trees.jsonl")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def refused(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["threads", "trees.jsonl", "--out", "trees.jsonl"], "--out names the input trees.jsonl"),
        (["threads", "trees.jsonl", "--out", "sub/../trees.jsonl"], "--out names the input trees.jsonl"),
        (["threads", "trees.jsonl", "--out", "t.jsonl", "--on-bad-record", "skip", "--quarantine", "trees.jsonl"], "--quarantine names the input"),
        (["threads", "trees.jsonl", "--out", "t.jsonl", "--on-bad-record", "skip", "--quarantine", "t.jsonl"], "given both as --out and as --quarantine"),
        (["stats", "trees.jsonl", "-q", "--json", "trees.jsonl"], "--json names the input trees.jsonl"),
        (["stats", "trees.jsonl", "-q", "--json", "s.json", "--html", "s.json"], "given both as --json and as --html"),
        (["build", "trees.jsonl", *TOKENIZER, "--out", ".", "--overwrite"], "holds the input trees.jsonl"),
        (["build", "trees.jsonl", *TOKENIZER, "--out", "b", "--on-bad-record", "skip", "--quarantine", "trees.jsonl"], "--quarantine names the input"),
        (["build", "trees.jsonl", *TOKENIZER, "--out", "b", "--on-bad-record", "skip", "--quarantine", "b/q.jsonl"], "inside the output folder b"),
    ],
    ids=["threads-out", "threads-out-dotdot", "threads-quarantine", "threads-out-is-quarantine", "stats-json",
         "stats-json-is-html", "build-out-holds-input", "build-quarantine", "build-quarantine-in-out"],
)
def test_an_output_on_an_input_is_refused_and_the_input_survives(work, args, message):
    before = (work / "trees.jsonl").read_bytes()
    refused(args, message)
    assert (work / "trees.jsonl").read_bytes() == before
    assert sorted(p.name for p in work.iterdir()) == ["trees.jsonl"]  # nothing written either


def test_a_symlink_to_an_input_is_the_input(work):
    os.symlink(work / "trees.jsonl", work / "link.jsonl")
    refused(["threads", "trees.jsonl", "--out", "link.jsonl"], "--out names the input trees.jsonl")


def test_stats_never_writes_into_the_build_it_reads(work):
    assert runner.invoke(app, ["build", "trees.jsonl", *TOKENIZER, "--out", "b"]).exit_code == 0
    manifest = (work / "b" / "manifest.json").read_bytes()
    refused(["stats", "b", "-q", "--json", "b/manifest.json"], "--json lies inside the input folder b")
    assert (work / "b" / "manifest.json").read_bytes() == manifest
    assert runner.invoke(app, ["verify", "b"]).exit_code == 0
    refused(["stats", "b", "trees.jsonl"], "b: a build directory is read alone")


def test_no_command_writes_into_a_build_it_does_not_read(work):
    """A stats file or threads written over a build's manifest or a shard broke the build silently."""
    assert runner.invoke(app, ["build", "trees.jsonl", *TOKENIZER, "--out", "b"]).exit_code == 0
    files = {path: path.read_bytes() for path in (work / "b").rglob("*") if path.is_file()}
    for args, option in [
        (["stats", "trees.jsonl", "-q", "--json", "b/manifest.json"], "--json"),
        (["stats", "trees.jsonl", "-q", "--html", "b/data/report.html"], "--html"),
        (["threads", "trees.jsonl", "--out", "b/data/train/new.jsonl"], "--out"),
        (["build", "trees.jsonl", *TOKENIZER, "--out", "c", "--on-bad-record", "skip", "--quarantine", "b/quarantine.jsonl"], "--quarantine"),
        (["threads", "trees.jsonl", "--out", "b/tokenizer/t.jsonl"], "--out"),
        # A build inside another's data/: verify of the outer one then finds Parquet files it does not list.
        (["build", "trees.jsonl", *TOKENIZER, "--out", "b/data/nested"], "--out"),
    ]:
        refused(args, f"{option} would be among the files of the oasst-data build {work / 'b'}")
    assert {path: path.read_bytes() for path in (work / "b").rglob("*") if path.is_file()} == files
    assert not (work / "c").exists()
    # A file of one's own beside the build's files is the user's to write (and verify still passes).
    assert runner.invoke(app, ["stats", "trees.jsonl", "-q", "--markdown", "b/card.md"]).exit_code == 0
    assert runner.invoke(app, ["verify", "b"]).exit_code == 0
    # A folder that merely has a manifest.json (a browser extension's, say) is no build.
    (work / "ext").mkdir()
    (work / "ext" / "manifest.json").write_text('{"name": "an extension"}')
    assert runner.invoke(app, ["threads", "trees.jsonl", "--out", "ext/t.jsonl"]).exit_code == 0


def test_overwrite_replaces_an_earlier_build_only(work, monkeypatch):
    assert runner.invoke(app, ["build", "trees.jsonl", *TOKENIZER, "--out", "b"]).exit_code == 0
    assert runner.invoke(app, ["build", "trees.jsonl", *TOKENIZER, "--out", "b", "--overwrite"]).exit_code == 0
    (work / "mine").mkdir()
    (work / "mine" / "notes.txt").write_text("keep me")
    refused(["build", "trees.jsonl", *TOKENIZER, "--out", "mine", "--overwrite"], "not an oasst-data build (no oasst-data manifest.json)")
    assert (work / "mine" / "notes.txt").read_text() == "keep me"
    # A manifest.json of something else (a browser extension's) does not make a build.
    (work / "mine" / "manifest.json").write_text('{"manifest_version": 3, "name": "ext"}')
    refused(["build", "trees.jsonl", *TOKENIZER, "--out", "mine", "--overwrite"], "not an oasst-data build")
    assert (work / "mine" / "notes.txt").read_text() == "keep me"
    # A link to a build: replacing the link would leave the linked build stale.
    (work / "link").symlink_to(work / "b")
    refused(["build", "trees.jsonl", *TOKENIZER, "--out", "link", "--overwrite"], "link: is a symbolic link")
    assert (work / "link").is_symlink()
    (work / "par" / "sub").mkdir(parents=True)
    shutil.copy(work / "trees.jsonl", work / "par" / "sub" / "trees.jsonl")
    (work / "par" / "manifest.json").write_text("{}")  # even a folder that looks like a build
    refused(["build", "par/sub/trees.jsonl", *TOKENIZER, "--out", "par", "--overwrite"], "par: holds the input par/sub/trees.jsonl")
    assert (work / "par" / "sub" / "trees.jsonl").is_file()
    # The current folder (or one holding it) cannot be replaced whole, even empty.
    (work / "empty" / "inner").mkdir(parents=True)
    monkeypatch.chdir(work / "empty" / "inner")
    for out in (".", ".."):
        refused(["build", str(work / "trees.jsonl"), *TOKENIZER, "--out", out], "is the current folder or holds it")
    assert not any((work / "empty" / "inner").iterdir())


def test_build_reports_the_quarantine_where_it_is(work):
    lines = (work / "trees.jsonl").read_bytes() + b"{broken\n"
    (work / "bad.jsonl").write_bytes(lines)
    result = runner.invoke(app, ["build", "bad.jsonl", *TOKENIZER, "--out", "b", "--on-bad-record", "skip", "--quarantine", "q/bad-lines.jsonl"])
    assert result.exit_code == 0, result.output
    assert "see q/bad-lines.jsonl" in result.output and (work / "q" / "bad-lines.jsonl").is_file()
    assert not (work / "b" / "quarantine.jsonl").exists()
    assert json.loads((work / "b" / "manifest.json").read_text())["quarantine"] == "../q/bad-lines.jsonl"  # relative to the build folder
    default = runner.invoke(app, ["build", "bad.jsonl", *TOKENIZER, "--out", "c", "--on-bad-record", "skip"])
    assert "see c/quarantine.jsonl" in default.output and (work / "c" / "quarantine.jsonl").is_file()


def test_threads_warns_when_nothing_is_kept(work):
    result = runner.invoke(app, ["threads", "trees.jsonl", "--out", "t.jsonl", "--lang", "xx"])
    assert result.exit_code == 0
    assert "no thread was kept: 12 records read; dropped: tree lang 10" in " ".join(result.output.split()), result.output


def test_the_checks_as_a_library(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text("{}\n")
    check_outputs({"--out": tmp_path / "out.jsonl", "--quarantine": None}, [data, "some/hub-dataset"])
    with pytest.raises(OasstDataError, match="--out names the input"):
        check_outputs({"--out": data}, [data])
    check_replaced_folder(tmp_path / "shards", [data], {"--quarantine": tmp_path / "q.jsonl"})
    with pytest.raises(OasstDataError, match="holds the input"):
        check_replaced_folder(tmp_path, [data])


def test_a_rerun_that_skips_nothing_removes_the_quarantine_an_earlier_run_left(work):
    """threads' default quarantine lies beside --out, outside anything replaced as a whole: a stale
    one would tell of bad records this run never met."""
    (work / "bad.jsonl").write_bytes((work / "trees.jsonl").read_bytes() + b"{broken\n")
    quarantine = work / "t.jsonl.quarantine.jsonl"
    first = runner.invoke(app, ["threads", "bad.jsonl", "--out", "t.jsonl", "--on-bad-record", "skip"])
    assert first.exit_code == 0 and quarantine.is_file(), first.output
    assert json.loads(quarantine.read_text())["line"] == 13
    (work / "bad.jsonl").write_bytes((work / "trees.jsonl").read_bytes())  # the input repaired
    again = runner.invoke(app, ["threads", "bad.jsonl", "--out", "t.jsonl", "--on-bad-record", "skip"])
    assert again.exit_code == 0, again.output
    assert not quarantine.exists() and "bad records skipped" not in again.output
    # A strict run (the default) that finishes met no bad record either: the file would tell of another run.
    entry = '{"source": "bad.jsonl", "line": 13, "reason": "malformed JSON", "raw": "{broken"}\n'
    quarantine.write_text(entry)
    strict = runner.invoke(app, ["threads", "bad.jsonl", "--out", "t.jsonl"])
    assert strict.exit_code == 0, strict.output
    assert not quarantine.exists()
    (work / "bad.jsonl").write_bytes((work / "trees.jsonl").read_bytes() + b"{broken\n")
    quarantine.write_text(entry)
    stopped = runner.invoke(app, ["threads", "bad.jsonl", "--out", "t.jsonl"])
    assert stopped.exit_code == 1 and quarantine.read_text() == entry, stopped.output  # a run that stops leaves it


def test_a_run_that_stops_midway_leaves_the_earlier_quarantine(tmp_path):
    from oasst_data.quarantine import BadRecordHandler, OnBadRecord

    earlier = tmp_path / "q.jsonl"
    entry = '{"source": "in.jsonl", "line": 3, "reason": "malformed JSON", "raw": "{"}\n'
    earlier.write_text(entry)
    BadRecordHandler(OnBadRecord.SKIP, earlier).close(finished=False)
    assert earlier.read_text() == entry
    BadRecordHandler(OnBadRecord.FAIL, earlier).close(finished=False)  # a strict run stopped by a bad record
    assert earlier.read_text() == entry
    BadRecordHandler(OnBadRecord.SKIP, earlier).close()
    assert not earlier.exists()
    earlier.write_text(entry)
    BadRecordHandler(OnBadRecord.FAIL, earlier).close()  # a strict run that finished met no bad record either
    assert not earlier.exists()


def test_an_interrupted_run_that_quarantined_records_leaves_the_earlier_quarantine(tmp_path):
    """Ctrl-C in a skip-mode run moved its partial quarantine over the earlier run's file, while
    --out still held the earlier run's threads: the two no longer told of the same run."""
    from oasst_data.config import ThreadConfig
    from oasst_data.threads import ThreadExtractor

    source = (FIXTURES / "oasst" / "trees.jsonl").read_bytes()
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"{broken\n" + source)
    earlier = tmp_path / "q.jsonl"
    earlier.write_text('{"line": 3}\n')
    extractor = ThreadExtractor(ThreadConfig(on_bad_record="skip", quarantine=earlier))

    def interrupt() -> None:
        assert extractor.handler.count == 1  # the bad line was quarantined before the stop
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        list(extractor.run([bad], progress=interrupt))
    assert earlier.read_text() == '{"line": 3}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "q.jsonl"]  # no temp file left
    finished = ThreadExtractor(ThreadConfig(on_bad_record="skip", quarantine=earlier))
    list(finished.run([bad]))
    assert json.loads(earlier.read_text())["line"] == 1


def test_a_build_given_by_the_wrong_path_is_named_for_what_it_is(work):
    """verify/stats/train on a missing folder said 'no manifest.json'; on a build's manifest.json,
    'no manifest.json' (verify) or 'malformed JSON' with a JSON Lines hint (stats)."""
    assert runner.invoke(app, ["build", "trees.jsonl", *TOKENIZER, "--out", "b"]).exit_code == 0
    refused(["verify", "nope"], "nope: no such folder (give the folder `oasst-data build --out` wrote)")
    refused(["verify", "b/manifest.json"], "b/manifest.json: is a file, not a build folder: give the build folder, b")
    refused(["verify", "trees.jsonl"], "trees.jsonl: is a file, not a build folder (give the folder")
    refused(["stats", "b/manifest.json", "-q"], "b/manifest.json: is a build's manifest, not an export: give the build folder, b")
    refused(["stats", "nope", "-q"], "nope")


@pytest.mark.parametrize("policy", ["fail", "skip"])
@pytest.mark.parametrize("out", [".", "/", ""])
def test_a_folder_as_threads_out_is_named_not_a_traceback(work, out, policy):
    """The quarantine beside --out was derived before --out was checked: `Path('.').with_name`
    raised ValueError (a traceback), under skip and then under the default policy too."""
    refused(["threads", "trees.jsonl", "--out", out, "--on-bad-record", policy], "is a directory (given as --out); give a file name")
