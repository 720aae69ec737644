"""Number formatting shared by the terminal, Markdown and HTML renderings."""

from __future__ import annotations


def count(value) -> str:
    """1234 -> '1,234'; None -> '-'."""
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def decimal(value, places: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{places}f}"


def percent(part, whole=None) -> str:
    """percent(0.125) -> '12.5%'; percent(1, 8) -> '12.5%'; nothing to divide -> '-'."""
    if part is None:
        return "-"
    if whole is not None:
        if not whole:
            return "-"
        part = part / whole
    return f"{part:.1%}"


def lang_name(lang) -> str:
    """A language code as shown: quoted when it would look like another (`' en'`, `''`), `(none)` when absent."""
    if lang is None:
        return "(none)"
    return lang if lang and lang == lang.strip() else repr(lang)
