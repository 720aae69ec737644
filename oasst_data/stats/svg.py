"""Small inline SVG charts, written as text: no JavaScript, no fonts or images to fetch.

Colours come from CSS classes (`s0`, `s1`, ... for series, `drop` for losses) that the HTML
page defines once, so the charts follow the page's style.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..display import html_text as escape
from .format import count

Formatter = Callable[[float], str]


@dataclass(frozen=True)
class Bar:
    label: str
    values: tuple[float, ...]  # one per series
    css: str | None = None  # overrides the series class (e.g. "drop")


def _text(x: float, y: float, body: str, anchor: str = "start", css: str = "t") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" class="{css}">{escape(body)}</text>'


def _legend(series: Sequence[str], x: float, y: float) -> str:
    parts = []
    for index, name in enumerate(series):
        parts.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" class="s{index}"/>')
        parts.append(_text(x + 14, y, name))
        x += 24 + 7 * len(name)
    return "".join(parts)


def hbar_chart(
    bars: Sequence[Bar],
    title: str,
    series: Sequence[str] = ("",),
    fmt: Formatter = count,
    span: int = 280,
) -> str:
    """Horizontal bars, one row per label (several series side by side), values at the ends."""
    # Labels are sized from their length (about 7 px a character at 12 px), so none is clipped.
    label_width = min(max(80, 7 * max((len(b.label) for b in bars), default=0) + 12), 300)
    width = label_width + span + 70
    row = 8 + 14 * len(series)
    top = 26 + (16 if len(series) > 1 else 0)
    height = top + row * max(len(bars), 1) + 6
    peak = max((v for b in bars for v in b.values), default=0) or 1
    parts = [_text(0, 14, title, css="h")]
    if len(series) > 1:
        parts.append(_legend(series, label_width, 34))
    for i, bar in enumerate(bars):
        y = top + i * row
        parts.append(_text(label_width - 6, y + row / 2 + 3, bar.label, anchor="end"))
        for j, value in enumerate(bar.values):
            length = max(span * value / peak, 1 if value else 0)
            css = bar.css or f"s{j}"
            by = y + 4 + j * 14
            parts.append(
                f'<rect x="{label_width}" y="{by:.1f}" width="{length:.1f}" height="12" class="{css}">'
                f"<title>{escape(bar.label)}{(' ' + escape(series[j])) if series[j] else ''}: {escape(fmt(value))}</title></rect>"
            )
            parts.append(_text(label_width + length + 4, by + 10, fmt(value)))
    return f'<svg class="chart" width="{width}" height="{height:.0f}" viewBox="0 0 {width} {height:.0f}" role="img" aria-label="{escape(title)}">{"".join(parts)}</svg>'


def column_chart(
    labels: Sequence[str],
    values: Sequence[float],
    title: str,
    x_title: str = "",
    css: str = "s0",
    width: int = 400,
    height: int = 200,
    fmt: Formatter = count,
) -> str:
    """Vertical bars (a histogram or a distribution); the first, middle and last labels shown."""
    left, bottom, top = 44, 34, 24
    plot_w = width - left - 8
    plot_h = height - top - bottom
    n = max(len(values), 1)
    step = plot_w / n
    peak = max(values, default=0) or 1
    parts = [_text(0, 14, title, css="h")]
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 8}" y2="{top + plot_h}" class="axis"/>')
    parts.append(_text(left - 4, top + 8, fmt(peak), anchor="end"))
    parts.append(_text(left - 4, top + plot_h, "0", anchor="end"))
    last = len(values) - 1
    shown = {0, len(values) // 2, last} if len(values) > 12 else set(range(len(values)))
    for i, (label, value) in enumerate(zip(labels, values)):
        h = plot_h * value / peak
        x = left + i * step
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{top + plot_h - h:.1f}" width="{max(step - 2, 1):.1f}" height="{h:.1f}" class="{css}">'
            f"<title>{escape(label)}: {escape(fmt(value))}</title></rect>"
        )
        if i in shown:
            # The outer labels of a dense axis hang inwards, so they are never clipped.
            anchor, lx = "middle", x + step / 2
            if len(values) > 12 and i == 0:
                anchor, lx = "start", x
            elif len(values) > 12 and i == last:
                anchor, lx = "end", x + step
            parts.append(_text(lx, top + plot_h + 14, label, anchor=anchor))
    if x_title:
        parts.append(_text(left + plot_w / 2, height - 4, x_title, anchor="middle"))
    return f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">{"".join(parts)}</svg>'
