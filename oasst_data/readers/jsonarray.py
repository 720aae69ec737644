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
from .files import open_binary

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

    def refill(self) -> None:
        chunk = self.handle.read(_READ)
        try:
            decoded = self.utf8.decode(chunk, final=not chunk)
        except UnicodeDecodeError as error:
            raise BadRecordError(self.name, self.line, f"invalid UTF-8 ({error.reason})") from None
        if not chunk:
            self.eof = True
        self.text = self.text[self.pos :] + decoded
        self.pos = 0

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
                    raise BadRecordError(self.name, self.line, f"malformed JSON: {error.msg}") from None
                if len(self.text) - self.pos > _MAX_ELEMENT:
                    raise BadRecordError(self.name, self.line, "malformed JSON: element too large") from None
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
            raise BadRecordError(name, scanner.line, "malformed JSON: expected a JSON array '['")
        scanner.pos += 1
        if scanner.peek() == "]":
            return
        while True:
            if scanner.peek() == "":
                raise BadRecordError(name, scanner.line, "malformed JSON: array not closed (truncated file?)")
            yield scanner.value()
            separator = scanner.peek()
            if separator == "]":
                return
            if separator != ",":
                found = repr(separator) if separator else "end of file"
                raise BadRecordError(name, scanner.line, f"malformed JSON: expected ',' or ']' after an element, got {found}")
            scanner.pos += 1


def starts_with_array(path: Path) -> bool:
    """True when the file's first non-blank character is '[' (a JSON array, not JSON Lines)."""
    with open_binary(path) as handle:
        head = handle.read(4096)
    return head.lstrip()[:1] == b"["
