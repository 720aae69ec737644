"""Scratch folders for spill files (`stats`), removed when done and, after a killed run, by the next.

SIGKILL (the OOM killer, a scheduler) skips `TemporaryDirectory`'s cleanup, and a spill folder
grows with the export. Beside each folder a lock file stays under an flock for as long as the
run lives; the kernel drops it when the process dies, so the next run can tell a folder left by
a killed run (lock free) from one in use.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .atomic import LOCK_SUFFIX, PROCESS_UMASK, _unlocked, fcntl

log = logging.getLogger(__name__)

STATS_SCRATCH_PREFIX = "oasst-stats-"


@contextlib.contextmanager
def scratch_folder(prefix: str) -> Iterator[Path]:
    """A new folder in the temp directory ($TMPDIR), removed on exit; folders of `prefix` that
    killed runs left there are removed first."""
    parent = Path(tempfile.gettempdir())
    remove_abandoned_scratch(parent, prefix)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    lock_fd = _lock_beside(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if lock_fd is not None:
            Path(str(folder) + LOCK_SUFFIX).unlink(missing_ok=True)  # still locked while unlinked
            os.close(lock_fd)


def _lock_beside(folder: Path) -> int | None:
    """Lock `folder`'s lock file, made under another name, locked, then renamed into place: it
    never shows unlocked, so no other run can take the folder for a killed run's meanwhile."""
    if fcntl is None:  # pragma: no cover - not POSIX: nothing is cleaned up after a kill
        return None
    fd, temp = tempfile.mkstemp(prefix=f".{folder.name}.", dir=folder.parent)
    try:
        os.fchmod(fd, 0o666 & ~PROCESS_UMASK)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(temp, str(folder) + LOCK_SUFFIX)
    except BaseException:
        os.close(fd)
        Path(temp).unlink(missing_ok=True)
        raise
    return fd


def remove_abandoned_scratch(parent: Path, prefix: str) -> list[Path]:
    """Remove the scratch folders of `prefix` in `parent` whose lock no live run holds; returns
    them. A folder without a lock file (another program's, or still being made) is left alone."""
    removed: list[Path] = []
    if fcntl is None:  # pragma: no cover
        return removed
    locks = sorted(Path(parent).glob(glob.escape(prefix) + "*" + LOCK_SUFFIX))
    for lock, _ in _unlocked(locks, os.O_RDONLY):
        folder = Path(str(lock)[: -len(LOCK_SUFFIX)])
        try:
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder)
                removed.append(folder)
                log.warning("removed %s, left by a run that did not finish (killed?)", folder)
            lock.unlink(missing_ok=True)
        except OSError as error:  # another user's, in a shared /tmp: not this run's to clean
            log.debug("cannot remove %s: %s", folder, error)
    return removed
