"""Atomic file and directory writes: temp name beside the target, fsync, rename."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import glob
import logging
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OasstDataError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: folders are not locked, none is cleaned up
    fcntl = None

log = logging.getLogger(__name__)


def _read_umask() -> int:
    # os.umask can only be read by setting it: done once, at import, before any thread writes.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


PROCESS_UMASK = _read_umask()


# What only writing raises, without naming the file (write(2) is given no path): a full disk, a
# full quota, a file size limit.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def naming_failed_writes(path: Path) -> Iterator[None]:
    """Give a disk-full error raised inside the name of the file being written: on its own it
    reads "No space left on device" and names nothing (the CLI prints an error's filename)."""
    try:
        yield
    except OSError as error:
        if error.filename is None and error.errno in _WRITE_ERRNOS:
            raise OSError(error.errno, os.strerror(error.errno), str(path)) from error
        raise


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


_WINDOWS = os.name == "nt"


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder under `folder` (itself included), so that after a power loss
    a folder renamed into place holds what it held when renamed: files written by other
    libraries (a tokenizer's save_pretrained) are not synced by them."""
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            except OSError:
                if not _WINDOWS:
                    raise
                # Windows flushes only handles open for writing (EBADF here): best effort, as fsync_dir.
            finally:
                os.close(fd)
        fsync_dir(Path(root))


class LockedTemp:
    """A hidden temp file beside `target` (unique name), under an flock for as long as it is open.

    The kernel drops the lock when the process dies, however it dies, so a later writer of
    `target` can tell a temp file left by a killed run (`remove_abandoned_temps`) from one in
    use. The lock sits on a descriptor of its own: closing the writing handle keeps it.
    """

    def __init__(self, target: Path):
        self.target = Path(target)
        for _ in range(_CREATE_TRIES):
            fd, temp = tempfile.mkstemp(prefix=temp_prefix(self.target), suffix=TEMP_SUFFIX, dir=self.target.parent)
            os.fchmod(fd, 0o666 & ~PROCESS_UMASK)  # mkstemp creates 0600: give the mode open() would, as other outputs get
            if fcntl is None:
                break
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Between mkstemp and flock the file is unlocked, and another writer of `target` may
            # have taken it for one a killed run left and removed it: then make another.
            if _names(temp, fd):
                break
            os.close(fd)
        else:  # pragma: no cover - would take writers starting in a tight loop beside this one
            raise OSError(errno.EEXIST, "could not keep a temp file beside it", str(self.target))
        self._lock_fd: int | None = fd
        self.path = Path(temp)

    def publish(self) -> None:
        """Rename the finished temp file to `target`, then let the lock go."""
        os.replace(self.path, self.target)
        fsync_dir(self.target.parent)
        self.release()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.release()

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


TEMP_SUFFIX = ".tmp"
_CREATE_TRIES = 100


def _names(path: str | Path, fd: int) -> bool:
    """True when `path` is (still) the file open as `fd`."""
    try:
        named = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def temp_prefix(target: Path) -> str:
    return f".{Path(target).name}."


def _unlocked(paths: list[Path], flags: int) -> Iterator[tuple[Path, int]]:
    """Each of `paths` whose flock no live process holds, with a descriptor that holds it now
    (closed when the caller moves on). A file that cannot be opened is skipped."""
    for path in paths:
        try:
            fd = os.open(path, flags | os.O_NONBLOCK)  # a FIFO with that name must not block the run
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a running process holds it
            yield path, fd
        finally:
            os.close(fd)


def remove_abandoned_temps(target: Path) -> list[Path]:
    """Delete the temp files of `target` left by runs that were killed (their lock is free);
    returns them. Temp files of running writers are left alone: one that has not locked its
    file yet finds it gone once it has, and makes another (`LockedTemp`)."""
    target = Path(target)
    removed: list[Path] = []
    if fcntl is None or not target.parent.is_dir():
        return removed
    temps = sorted(target.parent.glob(glob.escape(temp_prefix(target)) + "*" + TEMP_SUFFIX))
    for temp, fd in _unlocked(temps, os.O_RDONLY):
        if not stat.S_ISREG(os.fstat(fd).st_mode) or not _names(temp, fd):
            continue
        try:
            temp.unlink(missing_ok=True)
        except OSError as error:  # another user's, in a shared folder: not this run's to clean
            log.warning("cannot remove %s, left by a run that did not finish writing %s: %s", temp, target, error.strerror or error)
            continue
        removed.append(temp)
        log.warning("removed %s, left by a run that did not finish writing %s (killed?)", temp, target)
    return removed


def write_target(path: Path) -> tuple[Path, bool]:
    """Where writing the file `path` goes, and whether in place.

    A device or a FIFO (`/dev/null`, `/dev/stdout`, a named pipe) is written in place: renaming
    a temp file over it would replace it, and as root that turns /dev/null into a plain file.
    A symlink to a file (or to nothing yet) is followed: the file it names is replaced, the
    link stays. Anything else is the path itself, replaced atomically.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # follows symlinks: /dev/stdout is one, to /proc/self/fd/1
    except OSError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        return path, True
    if mode is not None and _is_descriptor_path(path):
        return path, True  # /dev/stdout while stdout is a file (`> out.jsonl`): write through it
    if path.is_symlink():
        return Path(os.path.realpath(path)), False
    return path, False


def _is_descriptor_path(path: Path) -> bool:
    """A name of an open descriptor (/dev/stdout, /dev/fd/N, /proc/self/fd/N): replacing what it
    resolves to would replace the file the shell opened, and lose what `>>` appended to."""
    text = os.path.abspath(path)
    return text in ("/dev/stdout", "/dev/stderr") or text.startswith(("/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/"))


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator:
    """Write to `path` atomically: readers see the old file or the complete new one, never half.
    Temp files a killed writer of `path` left are removed first. A device or FIFO is written in
    place, a symlink's file replaced (`write_target`)."""
    path = Path(path)
    if path.is_dir():
        raise OasstDataError(f"{path}: is a directory; give a file name to write")
    path, in_place = write_target(path)
    if in_place:
        # Appended: a device or pipe does not mind, and a file behind /dev/stdout keeps what the
        # shell's `>>` left in it ("w" would truncate it through the new descriptor).
        with naming_failed_writes(path), open(path, mode.replace("w", "a"), encoding=None if "b" in mode else encoding) as handle:
            yield handle
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned_temps(path)
        temp = LockedTemp(path)
    except OSError as error:
        raise OasstDataError(f"{path}: cannot write here: {error.strerror or error}") from None
    try:
        with naming_failed_writes(path), open(temp.path, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        temp.publish()
    except BaseException:
        temp.discard()
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


class StagingFolder:
    """A folder beside `target` that a build writes into, then publishes as `target` at once.

    Beside it, a lock file stays under an exclusive flock for as long as the build runs; the
    kernel drops the lock when the process dies, however it dies, so a later build can tell a
    folder left by a killed build (lock free: `remove_abandoned_staging`) from one in use.
    """

    def __init__(self, target: Path):
        self.target = Path(target)
        if not self.target.name or self.target.name in (".", ".."):
            raise OasstDataError(f"{target}: give the output folder by a name of its own, not as {target!s}")
        self.path: Path | None = None
        self._lock_fd: int | None = None

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + LOCK_SUFFIX)

    def create(self) -> "StagingFolder":
        # A unique name (not only the pid: pids repeat, in containers always): mkdtemp makes it.
        self.path = Path(tempfile.mkdtemp(prefix=staging_prefix(self.target), dir=self.target.parent))
        os.chmod(self.path, 0o777 & ~PROCESS_UMASK)  # mkdtemp creates 0700; the build is published as is
        if fcntl is not None:
            self._lock_fd = os.open(self.lock_path, os.O_CREAT | os.O_RDWR, 0o666 & ~PROCESS_UMASK)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        return self

    def publish(self, overwrite: bool = False) -> None:
        """Move the finished folder into place as `target`.

        A new target, or an empty folder, is one rename. With `overwrite`, an existing target
        is swapped with the staging folder in one step (Linux renameat2 RENAME_EXCHANGE), so
        `target` is never missing; the old build, now under the staging name, is then deleted.
        Where the filesystem cannot swap, the old build is moved aside (under this lock) first.
        Without `overwrite`, a build that landed at `target` meanwhile is never replaced.
        """
        target = self.target
        fsync_tree(self.path)
        try:
            os.rename(self.path, target)  # onto nothing, or an empty folder
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            if not overwrite:
                raise OasstDataError(
                    f"{target}: another build finished there while this one ran; pass --overwrite to replace it"
                ) from None
            self._swap_into_place()
        fsync_dir(target.parent)
        self._release()

    def _swap_into_place(self) -> None:
        target, staging = self.target, self.path
        if _exchange(staging, target):
            _remove_replaced(staging, target)  # the old build, now under the staging name
            return
        aside = staging.with_name(staging.name + OLD_SUFFIX)
        try:
            os.rename(target, aside)
            os.rename(staging, target)
        except BaseException:
            # What is on disk decides, not how far the code got: a signal (SIGTERM) may land
            # right after either rename returned (found by a review: the old build stranded aside).
            if aside.is_dir():
                if target.exists():  # both renames done: the new build is in place
                    _remove_replaced(aside, target)
                else:
                    os.rename(aside, target)  # put the old build back
            raise
        fsync_dir(target.parent)
        _remove_replaced(aside, target)

    def discard(self) -> None:
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            # An old build still aside (its restore failed) keeps the lock file, unlocked: the next
            # build of the target finds it and puts that build back (remove_abandoned_staging).
            if self.path is None or not self.path.with_name(self.path.name + OLD_SUFFIX).exists():
                self.lock_path.unlink(missing_ok=True)  # still locked while unlinked: no one can take it
            os.close(self._lock_fd)
            self._lock_fd = None


def _remove_replaced(old: Path, target: Path) -> None:
    """Delete the replaced build. The new one is in place whatever happens here, so a file that
    cannot be deleted (a read-only folder of another user) is a warning naming what is left."""
    failures: list[str] = []

    def note(function, path, error) -> None:
        error = error[1] if isinstance(error, tuple) else error  # onerror gets exc_info, onexc the exception
        failures.append(f"{path}: {error.strerror if isinstance(error, OSError) and error.strerror else error}")

    if sys.version_info >= (3, 12):
        shutil.rmtree(old, onexc=note)
    else:
        shutil.rmtree(old, onerror=note)
    if failures:
        log.warning(
            "%s is the new build; the old one it replaced could not be deleted completely and is left at %s "
            "(%s%s): delete it by hand", target, old, failures[0], f", +{len(failures) - 1} more" if len(failures) > 1 else "",
        )


LOCK_SUFFIX = ".lock"
OLD_SUFFIX = ".old"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not glibc >= 2.28 / not Linux
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
        return False  # a filesystem without the flag (or no such call): swap in two steps
    raise OSError(code, os.strerror(code), str(second))


def staging_prefix(target: Path) -> str:
    return f".{Path(target).name}.staging-"


def remove_abandoned_staging(target: Path) -> list[Path]:
    """Clean up after builds of `target` that were killed (SIGKILL, the OOM killer): their lock is
    free. Their staging folder is deleted; an old build one had moved aside goes back to
    `target` if `target` is missing, else is deleted. Returns the staging folders removed. A folder
    without a lock file is left alone (not ours, or from a version without locks)."""
    target = Path(target)
    removed: list[Path] = []
    if fcntl is None or not target.parent.is_dir():
        return removed
    locks = sorted(target.parent.glob(glob.escape(staging_prefix(target)) + "*" + LOCK_SUFFIX))
    for lock, _ in _unlocked(locks, os.O_RDWR):
        folder = lock.with_name(lock.name[: -len(LOCK_SUFFIX)])
        aside = folder.with_name(folder.name + OLD_SUFFIX)
        if aside.is_dir() and not target.exists():
            os.rename(aside, target)
            log.warning("restored %s from %s: a build was killed while replacing it", target, aside)
        shutil.rmtree(aside, ignore_errors=True)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            log.warning("removed %s, left by a build of %s that did not finish (killed?)", folder, target)
        lock.unlink(missing_ok=True)
    return removed
