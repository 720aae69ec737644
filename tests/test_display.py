"""visible(): text from the data made safe to show."""

from __future__ import annotations

import os

from oasst_data.display import html_text, is_utf8_text, visible


def test_controls_line_breaks_bidi_and_undecodable_bytes_become_escapes():
    assert visible("a\x1b[2Jb\nc\rd\x00\x7f\x85") == "a\\x1b[2Jb\\nc\\rd\\x00\\x7f\\x85"
    assert visible("id\u202eevil\u2066\u200f") == "id\\u202eevil\\u2066\\u200f"  # reordered what followed
    assert visible(os.fsdecode(b"caf\xe9.jsonl")) == "caf\\xe9.jsonl"


def test_printable_text_tabs_and_other_scripts_are_left_alone():
    for text in ("plain", "tab\tkept", "中文 العربية हिन्दी 👩‍👩‍👧", "é"):
        assert visible(text) == text


def test_html_text_escapes_after_making_visible():
    assert html_text("<b>\x1b</b>") == "&lt;b&gt;\\x1b&lt;/b&gt;"


def test_is_utf8_text():
    assert is_utf8_text("café") and not is_utf8_text(os.fsdecode(b"caf\xe9")) and not is_utf8_text("\ud800")
