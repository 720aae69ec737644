"""Opening inputs (plain, gzip, zstandard) and iterating their lines with line numbers.

Every failure of the byte stream (truncated gzip or zstd, corrupt data, unreadable file) is
turned into a `BadRecordError` naming the file and the line where reading stopped.
"""

from __future__ import annotations

import glob
import io
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import zstandard

from ..display import is_utf8_text, visible
from ..errors import BadRecordError, CorruptStreamError, OasstDataError
from .hints import COMPRESSED_SUFFIXES, misnamed_stream_hint

try:  # python-isal decompresses gzip ~4x faster than zlib (shared/PERFORMANCE.md)
    from isal import isal_zlib as _inflate
    from isal.isal_zlib import error as _IsalError
except ImportError:  # pragma: no cover - isal is a dependency, but keep working without it
    _inflate = zlib
    _IsalError = zlib.error

_CHUNK = 1 << 20
UTF8_BOM = b"\xef\xbb\xbf"
# What JSON calls whitespace (RFC 8259): a line of only these holds no record. bytes.strip()
# would also pass over vertical tab and form feed, which are no JSON: such a line is a bad record.
JSON_WHITESPACE = b" \t\r\n"

# What a broken byte stream raises: truncated (EOFError), bad header or CRC (OSError), corrupt
# deflate data (zlib.error / isal's IsalError, which is not an OSError), corrupt zstd data.
STREAM_ERRORS = (EOFError, OSError, zlib.error, _IsalError, zstandard.ZstdError)


class CorruptCompressedUnit(OSError):
    """Corrupt compressed data inside a unit (gzip member, zstd frame) that has already given
    output: that output is not verified (a checksum covers a whole unit), so neither are the
    records read from it."""

    def __init__(self, unit: str, tester: str, cause: Exception):
        super().__init__(
            f"corrupt {unit} ({cause}): the lines already read from this {unit} may be damaged too, and they cannot "
            f"be taken back, so this stops the run even under --on-bad-record skip; check the file with `{tester}` "
            "and fetch it again"
        )


class _DecompressingRaw(io.RawIOBase):
    """A raw stream that hands over decompressed bytes (`_pending`) as `_fill` produces them:
    a break in the compressed stream raises only once everything before it is read."""

    # The error for a stream that ends inside a compressed unit (each format names its unit).
    _TRUNCATED = "stream ended inside a compressed unit (truncated file)"
    _FORMAT = "compressed"

    def __init__(self, handle):
        self._handle = handle
        self._pending = b""
        self._offset = 0  # of the next byte of _pending to hand over
        self._done = False
        self._input = b""  # compressed bytes read, not yet decompressed
        self._unit_output = 0  # bytes the current compressed unit has given so far
        self._read_any = False
        # The bytes handed over since the last line break (up to _MAX_PARTIAL_LINE): when the
        # stream breaks, the reader's readline drops the line it was gathering; the quarantine
        # keeps it from here.
        self._partial: list[bytes] = []
        self._partial_size = 0

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        """Decompress more into `_pending`, or set `_done`; raise EOFError on a truncated stream."""
        raise NotImplementedError

    def _unit_open(self) -> bool:
        """True while a compressed unit has started and not ended."""
        raise NotImplementedError

    def _truncated_reason(self) -> str:
        return self._TRUNCATED

    def _have_input(self) -> bool:
        """Read more compressed input when none is left; False (and `_done`) at its clean end."""
        if not self._input:
            self._input = self._handle.read(_CHUNK)
            if not self._input:
                if self._unit_open():
                    raise EOFError(self._truncated_reason())
                if not self._read_any:
                    # `gzip -t` and `zstd -t` call it truncated too: often a download or copy cut short.
                    raise EOFError(f"the file is empty (0 bytes), yet even an empty {self._FORMAT} stream has a header: a copy cut short?")
                self._done = True
                return False
            self._read_any = True
        return True

    def readinto(self, buffer) -> int:
        if self._offset >= len(self._pending):
            self._pending, self._offset = b"", 0
            while not self._pending and not self._done:
                self._fill()
        # Handed over from an offset: slicing off the front would copy the rest on every read.
        start = self._offset
        size = min(len(buffer), len(self._pending) - start)
        buffer[:size] = memoryview(self._pending)[start:start + size]
        self._offset += size
        self._note_partial_line(start, start + size)
        return size

    def _note_partial_line(self, start: int, end: int) -> None:
        newline = self._pending.rfind(b"\n", start, end)
        if newline >= 0:
            self._partial, self._partial_size = [self._pending[newline + 1 : end]], end - newline - 1
        elif self._partial_size < _MAX_PARTIAL_LINE:
            piece = self._pending[start : min(end, start + _MAX_PARTIAL_LINE - self._partial_size)]
            self._partial.append(piece)
            self._partial_size += len(piece)

    def partial_line(self) -> bytes:
        """What was read of the line the stream broke in (its first _MAX_PARTIAL_LINE bytes)."""
        return b"".join(self._partial)

    def close(self) -> None:
        self._handle.close()
        super().close()


class _ZstdRaw(_DecompressingRaw):
    """A raw stream over zstd frames that notices a truncated last frame.

    `zstandard`'s stream_reader ends quietly when the input stops mid-frame; a silent short
    read would lose records, so we decompress frame by frame and check `eof` at the end.
    """

    def __init__(self, handle):
        super().__init__(handle)
        self._context = zstandard.ZstdDecompressor()
        self._frame = self._context.decompressobj()
        self._frame_started = False
        self._slice = _ZSTD_FIRST_SLICE  # compressed bytes per decompress call, sized to the ratio
        self._broken: zstandard.ZstdError | None = None  # raised once the bytes before it are read

    _TRUNCATED = "zstd stream ended before the end of its frame (truncated file)"
    _FORMAT = "zstd"

    def _unit_open(self) -> bool:
        return self._frame_started and not self._frame.eof

    def _fill(self) -> None:
        if self._broken is not None:
            raise self._broken
        if not self._have_input():
            return
        produced: list[bytes] = []
        try:
            self._decompress_slices(produced)
        except zstandard.ZstdError as error:
            broken = CorruptCompressedUnit("zstd frame", "zstd -t", error) if self._unit_output else error
            if not any(produced):
                raise broken from None
            # Hand over what came before the break; raise next time.
            self._broken = broken
        self._pending = b"".join(produced)

    def _decompress_slices(self, produced: list[bytes]) -> None:
        # decompress() has no output cap: feed it slices sized so that one gives about a call's
        # worth of output at the ratio seen so far, so highly compressible input (1000:1 for
        # repeated records) stays in bounded memory, as gzip's does.
        size = 0
        while self._input and size < _MAX_INFLATE:
            piece, self._input = self._input[: self._slice], self._input[self._slice :]
            fed = len(piece)
            out_size = 0
            while piece:
                self._frame_started = True
                out = self._frame.decompress(piece)
                produced.append(out)
                out_size += len(out)
                self._unit_output += len(out)
                if self._frame.eof:
                    piece = self._frame.unused_data
                    self._frame = self._context.decompressobj()
                    self._frame_started = False
                    self._unit_output = 0
                else:
                    piece = b""
            size += out_size
            if out_size:
                self._slice = max(_ZSTD_MIN_SLICE, min(_CHUNK, _MAX_INFLATE * fed // out_size))


# How much of the line a broken stream cuts off is kept for the quarantine.
_MAX_PARTIAL_LINE = 16 << 20
# Compressed bytes for the first zstd decompress call (then sized by the ratio seen), and the least.
_ZSTD_FIRST_SLICE = 256
_ZSTD_MIN_SLICE = 256
# wbits for a gzip header and trailer (zlib's convention, which isal follows).
_GZIP_WBITS = 16 + zlib.MAX_WBITS
# Decompressed bytes one call may produce: a highly compressible member stays within memory
# (2 MiB: en_100 x50 reads fastest so; 1 MiB 0.052 s, 4 MiB 0.060 s, 2 MiB 0.047 s, igzip.open 0.053 s).
_MAX_INFLATE = 2 * _CHUNK


class _GzipRaw(_DecompressingRaw):
    """A raw stream over gzip members (several may follow one another) that hands over every
    byte decompressed before a break, then raises.

    igzip's reader raised EOFError on a truncated file before returning what its last read had
    decompressed: up to a megabyte of complete lines lost, and the break reported at the wrong line.
    """

    def __init__(self, handle):
        super().__init__(handle)
        self._member = _inflate.decompressobj(_GZIP_WBITS)
        self._member_started = False
        self._members_done = 0

    # Bytes after a complete member that do not make one: `gzip -d` ignores them with a warning,
    # Python's gzip refuses them; refused here too, but not called a truncated file.
    _NOT_A_MEMBER = "the bytes after the last complete gzip member are no gzip member ({}): trailing garbage, or a member cut off in its header"

    def _after_last_member(self) -> bool:
        return self._members_done > 0 and not self._unit_output

    def _truncated_reason(self) -> str:
        return self._NOT_A_MEMBER.format("the file ends inside a header") if self._after_last_member() else self._TRUNCATED

    _TRUNCATED = "Compressed file ended before the end-of-stream marker was reached (truncated file)"
    _FORMAT = "gzip"

    def _unit_open(self) -> bool:
        return self._member_started and not self._member.eof

    def _fill(self) -> None:
        if not self._have_input():
            return
        if not self._member_started:
            # Zero bytes may pad a file after a member, as gzip's own reader allows.
            self._input = self._input.lstrip(b"\x00")
            if not self._input:
                return
            self._member_started = True
        try:
            self._pending = self._member.decompress(self._input, _MAX_INFLATE)
        except STREAM_ERRORS as error:
            if self._unit_output:
                raise CorruptCompressedUnit("gzip member", "gzip -t", error) from None
            if self._after_last_member():
                raise OSError(self._NOT_A_MEMBER.format(error)) from None
            raise
        self._unit_output += len(self._pending)
        if self._member.eof:
            self._input = self._member.unused_data
            self._member = _inflate.decompressobj(_GZIP_WBITS)
            self._member_started = False
            self._unit_output = 0
            self._members_done += 1
        else:
            self._input = self._member.unconsumed_tail


class ByteCounter:
    """Bytes read from disk so far (compressed bytes for compressed files): drives progress bars."""

    def __init__(self) -> None:
        self.value = 0


class _CountingRaw(io.RawIOBase):
    def __init__(self, handle, counter: ByteCounter):
        self._handle = handle
        self._counter = counter

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = self._handle.readinto(buffer)
        self._counter.value += size or 0
        return size

    def close(self) -> None:
        self._handle.close()
        super().close()


def open_binary(path: Path, counter: ByteCounter | None = None) -> io.BufferedIOBase:
    """Open a file for binary reading, decompressing by suffix (.gz, .zst/.zstd)."""
    suffix = path.suffix.lower()
    try:
        raw = path.open("rb", buffering=0)
    except OSError as error:
        raise OasstDataError(f"{path}: cannot open: {error.strerror or error}") from None
    if counter is not None:
        raw = _CountingRaw(raw, counter)
    if suffix == ".gz":
        return io.BufferedReader(_GzipRaw(raw), buffer_size=_CHUNK)
    if suffix in (".zst", ".zstd"):
        return io.BufferedReader(_ZstdRaw(raw), buffer_size=_CHUNK)
    return io.BufferedReader(raw, buffer_size=_CHUNK)


@dataclass(frozen=True, slots=True)
class Line:
    number: int  # 1-based
    data: bytes


def iter_lines(path: Path, display: str | None = None, counter: ByteCounter | None = None) -> Iterator[Line]:
    """Yield the lines of a (possibly compressed) file with their 1-based numbers (blank ones too).

    A UTF-8 byte order mark at the start of the (decompressed) file is dropped, as Python's
    "utf-8-sig" does: Windows editors write one, and JSON parsers reject it as a bad character.
    Raises BadRecordError (file, line) when the byte stream breaks off or is corrupt.
    """
    name = display or str(path)
    number = 0
    with open_binary(path, counter) as handle:
        try:
            # The first line apart, so the loop over the others stays as lean as it was.
            first = handle.readline()
            if not first:
                return
            number = 1
            yield Line(1, first.removeprefix(UTF8_BOM))
            for number, data in enumerate(handle, start=2):  # noqa: B007 - number used after loop
                yield Line(number, data)
        except CorruptCompressedUnit as error:
            raise CorruptStreamError(name, number + 1, str(error)) from None
        except STREAM_ERRORS as error:
            hint = misnamed_stream_hint(path) if number == 0 else ""
            raw = handle.raw.partial_line() if isinstance(handle.raw, _DecompressingRaw) else b""
            raise BadRecordError(name, number + 1, f"cannot read further: {error}{hint}", raw or None) from None


_JSON_LINES_SUFFIXES = frozenset((".jsonl", ".ndjson"))


def names_json_lines(path: Path) -> bool:
    """True when the file's name (past a compression suffix) says JSON Lines: x.jsonl, x.ndjson.gz."""
    name = Path(path.name)
    if name.suffix.lower() in COMPRESSED_SUFFIXES:
        name = Path(name.stem)
    return name.suffix.lower() in _JSON_LINES_SUFFIXES


def as_sources(value: str | os.PathLike | Iterable[str | os.PathLike] | None) -> list:
    """One path (or Alpaca name), several, or None, as a list: from Python, `extract_threads("a.jsonl")`
    must read one file, not one "file" per character."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    return list(value)


def expand_inputs(patterns: str | os.PathLike | Iterable[str | os.PathLike] | None) -> list[Path]:
    """Expand files and globs in order; a pattern that matches nothing is an error.

    An existing file is taken literally even when its name holds glob characters (`a[1].jsonl`),
    so expanding an already expanded list changes nothing.
    """
    paths: list[Path] = []
    for pattern in as_sources(patterns):
        text = os.fspath(pattern)
        if glob.has_magic(text) and not Path(text).is_file():
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise OasstDataError(f"{text}: no file matches this pattern")
            paths.extend(Path(m) for m in matches)
        else:
            path = Path(text)
            if path.is_dir():
                raise OasstDataError(f"{text}: is a directory, not a file (pass the files in it, or a glob such as '{path / '*.jsonl.gz'}')")
            if path.exists() and not path.is_file():
                # A pipe (`<(zcat ...)`) or a device: inputs are read more than once (sha256, stats).
                raise OasstDataError(f"{text}: is not a regular file (a pipe or a device?); write it to a file first")
            if not path.is_file():
                raise OasstDataError(f"{text}: no such file")
            paths.append(path)
    # The same file twice (a repeated name, overlapping globs) would give every thread twice.
    seen: dict[str, Path] = {}
    for path in paths:
        if not is_utf8_text(str(path)):  # a glob can match a name the command line never spelled
            raise OasstDataError(f"{visible(str(path))}: the file name is not valid UTF-8 (written in another encoding?): rename it")
        real = os.path.realpath(path)
        if real in seen:
            raise OasstDataError(f"{path}: given twice (also as {seen[real]}); its threads would be counted and trained on twice")
        seen[real] = path
        _check_readable(path)
    return paths


def _check_readable(path: Path) -> None:
    """Refuse an input that cannot be opened before any work: found when reading reaches it, it
    stopped a build after the inputs before it were read and tokenized (20-30 s in an audit)."""
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise OasstDataError(f"{path}: cannot open: {error.strerror or error}") from None
