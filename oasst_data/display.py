"""Text from the data made safe to show: control characters and undecodable file-name bytes as
visible escapes.

Ids, languages, labels and file names reach the terminal, HTML and Markdown. An ESC in one
(`\x1b[2J`) would clear the user's screen or recolour the rest, a line break would let the data
forge an output line, and a file name that is not UTF-8 (held by Python as lone surrogates)
cannot be written as UTF-8 at all.
"""

from __future__ import annotations

import html

_NAMED = {"\n": "\\n", "\r": "\\r"}
# C0 controls but tab, DEL, C1 controls; then the surrogates Python uses for undecodable bytes
# of a file name (os.fsdecode's surrogateescape: byte 0xE9 is U+DCE9), shown as that byte.
_VISIBLE = str.maketrans(
    {
        **{chr(code): _NAMED.get(chr(code), f"\\x{code:02x}") for code in (*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F, *range(0x80, 0xA0))},
        **{chr(0xDC00 + byte): f"\\x{byte:02x}" for byte in range(0x80, 0x100)},
        # Bidirectional controls: they reorder what follows on the line (an id shown reversed).
        **{chr(code): f"\\u{code:04x}" for code in (0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))},
    }
)


def visible(text: str) -> str:
    """`text` with control characters (tab aside) and undecodable file-name bytes as escapes."""
    return text if text.isprintable() else text.translate(_VISIBLE)


def html_text(text: str) -> str:
    """`text` for an HTML page: visible, then HTML-escaped."""
    return html.escape(visible(text))


def is_utf8_text(text: str) -> bool:
    """False for a str holding lone surrogates: a file name's undecodable bytes, or a JSON escape."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
