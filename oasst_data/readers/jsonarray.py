"""Stream the elements of a top-level JSON array in bounded memory.

A 20 MB Alpaca array need not sit in memory at once; each element is decoded from a sliding
buffer with its starting line number, so errors can name the line.
"""

from __future__ import annotations

import codecs
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from ..errors import BadRecordError, CorruptStreamError
from . import deep_json
from .files import STREAM_ERRORS, CorruptCompressedUnit, _DecompressingRaw, open_binary

_READ = 1 << 20
_WS = frozenset(" \t\r\n")
_MAX_ELEMENT = 256 << 20
# How much of the text after the closing ']' a bad record carries to the quarantine: enough to
# see what it is (a second array, a log line), bounded so the reader stays in constant memory.
_MAX_TRAILING_RAW = 1 << 20
_BOM = "\ufeff"
# Digits int() converts (sys.set_int_max_str_digits; 0 means no limit), less the sign.
_INT_DIGITS_LIMIT = (getattr(sys, "get_int_max_str_digits", lambda: 0)() or sys.maxsize) - 1  # 3.10.7+


@dataclass(frozen=True, slots=True)
class NonStandardElement:
    """An element that holds NaN, Infinity or -Infinity: Python's json reads (and by default
    writes) them, JSON does not, and the JSON Lines reader refuses such a line. Given in place of
    the value, so the element is one bad record and the array reads on past it."""

    constant: str

    @property
    def reason(self) -> str:
        return f"malformed JSON: {self.constant} is not JSON; write null or a string"


@dataclass(frozen=True, slots=True)
class TooDeepElement:
    """An element nested deeper than the JSON parser goes, stepped over by its brackets: one bad
    record, as such a line is in JSON Lines, and the array reads on past it."""

    reason: str = "nesting deeper than the JSON parser allows"


class _ArrayScanner:
    def __init__(self, handle, name: str):
        self.handle = handle
        self.name = name
        self.utf8 = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.pos = 0
        self.line = 1
        self.eof = False
        # A UTF-8 byte order mark at byte 0 is dropped, as Python's "utf-8-sig" does: editors on
        # Windows write one, and it is no JSON. Anywhere else it stays (and is malformed JSON).
        self.at_start = True
        self.decoder = json.JSONDecoder(parse_int=_parse_int, parse_constant=self._note_constant)
        self.constants: list[str] = []  # the non-standard constants of the element being decoded
        # Why the input ends early (invalid UTF-8, broken compressed stream): raised once the
        # elements before the break have been read, instead of "array not closed".
        self.failure: BadRecordError | None = None
        # After invalid UTF-8: the bytes from the bad one on (up to a chunk), kept for the quarantine.
        self.undecoded = b""

    def refill(self) -> None:
        if self.eof:
            return
        buffered = self.utf8.getstate()[0]
        chunk, broken = self._read()
        if broken is not None and not chunk:
            self._stop_at_break(self.text.count("\n", self.pos), broken)
            return
        try:
            decoded = self.utf8.decode(chunk, final=not chunk)
        except UnicodeDecodeError as error:
            # Keep the valid text before the bad byte; the error names the bad byte's line.
            decoded = self._drop_bom((buffered + chunk)[: error.start].decode("utf-8", errors="replace"))
            self.undecoded = (buffered + chunk)[error.start :]
            newlines = self.text.count("\n", self.pos) + decoded.count("\n")
            self.text = self.text[self.pos :] + decoded
            self.pos = 0
            self._stop(newlines, f"invalid UTF-8 ({error.reason})")
            return
        if not chunk:
            self.eof = True
        decoded = self._drop_bom(decoded)
        self.text = self.text[self.pos :] + decoded
        self.pos = 0
        if broken is not None:  # the text before the break is kept; the error names the break's line
            self._stop_at_break(self.text.count("\n"), broken)

    def _read(self) -> tuple[bytes, Exception | None]:
        """Up to _READ bytes, and the stream error that stopped the read early, if any.

        A single read(_READ) that meets a broken stream (a truncated gzip or zstd) raises and
        drops the bytes it had already decompressed; read1 pieces keep them, so the elements
        before the break are still read, as the line reader does.
        """
        parts: list[bytes] = []
        size = 0
        try:
            while size < _READ:
                part = self.handle.read1(_READ - size)
                if not part:
                    break
                parts.append(part)
                size += len(part)
        except STREAM_ERRORS as error:
            return b"".join(parts), error
        return b"".join(parts), None

    def _drop_bom(self, decoded: str) -> str:
        if self.at_start and decoded:
            self.at_start = False
            return decoded.removeprefix(_BOM)
        return decoded

    def _stop(self, newlines_ahead: int, reason: str, error_type: type[BadRecordError] = BadRecordError) -> None:
        self.failure = error_type(self.name, self.line + newlines_ahead, reason)
        self.eof = True

    def _stop_at_break(self, newlines_ahead: int, broken: Exception) -> None:
        if isinstance(broken, CorruptCompressedUnit):  # elements already read may be damaged: not skippable
            self._stop(newlines_ahead, str(broken), CorruptStreamError)
        else:
            self._stop(newlines_ahead, f"cannot read further: {broken}")

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

    def _note_constant(self, name: str) -> float:
        self.constants.append(name)
        return float(name)

    def value(self) -> tuple[int, bytes, object]:
        while True:
            self.constants.clear()
            try:
                value, end = self.decoder.raw_decode(self.text, self.pos)
                # A value ending at the buffer's edge may be cut short (a number): read more.
                if end < len(self.text) or self.eof:
                    break
            except json.JSONDecodeError as error:
                if self.eof:
                    raise self.broken(f"malformed JSON: {error.msg}", self.failure) from None
                if not _may_need_more(error, self.text):
                    # A syntax error inside the buffer: reading on would not mend it (and would
                    # pull the rest of the file into memory, up to _MAX_ELEMENT).
                    raise self.broken(f"malformed JSON: {error.msg}") from None
                if len(self.text) - self.pos > _MAX_ELEMENT:
                    raise BadRecordError(self.name, self.line, "malformed JSON: element too large") from None
            except RecursionError:
                end = self._deep_element_end()
                value = TooDeepElement()
                self.constants.clear()  # whatever the partial decode met: the depth is the reason
                break
            except ValueError as error:  # an integer past Python's 4,300-digit limit
                raise self.broken(f"malformed JSON: {str(error).splitlines()[0]}") from None
            self.refill()
        raw = self.text[self.pos : end]
        start = self.line
        self.line += raw.count("\n")
        self.pos = end
        if self.constants:
            value = NonStandardElement(self.constants[0])
        return start, raw.encode("utf-8"), value

    def _deep_element_end(self) -> int:
        """The end of an element too deep to decode, read on (doubling the text held) until found."""
        while True:
            try:
                end = deep_json.value_end(self.text, self.pos)
            except deep_json.DeepJSONError as error:  # its offset is into the sliding buffer: made the element's
                raise self.broken(f"malformed JSON: {error.message} (character {error.offset - self.pos} of the element)") from None
            if end is not None:
                return end
            if self.eof:
                raise self.broken("malformed JSON: array not closed (truncated file?)", self.failure)
            held = len(self.text) - self.pos
            if held > _MAX_ELEMENT:
                raise BadRecordError(self.name, self.line, "malformed JSON: element too large")
            while not self.eof and len(self.text) - self.pos < 2 * held:
                self.refill()

    def broken(self, reason: str, cause: BadRecordError | None = None) -> BadRecordError:
        """The error for an element that cannot be read, with the rest of the input as raw.

        The array cannot be followed past a syntax error, so nothing after it is read: the bad
        record carries that rest (up to _MAX_TRAILING_RAW characters) for the quarantine, and
        its reason says so. A break in the input itself (`cause`: invalid UTF-8, a broken
        stream) keeps its own reason and line; raw then holds what was read up to the break
        and, after invalid UTF-8, the undecodable bytes that followed in the same chunk."""
        if isinstance(cause, CorruptStreamError):
            return cause  # raised under either policy: no quarantine entry needs the rest
        at_end = self.eof and cause is None  # the file ends inside the element (truncated)
        line = cause.line if cause is not None else self.line
        reason = cause.reason if cause is not None else reason
        start = self.pos
        while len(self.text) - start < _MAX_TRAILING_RAW and not self.eof:
            self.refill()
            start = self.pos  # refill keeps the text from pos on, moved to 0
        rest = self.text[start : start + _MAX_TRAILING_RAW]
        self._check_the_rest_of_the_stream(line)
        if not at_end:
            reason += f"; the array cannot be followed past it: nothing after line {line} is read"
            if len(self.text) - start > _MAX_TRAILING_RAW or not self.eof:
                reason += f" (raw holds the next {_MAX_TRAILING_RAW} characters)"
        return BadRecordError(self.name, line, reason, rest.encode("utf-8") + self.undecoded)

    def _check_the_rest_of_the_stream(self, line: int) -> None:
        """Before reading stops at a syntax error in a compressed file: decompress the rest, so
        that a corrupt gzip member or zstd frame is found. Its checksum comes at its end, and a
        changed byte that still decodes as text may be what broke the JSON, after elements of the
        same unit were already given out: then CorruptStreamError, as the line reader raises."""
        if isinstance(self.failure, CorruptStreamError):
            raise self.failure  # met while reading on for the quarantine's raw text
        if self.eof or not isinstance(getattr(self.handle, "raw", None), _DecompressingRaw):
            return
        try:
            while self.handle.read1(_READ):
                pass
        except CorruptCompressedUnit as error:
            raise CorruptStreamError(self.name, line, str(error)) from None
        except STREAM_ERRORS:
            pass  # a break in a unit that gave nothing, or a truncation: what was read stands

    def trailing(self) -> BadRecordError | None:
        """After the closing ']': None when only whitespace follows, else the error naming it.

        Called with the scanner past the ']'. Reads at most _MAX_TRAILING_RAW more characters.
        """
        if self.peek() == "":
            # A stream that broke after the array (a truncated last zstd frame) is still a
            # damaged file: report it even though every element was read.
            return self.failure
        line = self.line
        while len(self.text) - self.pos < _MAX_TRAILING_RAW and not self.eof:
            self.refill()
        rest = self.text[self.pos : self.pos + _MAX_TRAILING_RAW]
        cut = len(self.text) - self.pos > _MAX_TRAILING_RAW or not self.eof
        self._check_the_rest_of_the_stream(line)
        first = rest[:200].split("\n", 1)[0]
        shown = first[:40] + ("..." if len(first) > 40 else "")
        hint = ""
        if rest[:1] in "[{":
            hint = " (a file that starts with '[' is read as one JSON array; JSON Lines need one object a line)"
        reason = f"malformed JSON: data after the closing ']' of the array: {shown!r}{hint}; the rest of the file is not read"
        if cut:
            reason += f" (raw holds its first {_MAX_TRAILING_RAW} characters)"
        return BadRecordError(self.name, line, reason, rest.encode("utf-8"))


def _parse_int(text: str) -> int | Decimal:
    """An integer literal; one past Python's int conversion limit (4,300 digits) as a Decimal,
    so a long number in a field the reader ignores is read as msgspec reads it in JSON Lines,
    instead of ending the array."""
    return int(text) if len(text) <= _INT_DIGITS_LIMIT else Decimal(text)


def _may_need_more(error: json.JSONDecodeError, text: str) -> bool:
    """Whether a decode error may only mean the element goes on past the buffer: an unterminated
    string, or an error at the buffer's very end (a cut number, literal or escape)."""
    return error.msg.startswith("Unterminated string") or error.pos >= len(text) - 16


def _check_end(scanner: _ArrayScanner) -> None:
    error = scanner.trailing()
    if error is not None:
        raise error


def iter_json_array(path: Path, display: str | None = None) -> Iterator[tuple[int, bytes, object]]:
    """Yield (line, raw bytes, value) for each element of a JSON array file; value is a
    NonStandardElement for an element that holds NaN or Infinity.

    Malformed JSON raises BadRecordError with the line where the failing element starts;
    the array cannot be resynchronised after a syntax error, so reading stops there. Anything
    but whitespace after the closing ']' (a second array, garbage, JSON Lines after an array on
    the first line) is such an error too, raised after the array's elements: it is never
    dropped silently. A UTF-8 byte order mark at the start of the file is ignored.
    """
    name = display or str(path)
    with open_binary(path) as handle:
        scanner = _ArrayScanner(handle, name)
        if scanner.peek() != "[":
            raise scanner.error(scanner.line, "malformed JSON: expected a JSON array '['")
        scanner.pos += 1
        if scanner.peek() == "]":
            scanner.pos += 1
            _check_end(scanner)
            return
        while True:
            # At the end of the file, the line named is the last one with text, not one past the
            # final line break that skipping whitespace counted.
            last_text_line = scanner.line
            if scanner.peek() == "":
                raise scanner.error(last_text_line, "malformed JSON: array not closed (truncated file?)")
            yield scanner.value()
            last_text_line = scanner.line
            separator = scanner.peek()
            if separator == "]":
                scanner.pos += 1
                _check_end(scanner)
                return
            if separator != ",":
                if not separator:
                    raise scanner.error(last_text_line, "malformed JSON: expected ',' or ']' after an element, got end of file")
                raise scanner.broken(f"malformed JSON: expected ',' or ']' after an element, got {separator!r}")
            scanner.pos += 1


def starts_with_array(path: Path) -> bool:
    """True when the file's first non-blank character is '[' (a JSON array, not JSON Lines).

    A byte order mark at the start is passed over. The head is read with read1 (one raw read at
    a time), so a stream that breaks later in the file still shows its first bytes: a truncated
    array is then read as an array up to the break, not as JSON Lines of broken pieces. An
    unreadable start gives False: the line reader then reports the broken stream as a bad record.
    """
    head = b""
    try:
        with open_binary(path) as handle:
            while len(head) < 4096:
                chunk = handle.read1(4096)
                if not chunk:
                    break
                head += chunk
                if head.removeprefix(_BOM.encode("utf-8")).lstrip():
                    break
    except STREAM_ERRORS:
        pass
    return head.removeprefix(_BOM.encode("utf-8")).lstrip()[:1] == b"["
