"""Publishing a build folder: one step where the filesystem allows, recoverable where a kill
interrupts it, never replacing a build that another run put in place without --overwrite."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from oasst_data import atomic
from oasst_data.atomic import StagingFolder, atomic_open, remove_abandoned_staging
from oasst_data.errors import OasstDataError

from .conftest import REPO


def _staged(target: Path, text: str) -> StagingFolder:
    staging = StagingFolder(target).create()
    (staging.path / "marker.txt").write_text(text)
    return staging


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_new_or_empty_target_is_one_rename(tmp_path):
    _staged(tmp_path / "out", "new").publish()
    assert (tmp_path / "out" / "marker.txt").read_text() == "new"
    (tmp_path / "empty").mkdir()
    _staged(tmp_path / "empty", "new").publish()
    assert (tmp_path / "empty" / "marker.txt").read_text() == "new"
    assert _listing(tmp_path) == ["empty", "out"]  # no staging folder, no lock file


def test_without_overwrite_a_build_that_landed_meanwhile_is_kept(tmp_path):
    target = tmp_path / "out"
    late = _staged(target, "late")
    _staged(target, "first").publish()  # another run finished first
    with pytest.raises(OasstDataError, match="another build finished there while this one ran"):
        late.publish(overwrite=False)
    late.discard()
    assert (target / "marker.txt").read_text() == "first"
    assert _listing(tmp_path) == ["out"]


@pytest.mark.parametrize("swap", [True, False], ids=["renameat2-exchange", "two-renames"])
def test_overwrite_replaces_the_target_and_leaves_nothing_beside_it(tmp_path, monkeypatch, swap):
    if not swap:
        monkeypatch.setattr(atomic, "_exchange", lambda first, second: False)
    target = tmp_path / "out"
    _staged(target, "old").publish()
    _staged(target, "new").publish(overwrite=True)
    assert (target / "marker.txt").read_text() == "new"
    assert _listing(tmp_path) == ["out"]


def test_staging_names_are_unique_even_for_one_process(tmp_path):
    first, second = StagingFolder(tmp_path / "out").create(), StagingFolder(tmp_path / "out").create()
    assert first.path != second.path  # pids repeat (a container's build is always pid 1)
    first.discard()
    second.discard()
    assert _listing(tmp_path) == []


def _killed_while_publishing(target: Path, kill_after: str) -> None:
    """A build process killed (os._exit) inside publish(overwrite=True), right after `kill_after`."""
    script = textwrap.dedent(
        f"""
        import os, shutil, sys
        from pathlib import Path
        from oasst_data import atomic
        target = Path(sys.argv[1])
        staging = atomic.StagingFolder(target).create()
        (staging.path / "marker.txt").write_text("new")
        if {kill_after!r} == "move-aside":
            atomic._exchange = lambda first, second: False
            rename = os.rename
            def rename_then_die(source, destination):
                rename(source, destination)
                if str(destination).endswith(atomic.OLD_SUFFIX):
                    os._exit(9)
            os.rename = rename_then_die
        else:
            shutil.rmtree = lambda *args, **kwargs: os._exit(9)  # right after the swap
        staging.publish(overwrite=True)
        """
    )
    done = subprocess.run([sys.executable, "-c", script, str(target)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 9, done.stderr


def _can_swap(folder: Path) -> bool:
    (folder / "a").mkdir()
    (folder / "b").mkdir()
    swapped = atomic._exchange(folder / "a", folder / "b")
    (folder / "a").rmdir()
    (folder / "b").rmdir()
    return swapped


@pytest.mark.parametrize(
    ("kill_after", "expected"),
    [("move-aside", "old"), ("swap", "new")],
    ids=["between-the-two-renames", "after-the-swap"],
)
def test_a_build_killed_while_publishing_is_repaired_by_the_next(tmp_path, kill_after, expected):
    if kill_after == "swap" and not _can_swap(tmp_path):
        pytest.skip("this filesystem cannot swap folders (renameat2 RENAME_EXCHANGE)")
    target = tmp_path / "out"
    _staged(target, "old").publish()
    _killed_while_publishing(target, kill_after)
    if kill_after == "move-aside":
        assert not target.exists()  # the window the two renames leave
    assert remove_abandoned_staging(target)
    assert (target / "marker.txt").read_text() == expected  # the old build or the new one, whole
    assert _listing(tmp_path) == ["out"]


def test_a_killed_builds_folder_is_found_whatever_the_target_name(tmp_path):
    target = tmp_path / "b[1] *?"
    script = "import os, sys; from oasst_data.atomic import StagingFolder; StagingFolder(sys.argv[1]).create(); os._exit(9)"
    subprocess.run([sys.executable, "-c", script, str(target)], cwd=REPO, timeout=60)
    assert len(list(tmp_path.iterdir())) == 2  # the staging folder and its lock
    assert len(remove_abandoned_staging(target)) == 1
    assert _listing(tmp_path) == []


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_written_atomically_follow_the_umask_like_every_other_output(tmp_path, umask, mode):
    script = textwrap.dedent(
        f"""
        import os, sys
        os.umask({umask})
        from pathlib import Path
        from oasst_data.atomic import StagingFolder, atomic_open
        with atomic_open(Path(sys.argv[1]) / "a.json") as handle:
            handle.write("{{}}")
        (Path(sys.argv[1]) / "plain.txt").write_text("x")
        staging = StagingFolder(Path(sys.argv[1]) / "out").create()
        print(oct(os.stat(staging.path).st_mode & 0o777))
        """
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert os.stat(tmp_path / "a.json").st_mode & 0o777 == mode == os.stat(tmp_path / "plain.txt").st_mode & 0o777
    assert done.stdout.strip() == oct(0o777 & ~umask)


def test_atomic_open_refuses_a_directory(tmp_path):
    with pytest.raises(OasstDataError, match="is a directory"):
        with atomic_open(tmp_path):
            pass


def test_an_unnamed_disk_full_error_gets_the_files_name(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(OSError) as raised:
        with atomic.naming_failed_writes(target):
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert (raised.value.errno, raised.value.filename, raised.value.strerror) == (errno.ENOSPC, str(target), os.strerror(errno.ENOSPC))


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, "No space left on device", "/elsewhere/named"), OSError(errno.EIO, "Input/output error"), ValueError("not a write")],
)
def test_other_errors_pass_unchanged(tmp_path, error):
    with pytest.raises(type(error)) as raised:
        with atomic.naming_failed_writes(tmp_path / "out.json"):
            raise error
    assert raised.value is error


def test_atomic_open_names_its_target_when_the_disk_fills(tmp_path):
    script = textwrap.dedent(
        """
        import resource, signal, sys
        from pathlib import Path
        from oasst_data.atomic import atomic_open
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        try:
            with atomic_open(Path(sys.argv[1]) / "manifest.json") as handle:
                handle.write("x" * 5000)
        except OSError as error:
            print(error.filename)
        """
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == str(tmp_path / "manifest.json"), done.stderr
    assert list(tmp_path.iterdir()) == []  # the temp file is gone too


_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from oasst_data.errors import BadRecordError
    from oasst_data.quarantine import BadRecordHandler, OnBadRecord
    from oasst_data.atomic import atomic_open
    target = Path(sys.argv[1])
    if sys.argv[2] == "atomic_open":
        with atomic_open(target) as handle:
            handle.write("half")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    else:
        handler = BadRecordHandler(OnBadRecord.SKIP, target)
        handler(BadRecordError("in.jsonl", 1, "broken", b"{"))
        handler._handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _age(path: Path, seconds: float) -> None:
    then = os.stat(path).st_mtime - seconds
    os.utime(path, (then, then))


@pytest.mark.parametrize("writer", ["atomic_open", "quarantine"])
def test_the_next_writer_removes_a_temp_file_a_killed_run_left(tmp_path, writer):
    target = tmp_path / "out.jsonl"
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(target), writer], cwd=REPO, timeout=60)
    assert done.returncode == -9
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".out.jsonl.") and left.name.endswith(".tmp")
    # Removed at once (a helper's audit found a rerun right after a kill kept an 85 MB temp file:
    # only one a minute old was removed), however recent: its lock tells, not its age.
    if writer == "atomic_open":
        with atomic_open(target) as handle:
            handle.write("whole")
        assert target.read_text() == "whole"
    else:
        from oasst_data.quarantine import BadRecordHandler, OnBadRecord

        BadRecordHandler(OnBadRecord.SKIP, target).close()
        assert not target.exists()
    assert not left.exists()


def test_a_temp_file_removed_before_its_writer_locked_it_is_made_anew(tmp_path, monkeypatch):
    """The one moment a live writer's temp file is unlocked: between mkstemp and flock. Another
    writer of the same target may remove it then, taking it for a killed run's; the first finds
    its name gone and makes another."""
    target = tmp_path / "out.json"
    real_flock = atomic.fcntl.flock
    first: list[str] = []

    def flock(fd, operation):
        if not first and operation == atomic.fcntl.LOCK_EX:
            (made,) = tmp_path.iterdir()
            first.append(made.name)
            assert atomic.remove_abandoned_temps(target) == [made]  # the other writer, in that moment
        return real_flock(fd, operation)

    monkeypatch.setattr(atomic.fcntl, "flock", flock)
    temp = atomic.LockedTemp(target)
    assert first and temp.path.name != first[0] and temp.path.exists()
    assert atomic.remove_abandoned_temps(target) == []  # locked now: left alone
    temp.path.write_text("whole")
    temp.publish()
    assert target.read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_temp_file_in_use_is_left_alone_however_old(tmp_path):
    target = tmp_path / "out.json"
    temp = atomic.LockedTemp(target)
    _age(temp.path, 3600)
    assert atomic.remove_abandoned_temps(target) == []
    assert temp.path.exists()
    temp.release()  # the writer died: its lock is gone
    assert atomic.remove_abandoned_temps(target) == [temp.path]
    assert not temp.path.exists()
    # Other files beside it, and other targets' temp files, are never touched.
    other = tmp_path / ".out.json.d.tmp.keep"
    sibling = tmp_path / ".other.json.x1.tmp"
    for path in (other, sibling):
        path.write_text("x")
        _age(path, 3600)
    assert atomic.remove_abandoned_temps(target) == []
    assert other.exists() and sibling.exists()


def test_a_device_or_fifo_is_written_in_place_never_replaced(tmp_path):
    # As root, renaming a temp file over /dev/null turned it into a plain file.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    with atomic_open(fifo) as handle:
        handle.write("through the pipe\n")
    assert reader.communicate(timeout=30)[0] == b"through the pipe\n"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    with atomic_open(Path(os.devnull)) as handle:
        handle.write("gone")
    assert stat.S_ISCHR(os.lstat(os.devnull).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]  # no temp file beside it


def test_a_symlink_is_followed_its_file_replaced_and_the_link_kept(tmp_path):
    (tmp_path / "data").mkdir()
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "data" / "real.json")  # dangling: the file is made where it points
    for text in ("first", "second"):
        with atomic_open(link) as handle:
            handle.write(text)
        assert link.is_symlink() and (tmp_path / "data" / "real.json").read_text() == text


def test_an_old_build_that_cannot_be_deleted_is_a_warning_the_new_one_stays(tmp_path, monkeypatch, caplog):
    """It was an error naming no folder ('README.md: Permission denied'), with the new build already
    in place. (A file of another user in a read-only folder; root deletes anything, so the refusal
    is the kernel's answer played by os.unlink.)"""
    target = tmp_path / "out"
    (target / "data").mkdir(parents=True)
    (target / "data" / "old.parquet").write_text("old")
    (target / "manifest.json").write_text("old")
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if os.fspath(path).endswith("old.parquet"):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_unlink(path, *args, **kwargs)

    staging = StagingFolder(target).create()
    (staging.path / "manifest.json").write_text("new")
    monkeypatch.setattr(os, "unlink", unlink)
    with caplog.at_level("WARNING", logger="oasst_data"):
        staging.publish(overwrite=True)
    monkeypatch.undo()
    assert (target / "manifest.json").read_text() == "new"
    (left,) = [p for p in tmp_path.iterdir() if p.name != "out"]
    assert left.name.startswith(".out.staging-") and (left / "data" / "old.parquet").exists()
    message = caplog.records[-1].getMessage()
    assert f"the old one it replaced could not be deleted completely and is left at {left}" in message
    assert "old.parquet: Permission denied" in message


def test_dev_stdout_onto_a_file_is_written_through_and_appended(tmp_path):
    """`--out /dev/stdout >> out.jsonl` resolved /dev/stdout to out.jsonl and replaced the file:
    what was in it before was lost."""
    out = tmp_path / "out.jsonl"
    out.write_text("prior line\n")
    script = "from pathlib import Path\nfrom oasst_data.atomic import atomic_open\nwith atomic_open(Path('/dev/stdout')) as handle:\n    handle.write('new line\\n')\n"
    with open(out, "a") as stdout:
        done = subprocess.run([sys.executable, "-c", script], cwd=REPO, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert out.read_text() == "prior line\nnew line\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_a_stale_temp_this_user_cannot_delete_is_a_warning_not_a_failure(tmp_path, monkeypatch, caplog):
    target = tmp_path / "out.json"
    stale = tmp_path / ".out.json.abc123.tmp"
    stale.write_text("x")
    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        if self == stale:
            raise PermissionError(errno.EPERM, "Operation not permitted", str(self))  # another user's, in a sticky folder
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", unlink)
    with caplog.at_level("WARNING", logger="oasst_data"):
        with atomic_open(target) as handle:
            handle.write("written")
    assert target.read_text() == "written" and stale.exists()
    assert any("cannot remove" in r.getMessage() for r in caplog.records)


def test_a_fifo_named_like_a_temp_file_does_not_block_the_cleanup(tmp_path):
    target = tmp_path / "out.json"
    os.mkfifo(tmp_path / ".out.json.fifo.tmp")
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from oasst_data.atomic import remove_abandoned_temps; print(remove_abandoned_temps(sys.argv[1]))", str(target)],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_a_rerun_without_overwrite_after_a_kill_between_the_two_renames_is_refused_at_once(tmp_path):
    """Found by an audit (filesystems without renameat2's swap): DIR was missing, so the checks
    passed; the old build was put back only once the work was done, and the build then failed
    with "another build finished there". It is put back first, and the rerun refused at once."""
    from oasst_data.errors import OasstDataError
    from oasst_data.shards import BuildConfig, build_shards

    from .conftest import FIXTURE_TOKENIZER, FIXTURES

    target = tmp_path / "out"
    config = BuildConfig(inputs=[str(FIXTURES / "oasst" / "trees.jsonl")], tokenizer=str(FIXTURE_TOKENIZER))
    build_shards(config, target)
    _killed_while_publishing(target, "move-aside")
    assert not target.exists()
    with pytest.raises(OasstDataError, match="directory exists and is not empty"):
        build_shards(config, target)
    assert (target / "manifest.json").is_file() and not (target / "marker.txt").exists()  # the old build, whole
    assert _listing(tmp_path) == ["out"]


def test_everything_in_a_staging_folder_is_synced_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    """Found by an audit: the tokenizer's files (written by transformers) and the folders' entries
    were not fsynced before the rename, so a power loss could publish a build missing them."""
    staging = StagingFolder(tmp_path / "out").create()
    (staging.path / "tokenizer").mkdir()
    (staging.path / "tokenizer" / "tokenizer.json").write_text("{}")
    (staging.path / "data" / "train").mkdir(parents=True)
    (staging.path / "data" / "train" / "shard.parquet").write_bytes(b"PAR1")
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    where = str(staging.path)
    staging.publish()
    expected = {where, f"{where}/tokenizer", f"{where}/tokenizer/tokenizer.json", f"{where}/data", f"{where}/data/train", f"{where}/data/train/shard.parquet"}
    assert expected <= set(synced)  # all before the rename: fsync_dir(parent) then makes the rename durable


def test_fsync_of_a_read_only_handle_is_best_effort_on_windows_only(tmp_path, monkeypatch):
    """Found by a review: Windows flushes only handles open for writing (EBADF otherwise); every
    build would have failed at publish there."""
    (tmp_path / "file").write_text("x")

    def refuse(fd):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(atomic.os, "fsync", refuse)
    with pytest.raises(OSError):
        atomic.fsync_tree(tmp_path)
    monkeypatch.setattr(atomic, "_WINDOWS", True)
    atomic.fsync_tree(tmp_path)


class _Stop(BaseException):
    """Stands for the CLI's Terminated: a signal landing as a rename returns."""


@pytest.mark.parametrize("after", [".old", "target"], ids=["after-moving-the-old-aside", "after-moving-the-new-in"])
def test_a_signal_between_the_two_renames_of_a_swap_loses_no_build(tmp_path, monkeypatch, after):
    """Found by a review: where renameat2 cannot swap (NFS), a SIGTERM as `rename(target, aside)`
    returned left the target missing and the old build stranded aside, its lock deleted."""
    target = tmp_path / "shards"
    target.mkdir()
    (target / "old.txt").write_text("old")
    staging = atomic.StagingFolder(target).create()
    (staging.path / "new.txt").write_text("new")
    monkeypatch.setattr(atomic, "_exchange", lambda first, second: False)
    real_rename = os.rename

    def rename_then_stop(source, destination):
        real_rename(source, destination)
        if str(destination).endswith(".old") == (after == ".old"):
            raise _Stop

    monkeypatch.setattr(atomic.os, "rename", rename_then_stop)
    with pytest.raises(_Stop):
        staging.publish(overwrite=True)
    monkeypatch.setattr(atomic.os, "rename", real_rename)
    staging.discard()
    expected = "old.txt" if after == ".old" else "new.txt"
    assert sorted(p.name for p in target.iterdir()) == [expected]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]  # nothing aside, no staging, no lock
