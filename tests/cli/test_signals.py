"""SIGTERM and SIGHUP end a run as Ctrl-C does: temp files, staging and scratch folders removed.

Found by an audit: Python's default action for them exits at once, so `timeout`, Slurm or
`docker stop` left a 333 MB hidden temp file beside `threads --out`, a build's staging folder
and a stats spill folder, each removed only by a later run writing to the same place.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ..conftest import FIXTURES

TREES = str(FIXTURES / "oasst" / "trees.jsonl")

# The CLI in a child process whose extraction stalls after its first thread (as a long export
# would), with its outputs already open: the moment a scheduler's signal usually comes.
_STALLING_CLI = textwrap.dedent(
    """
    import sys, time
    from oasst_data.threads import ThreadExtractor

    real_run = ThreadExtractor.run

    def stalling_run(self, *args, **kwargs):
        for thread in real_run(self, *args, **kwargs):
            yield thread
            print("stalled", file=sys.stderr, flush=True)
            time.sleep(600)

    ThreadExtractor.run = stalling_run
    sys.argv = ["oasst-data", *sys.argv[1:]]
    from oasst_data_cli.entry import main
    main()
    """
)


def _stop_while_stalled(args: list[str], signum: int, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    process = subprocess.Popen(
        [sys.executable, "-c", _STALLING_CLI, *args], cwd=cwd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        deadline = time.monotonic() + 120
        for line in process.stderr:
            if "stalled" in line:
                break
            if time.monotonic() > deadline:
                pytest.fail("the child never reached its first thread")
        process.send_signal(signum)
        rest = process.stderr.read()
        process.wait(timeout=60)
    finally:
        process.kill()
    return subprocess.CompletedProcess(args, process.returncode, "", rest)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
@pytest.mark.parametrize("command", ["threads", "build", "stats"])
def test_a_terminated_run_cleans_up_and_says_so(tmp_path, signum, command):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = dict(os.environ, TMPDIR=str(scratch))
    out = tmp_path / "out"
    out.mkdir()
    args = {
        "threads": ["threads", TREES, "--out", str(out / "t.jsonl")],
        "build": ["build", TREES, "--tokenizer", str(FIXTURES / "tokenizer"), "--out", str(out / "shards")],
        "stats": ["stats", TREES, "--json", str(out / "s.json")],
    }[command]
    done = _stop_while_stalled(args, signum, tmp_path, env)
    name = signal.Signals(signum).name
    assert done.returncode == 128 + signum, done.stderr
    assert f"terminated ({name})" in done.stderr and "Traceback" not in done.stderr
    assert list(out.iterdir()) == [], "a temp file, staging folder or lock was left"
    assert list(scratch.iterdir()) == [], "a spill folder was left"


_SIGNAL_IN_A_FINALIZER = textwrap.dedent(
    """
    import sys, time
    from oasst_data.threads import ThreadExtractor

    class SlowToDelete:
        def __del__(self):
            print("deleting", file=sys.stderr, flush=True)
            time.sleep(5)  # the signal lands here, where Python drops any exception raised

    real_run = ThreadExtractor.run

    def run_with_a_finalizer(self, *args, **kwargs):
        for index, thread in enumerate(real_run(self, *args, **kwargs)):
            if index == 0:
                SlowToDelete()
                time.sleep(600)  # a long run goes on: the signal must still stop it
            yield thread

    ThreadExtractor.run = run_with_a_finalizer
    sys.argv = ["oasst-data", *sys.argv[1:]]
    from oasst_data_cli.entry import main
    main()
    """
)


def test_a_signal_that_lands_in_a_finalizer_still_stops_the_run(tmp_path):
    """Found by a review: raised inside a `__del__`, the Terminated was printed as "Exception
    ignored" and dropped, and the run went on to exit 0."""
    out = tmp_path / "t.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-c", _SIGNAL_IN_A_FINALIZER, "threads", TREES, "--out", str(out)],
        cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )
    try:
        for line in process.stderr:
            if "deleting" in line:
                break
        process.send_signal(signal.SIGTERM)
        rest = process.stderr.read()
        process.wait(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, rest
    assert "terminated (SIGTERM)" in rest and "Exception ignored" not in rest
    assert not out.exists() and list(tmp_path.iterdir()) == []
