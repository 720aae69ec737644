"""Atomic file and directory writes: temp name beside the target, fsync, rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import OasstDataError


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
