"""Hints for input given in the wrong form: the wrong reader, a misnamed compressed file, or
pretty-printed JSON where JSON Lines are read.

They only reword the reason of a record that is bad anyway, so they look at bytes already read
(the start of the line) and never change what is counted or quarantined.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from pathlib import Path

import msgspec

# Magic bytes that open a compressed stream, with the suffix open_binary decompresses it by.
_COMPRESSED = ((b"\x1f\x8b", "gzip", ".gz"), (b"\x28\xb5\x2f\xfd", "zstandard", ".zst"))
# The suffixes open_binary decompresses by.
COMPRESSED_SUFFIXES = frozenset((".gz", ".zst", ".zstd"))
# Top-level keys only Open-Assistant records have (trees, messages, threads); "role" and "text"
# count only together, as other chat formats have one of them.
_OASST_KEYS = frozenset(("message_tree_id", "message_id", "parent_id", "thread_id", "thread", "tree_state"))
_ALPACA_KEYS = frozenset(("instruction", "output"))
# How much of a line's start is searched for keys: the first keys of its first record, without
# scanning a one-line array of megabytes.
_HEAD = 8192
# An object key: a quoted name followed by ':'. A quote escaped inside a string value has a
# backslash before it, so text that merely mentions a key is passed over.
_KEY = re.compile(rb'(?<!\\)"([A-Za-z_]+)"\s*:')

OASST_AS_ALPACA_HINT = " (an Open-Assistant record? give the file as an input, not with --alpaca)"
# The reader of inputs reads JSON Lines only: an array of records needs rewriting first.
OASST_ARRAY_AS_ALPACA_HINT = " (Open-Assistant records? give them as an input, not with --alpaca, written as JSON Lines: one record a line)"
PRETTY_PRINTED_HINT = " (one record per line (JSON Lines): a pretty-printed JSON file?)"
_ALPACA_ARRAY_HINT = " (a JSON array: Alpaca data? give it with --alpaca)"
_OASST_ARRAY_HINT = (
    " (a JSON array of Open-Assistant records? exports are JSON Lines, one record a line: "
    "write each element on a line of its own, e.g. with jq -c '.[]')"
)
_UNKNOWN_ARRAY_HINT = " (a JSON array: Alpaca data? give it with --alpaca; Open-Assistant exports are JSON Lines, one record a line)"


def looks_like_oasst(keys: Collection[str]) -> bool:
    """True when these keys are those of an Open-Assistant record, not of an Alpaca one."""
    if _ALPACA_KEYS & set(keys):
        return False
    return bool(_OASST_KEYS & set(keys)) or {"role", "text"} <= set(keys)


def _head_keys(data: bytes) -> set[str]:
    return {match.group(1).decode("ascii") for match in _KEY.finditer(data[:_HEAD])}


def array_hint(data: bytes) -> str:
    """For an export line that opens a JSON array: Alpaca data, or Open-Assistant records in an array.

    Only the line's start is looked at: enough for the first record's first keys.
    """
    keys = _head_keys(data)
    if _ALPACA_KEYS & keys:
        return _ALPACA_ARRAY_HINT
    if looks_like_oasst(keys):
        return _OASST_ARRAY_HINT
    return _UNKNOWN_ARRAY_HINT


def alpaca_record_hint(data: bytes) -> str:
    """For an export line that is an object of no Open-Assistant kind: an Alpaca record, or nothing."""
    return " (an Alpaca record? give the file with --alpaca)" if _ALPACA_KEYS <= _head_keys(data) else ""


# A \uXXXX escape of a UTF-16 surrogate (an even run of backslashes before it), paired or not.
_SURROGATE_ESCAPE = re.compile(
    rb"(?<!\\)(?:\\\\)*(\\u[dD][89abAB][0-9a-fA-F]{2}(?:\\u[dD][c-fC-F][0-9a-fA-F]{2})?|\\u[dD][c-fC-F][0-9a-fA-F]{2})"
)
_ANY_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def lone_surrogate_escape(data: bytes, unit: str = "line") -> str | None:
    """Where `data` (a line, or a record) escapes half a surrogate pair (Python's json writes these for broken text)."""
    # The full pattern opens with a lookbehind, so it is tried at every byte: 9x the read time of
    # an array written with ensure_ascii (a review). A plain search for any surrogate escape first.
    if _ANY_SURROGATE_ESCAPE.search(data) is None:
        return None
    for match in _SURROGATE_ESCAPE.finditer(data):
        if len(match.group(1)) == 6:
            escape = match.group(1).decode("ascii")
            return f"lone surrogate escape {escape} at byte {match.start(1)} of the {unit} (half a UTF-16 pair, not valid Unicode text)"
    return None


def pretty_printed_hint(error: Exception, data: bytes, line: int) -> str:
    """For line 1 opening an object that ends with the line while more lines follow.

    A file truncated inside its only line has no newline after it, and gets no hint.
    """
    if line != 1 or not isinstance(error, msgspec.DecodeError) or "truncated" not in str(error):
        return ""
    if lone_surrogate_escape(data) is not None:  # msgspec calls a lone surrogate at a line's end "truncated" too
        return ""
    if data.lstrip()[:1] != b"{" or not data.endswith(b"\n"):
        return ""
    return PRETTY_PRINTED_HINT


def compressed_reason(data: bytes, source: str, line: int) -> str | None:
    """Why line 1 is no JSON when it opens with a compressed stream's magic bytes; else None.

    open_binary decompresses by the name's suffix only: content sniffing would make a file's
    meaning depend on its bytes, and other tools (datasets, zcat) go by the name too.
    """
    if line != 1:
        return None
    for magic, kind, suffix in _COMPRESSED:
        if data.startswith(magic):
            shown = magic.hex(" ")
            name = Path(source).name
            if Path(name).suffix.lower() in COMPRESSED_SUFFIXES:
                return f"{kind}-compressed data inside the decompressed file (it starts with {shown}): compressed twice? decompress it once more"
            return f"looks {kind}-compressed (it starts with the bytes {shown}) but its name does not say so: name it {name}{suffix}"
    return None


def misnamed_stream_hint(path: Path) -> str:
    """For a compressed file whose stream breaks at once: what its first bytes say it holds.

    Called only after the decompressor has failed on the file's start; reads the raw first bytes.
    """
    suffix = path.suffix.lower()
    if suffix not in COMPRESSED_SUFFIXES:
        return ""
    named = ".zst" if suffix == ".zstd" else suffix
    try:
        with path.open("rb") as handle:
            head = handle.read(_HEAD)
    except OSError:
        return ""
    if not head:  # an empty file: the reason says so
        return ""
    stem = path.name[: -len(suffix)]
    for magic, kind, kind_suffix in _COMPRESSED:
        if head.startswith(magic):
            if kind_suffix == named:
                return ""  # the named format, broken further on: the decompressor's reason says it
            return f" (the file holds {kind} data (it starts with {magic.hex(' ')}), not what its name says: name it {stem}{kind_suffix})"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"{", b"["):
        return f" (the file holds uncompressed JSON, not what its name says: name it {stem})"
    magic, kind = next((magic, kind) for magic, kind, kind_suffix in _COMPRESSED if kind_suffix == named)
    return f" (not {kind} data: {kind} files start with the bytes {magic.hex(' ')})"
