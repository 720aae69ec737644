"""Stream the elements of a top-level JSON array in bounded memory.

A 20 MB Alpaca array need not sit in memory at once; each element is decoded from a sliding
buffer with its starting line number, so errors can name the line.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from pathlib import Path

from ..errors import BadRecordError
from .files import STREAM_ERRORS, open_binary

_READ = 1 << 20
_WS = frozenset(" \t\r\n")
_MAX_ELEMENT = 256 << 20


class _ArrayScanner:
    def __init__(self, handle, name: str):
        self.handle = handle
        self.name = name
        self.utf8 = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.pos = 0
        self.line = 1
        self.eof = False
        self.decoder = json.JSONDecoder()
        # Why the input ends early (invalid UTF-8, broken compressed stream): raised once the
        # elements before the break have been read, instead of "array not closed".
        self.failure: BadRecordError | None = None

    def refill(self) -> None:
        if self.eof:
            return
        buffered = self.utf8.getstate()[0]
        try:
            chunk = self.handle.read(_READ)
        except STREAM_ERRORS as error:
            self._stop(self.text.count("\n", self.pos), f"cannot read further: {error}")
            return
        try:
            decoded = self.utf8.decode(chunk, final=not chunk)
        except UnicodeDecodeError as error:
            # Keep the valid text before the bad byte; the error names the bad byte's line.
            decoded = (buffered + chunk)[: error.start].decode("utf-8", errors="replace")
            newlines = self.text.count("\n", self.pos) + decoded.count("\n")
            self.text = self.text[self.pos :] + decoded
            self.pos = 0
            self._stop(newlines, f"invalid UTF-8 ({error.reason})")
            return
        if not chunk:
            self.eof = True
        self.text = self.text[self.pos :] + decoded
        self.pos = 0

    def _stop(self, newlines_ahead: int, reason: str) -> None:
        self.failure = BadRecordError(self.name, self.line + newlines_ahead, reason)
        self.eof = True

    def error(self, line: int, reason: str) -> BadRecordError:
        """The error to raise at the end of the readable input: the early stop's, if any."""
        return self.failure or BadRecordError(self.name, line, reason)

    def skip_ws(self) -> None:
        while True:
            text, pos = self.text, self.pos
            while pos < len(text) and text[pos] in _WS:
                if text[pos] == "\n":
                    self.line += 1
                pos += 1
            self.pos = pos
            if pos < len(text) or self.eof:
                return
            self.refill()

    def peek(self) -> str:
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def value(self) -> tuple[int, bytes, object]:
        while True:
            try:
                value, end = self.decoder.raw_decode(self.text, self.pos)
                # A value ending at the buffer's edge may be cut short (a number): read more.
                if end < len(self.text) or self.eof:
                    break
            except json.JSONDecodeError as error:
                if self.eof:
                    raise self.error(self.line, f"malformed JSON: {error.msg}") from None
                if len(self.text) - self.pos > _MAX_ELEMENT:
                    raise BadRecordError(self.name, self.line, "malformed JSON: element too large") from None
            except RecursionError:
                raise BadRecordError(self.name, self.line, "nesting deeper than the JSON parser allows") from None
            self.refill()
        raw = self.text[self.pos : end]
        start = self.line
        self.line += raw.count("\n")
        self.pos = end
        return start, raw.encode("utf-8"), value


def iter_json_array(path: Path, display: str | None = None) -> Iterator[tuple[int, bytes, object]]:
    """Yield (line, raw bytes, value) for each element of a JSON array file.

    Malformed JSON raises BadRecordError with the line where the failing element starts;
    the array cannot be resynchronised after a syntax error, so reading stops there.
    """
    name = display or str(path)
    with open_binary(path) as handle:
        scanner = _ArrayScanner(handle, name)
        if scanner.peek() != "[":
            raise scanner.error(scanner.line, "malformed JSON: expected a JSON array '['")
        scanner.pos += 1
        if scanner.peek() == "]":
            return
        while True:
            if scanner.peek() == "":
                raise scanner.error(scanner.line, "malformed JSON: array not closed (truncated file?)")
            yield scanner.value()
            separator = scanner.peek()
            if separator == "]":
                return
            if separator != ",":
                found = repr(separator) if separator else "end of file"
                raise scanner.error(scanner.line, f"malformed JSON: expected ',' or ']' after an element, got {found}")
            scanner.pos += 1


def starts_with_array(path: Path) -> bool:
    """True when the file's first non-blank character is '[' (a JSON array, not JSON Lines).

    An unreadable start gives False: the line reader then reports the broken stream as a bad record.
    """
    try:
        with open_binary(path) as handle:
            head = handle.read(4096)
    except STREAM_ERRORS:
        return False
    return head.lstrip()[:1] == b"["
