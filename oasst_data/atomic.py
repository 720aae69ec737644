"""Atomic file and directory writes: temp name beside the target, fsync, rename."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import OasstDataError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: folders are not locked, none is cleaned up
    fcntl = None

log = logging.getLogger(__name__)


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


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator:
    """Write to `path` atomically: readers see the old file or the complete new one, never half."""
    path = Path(path)
    if path.is_dir():
        raise OasstDataError(f"{path}: is a directory; give a file name to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise OasstDataError(f"{path}: cannot write here: {error.strerror or error}") from None
    os.fchmod(fd, 0o644)  # mkstemp creates 0600; outputs are meant to be shared
    os.close(fd)
    temp_path = Path(temp)
    try:
        with open(temp_path, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
        fsync_dir(path.parent)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def replace_directory(staging: Path, target: Path) -> None:
    """Move a finished staging directory into place, replacing `target` if it exists.

    The old directory is renamed aside first and removed only after the new one is in place,
    so at every moment `target` is either the complete old output or the complete new one.
    """
    if target.exists():
        aside = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, aside)
        os.replace(staging, target)
        fsync_dir(target.parent)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(staging, target)
        fsync_dir(target.parent)


# Inside a staging folder, held under an exclusive flock for as long as its build runs. The
# kernel drops the lock when the process dies, however it dies, so a later build can tell a
# folder left by a killed build (lock free) from one a running build still uses.
STAGING_LOCK = ".building.lock"


class StagingFolder:
    """A folder beside `target` that a build writes into, then publishes as `target` at once."""

    def __init__(self, target: Path):
        self.target = Path(target)
        self.path = self.target.with_name(f"{staging_prefix(self.target)}{os.getpid()}-{threading.get_ident()}")
        self._lock_fd: int | None = None

    def create(self) -> "StagingFolder":
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir()
        if fcntl is not None:
            self._lock_fd = os.open(self.path / STAGING_LOCK, os.O_CREAT | os.O_RDWR, 0o644)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        return self

    def publish(self) -> None:
        """Move the finished folder into place (see `replace_directory`), its lock file removed."""
        (self.path / STAGING_LOCK).unlink(missing_ok=True)
        replace_directory(self.path, self.target)
        self._release()

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def staging_prefix(target: Path) -> str:
    return f".{Path(target).name}.staging-"


def remove_abandoned_staging(target: Path) -> list[Path]:
    """Delete the staging folders of `target` that no running build holds (left by a build that
    was killed, e.g. by SIGKILL or the OOM killer); returns them. A folder without a lock file
    is left alone: it may be a running build's, between its publish steps, or not ours."""
    target = Path(target)
    removed: list[Path] = []
    if fcntl is None or not target.parent.is_dir():
        return removed
    for folder in sorted(target.parent.glob(f"{staging_prefix(target)}*")):
        lock = folder / STAGING_LOCK
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # a running build holds it
        else:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            log.warning("removed %s, left by a build of %s that did not finish (killed?)", folder, target)
        finally:
            os.close(fd)
    return removed
