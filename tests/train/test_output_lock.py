"""lock_output_dir: one run at a time trains into an output folder."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("torch")

from oasst_data.errors import ConfigError  # noqa: E402
from oasst_data.train.run import LOCK_FILE, lock_output_dir  # noqa: E402


def test_a_second_run_in_a_held_folder_is_refused_until_the_first_ends(tmp_path):
    """Found by an audit: a restart beside ranks still training (DeepSpeed's launcher does not pass
    SIGTERM on) trained into the same checkpoints."""
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from oasst_data.train.run import lock_output_dir; import sys, time; h = lock_output_dir(__import__('pathlib').Path({str(out)!r})); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=rf"--output-dir {out}: another run is training there \(pid {holder.pid} on "):
            lock_output_dir(out)
    finally:
        holder.kill()
        holder.wait()
    lock = lock_output_dir(out)  # the system let go of the lock with its process, however it ended
    assert lock is not None and (out / LOCK_FILE).read_text().startswith("pid ")
    lock.close()
    lock_output_dir(out).close()  # closed: free again


def test_a_filesystem_without_locks_is_named_not_taken_for_another_run(tmp_path, monkeypatch):
    """A review: every flock error read "another run is training there", sending users after a process that did not exist."""
    import errno
    import fcntl

    from oasst_data.errors import OasstDataError

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(OasstDataError, match=r"cannot lock \.oasst_train\.lock there \(No locks available\): a filesystem without file locks\?") as caught:
        lock_output_dir(tmp_path / "run")
    assert not isinstance(caught.value, ConfigError) or "another run" not in str(caught.value)
