"""Errors the package raises on purpose; the CLI prints them as one line, never a traceback."""

from __future__ import annotations


class OasstDataError(Exception):
    """Base class: a problem the user can fix (bad input, bad option, missing file)."""


class BadRecordError(OasstDataError):
    """One input record is malformed; names the file, the line and what is wrong."""

    def __init__(self, source: str, line: int | None, reason: str, raw: bytes | None = None):
        self.source = source
        self.line = line
        self.reason = reason
        self.raw = raw
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {reason}")


class CorruptStreamError(BadRecordError):
    """A compressed stream found corrupt after records were already read from the same compressed
    unit (gzip member, zstd frame): those records may be damaged too, and they cannot be taken
    back, so this is raised under --on-bad-record skip as well."""


class ConfigError(OasstDataError):
    """An option or configuration value is invalid."""
