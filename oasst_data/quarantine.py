"""What happens to a bad record: stop the run (strict, the default) or set it aside and count it."""

from __future__ import annotations

import base64
import contextlib
import enum
import json
import logging
import re
import os
from collections import Counter
from pathlib import Path

from .atomic import LockedTemp, naming_failed_writes, remove_abandoned_temps, write_target
from .errors import BadRecordError, CorruptStreamError

log = logging.getLogger(__name__)


class OnBadRecord(str, enum.Enum):
    FAIL = "fail"
    SKIP = "skip"


class BadRecordHandler:
    """Raises on the first bad record, or writes each one raw to a quarantine JSONL and counts it.

    Quarantine lines: {"source", "line", "reason", "raw"}: "raw" is the line as text without its
    line ending (one LF or CRLF: any other CR stays); when the bytes are not valid UTF-8, "raw_base64" holds them exactly, line ending
    included, so they can be restored. The file is written to a temp name and renamed on `close()`.
    """

    def __init__(self, policy: OnBadRecord = OnBadRecord.FAIL, quarantine_path: Path | None = None, publish_on_close: bool = True):
        self.policy = OnBadRecord(policy)
        self.quarantine_path = quarantine_path
        # False: a finished run's file waits for `publish()`, which a caller makes after its own
        # outputs are in place, so a run that fails later leaves the earlier quarantine as it was.
        self.publish_on_close = publish_on_close
        self.count = 0
        self.by_source: Counter[str] = Counter()
        self._handle = None
        self._temp: LockedTemp | None = None
        self._finished = False
        # The file written: a symlink's file; a device or FIFO (--quarantine /dev/null) in place.
        self._target, self._in_place = write_target(quarantine_path) if quarantine_path is not None else (None, False)
        if self.policy is OnBadRecord.SKIP and self._target is not None and not self._in_place:
            remove_abandoned_temps(self._target)

    def __call__(self, error: BadRecordError) -> None:
        if self.policy is OnBadRecord.FAIL or isinstance(error, CorruptStreamError):
            raise error
        self.count += 1
        self.by_source[error.source] += 1
        log.debug("quarantined %s", error)
        if self.quarantine_path is None:
            return
        if self._handle is None:
            if self._in_place:
                self._handle = open(self._target, "w", encoding="utf-8")
            else:
                self._target.parent.mkdir(parents=True, exist_ok=True)
                # A name of its own (two runs may share a --quarantine path), hidden until renamed.
                self._temp = LockedTemp(self._target)
                self._handle = open(self._temp.path, "w", encoding="utf-8")
        entry: dict = {"source": error.source, "line": error.line, "reason": error.reason}
        data = error.raw if error.raw is not None else b""
        try:
            entry["raw"] = _without_line_end(data).decode("utf-8")
        except UnicodeDecodeError:
            entry["raw"] = _without_line_end(data).decode("utf-8", errors="replace")
            entry["raw_base64"] = base64.b64encode(data).decode("ascii")
        with naming_failed_writes(self.quarantine_path):
            self._handle.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def close(self, finished: bool = True) -> None:
        """End the run: a run that `finished` has its file published (now, or at `publish()` when
        `publish_on_close` is False). A run that did not finish (interrupted, failed) discards its
        partial file: its outputs were not written either, and the earlier quarantine still
        belongs to the earlier outputs."""
        if not finished:
            self.discard()
            return
        if self._handle is not None:
            with naming_failed_writes(self.quarantine_path):
                self._handle.flush()
                if not self._in_place:  # a pipe cannot fsync
                    os.fsync(self._handle.fileno())
                self._handle.close()
            self._handle = None
        self._finished = True
        if self.publish_on_close:
            self.publish()

    def publish(self) -> None:
        """Move a finished run's file into place. A run that skipped nothing removes the file an
        earlier run left at its path, so the file always tells of the last run."""
        if not self._finished:
            return
        self._finished = False
        if self._temp is not None:
            self._temp.publish()
            self._temp = None
        elif not self.count and self._target is not None and not self._in_place:  # a strict run that finished skipped none too
            if not self._target.is_file():
                return
            if is_quarantine_file(self._target):
                self._target.unlink()
                log.info("removed %s, left by an earlier run: this one skipped no record", self.quarantine_path)
            else:
                log.warning("left %s as it is: it is no quarantine file of an earlier run (this one skipped no record)", self.quarantine_path)

    def discard(self) -> None:
        """Drop this run's file, written or waiting (a file an earlier run left is kept)."""
        self._finished = False
        if self._handle is not None:
            handle, self._handle = self._handle, None
            with contextlib.suppress(OSError):  # a full disk fails the flush: the file goes anyway
                handle.close()
        if self._temp is not None:
            self._temp.discard()
            self._temp = None
            kept = f" (the file an earlier run left at {self.quarantine_path} is kept)" if self._target.is_file() else ""
            log.info("the run did not finish: its quarantine was discarded%s", kept)


# How every quarantine line starts (json.dumps of {"source", "line", "reason", ...} in that order).
_QUARANTINE_LINE_START = re.compile(rb'\{"source": "(?:[^"\\]|\\.)*", "line": (?:\d+|null), "reason": "')


def is_quarantine_file(path: Path) -> bool:
    """Whether `path` starts with a quarantine line (so a run may delete it as its own). Only the
    start is read: a first record may be megabytes long."""
    try:
        with open(path, "rb") as handle:
            start = handle.read(1 << 16)
    except OSError:
        return False
    return _QUARANTINE_LINE_START.match(start) is not None


def _without_line_end(raw: bytes) -> bytes:
    """The line without its one line ending (LF or CRLF): any other CR is part of the bad record."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
    return raw
