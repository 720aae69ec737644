"""Scratch folders of `stats`: removed when done, and after a killed run (SIGKILL skips every
cleanup) by the next run; never one in use, nor a folder without a lock file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap

import pytest

from oasst_data import scratch
from oasst_data.stats import export_stats

from .conftest import FIXTURES, REPO

_KILLED_IN_A_SCRATCH_FOLDER = textwrap.dedent(
    """
    import os, signal, sys, tempfile
    tempfile.tempdir = sys.argv[1]
    from oasst_data.scratch import STATS_SCRATCH_PREFIX, scratch_folder
    with scratch_folder(STATS_SCRATCH_PREFIX) as folder:
        (folder / "spill.parquet").write_bytes(b"x" * 1000)
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _killed_run(temp_dir) -> None:
    done = subprocess.run([sys.executable, "-c", _KILLED_IN_A_SCRATCH_FOLDER, str(temp_dir)], cwd=REPO, timeout=60)
    assert done.returncode == -signal.SIGKILL


def test_a_folder_a_killed_run_left_is_removed_by_the_next_run(temp_dir, caplog):
    """Found by an audit: `TemporaryDirectory` stays behind after SIGKILL, one more per killed run."""
    _killed_run(temp_dir)
    left = sorted(p.name for p in temp_dir.iterdir())
    assert len(left) == 2 and left[1] == left[0] + ".lock"  # the folder and its lock file
    with caplog.at_level("WARNING", logger="oasst_data"):
        with scratch.scratch_folder(scratch.STATS_SCRATCH_PREFIX) as folder:
            assert sorted(p.name for p in temp_dir.iterdir()) == [folder.name, folder.name + ".lock"]
    assert list(temp_dir.iterdir()) == []
    assert any("left by a run that did not finish" in r.getMessage() for r in caplog.records)


def test_a_folder_in_use_or_without_a_lock_file_is_left_alone(temp_dir):
    foreign = temp_dir / (scratch.STATS_SCRATCH_PREFIX + "someone-else")
    foreign.mkdir()  # no lock file: another program's, or one being made right now
    with scratch.scratch_folder(scratch.STATS_SCRATCH_PREFIX) as first:
        assert scratch.remove_abandoned_scratch(temp_dir, scratch.STATS_SCRATCH_PREFIX) == []
        with scratch.scratch_folder(scratch.STATS_SCRATCH_PREFIX) as second:
            assert first.is_dir() and second.is_dir() and first != second
        assert first.is_dir() and not second.exists()
    assert sorted(p.name for p in temp_dir.iterdir()) == [foreign.name]


def test_stats_runs_leave_nothing_in_the_temp_directory_and_clean_after_a_killed_one(temp_dir):
    _killed_run(temp_dir)
    report = export_stats([str(FIXTURES / "oasst" / "trees.jsonl")])
    assert report["export"]["funnel"]["threads"] > 0
    assert list(temp_dir.iterdir()) == []
    assert not any(name.startswith(scratch.STATS_SCRATCH_PREFIX) for name in os.listdir(temp_dir))
