"""Tiny inline-SVG charts (histogram, horizontal bars) with no dependency and no script.

Each function returns one ``<svg>`` element as text, ready to paste into an HTML page (inline SVG
in HTML needs no namespace, so the text holds no URL at all). Every label is escaped; sizes are
fixed and small so a report with dozens of charts stays light.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from modelport.errors import ConfigError

__all__ = ["bar_chart_svg", "histogram_svg"]

_FONT = 'font-family="sans-serif" font-size="10"'
_BAR = "#4878a8"
_BAR_HOT = "#c8553d"


def _num(value: float) -> str:
    """A compact number for a label: 12, 340, 1.23e+06, 0.0012."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e4:
        return f"{value:.3g}"
    if magnitude >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _open(width: int, height: int, title: str) -> str:
    return (
        f'<svg width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
    )


def histogram_svg(
    counts: Sequence[int],
    labels: Sequence[str],
    *,
    title: str,
    width: int = 520,
    height: int = 170,
    log_scale: bool = True,
    highlight_from: int | None = None,
) -> str:
    """Vertical bars, one per bin, with the count over each non-empty bar and the bin's label below.

    ``log_scale`` draws bar heights as log10(1 + count) so that a bin of 3 next to a bin of a
    million is still visible. Bars from index ``highlight_from`` on are drawn in a warning colour
    (e.g. the bins beyond a tolerance).
    """
    if len(counts) != len(labels):
        raise ConfigError(f"histogram '{title}' has {len(counts)} counts but {len(labels)} labels — give one each")
    if not counts:
        raise ConfigError(f"histogram '{title}' has no bins — give at least one count")
    if any(c < 0 for c in counts):
        raise ConfigError(f"histogram '{title}' has a negative count {min(counts)} — counts are >= 0")
    # Labels hang down-left from their bar (rotated), so the left margin leaves room for the first.
    top, bottom, left, right = 16, 46, 40, 6
    plot_h = height - top - bottom
    slot = (width - left - right) / len(counts)

    def scale(c: int) -> float:
        return math.log10(1 + c) if log_scale else float(c)

    peak = max(scale(c) for c in counts) or 1.0
    parts = [_open(width, height, title)]
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="#888"/>')
    for i, (count, label) in enumerate(zip(counts, labels, strict=True)):
        x = left + i * slot
        bar_h = plot_h * scale(count) / peak
        colour = _BAR_HOT if highlight_from is not None and i >= highlight_from else _BAR
        parts.append(
            f'<rect x="{x + 2:.1f}" y="{top + plot_h - bar_h:.1f}" width="{slot - 4:.1f}" height="{bar_h:.1f}" '
            f'fill="{colour}"><title>{escape(label)}: {count}</title></rect>'
        )
        if count:
            parts.append(
                f'<text x="{x + slot / 2:.1f}" y="{top + plot_h - bar_h - 3:.1f}" text-anchor="middle" {_FONT}>'
                f"{_num(count)}</text>"
            )
        label_y = top + plot_h + 10
        parts.append(
            f'<text x="{x + slot / 2:.1f}" y="{label_y}" text-anchor="end" {_FONT} '
            f'transform="rotate(-40 {x + slot / 2:.1f} {label_y})">{escape(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart_svg(
    bars: Sequence[tuple[str, float]],
    *,
    title: str,
    unit: str = "",
    width: int = 520,
    bar_height: int = 18,
) -> str:
    """Horizontal bars, one per (label, value), the value written after each bar."""
    if not bars:
        raise ConfigError(f"bar chart '{title}' has no bars — give at least one (label, value)")
    bad = [label for label, value in bars if not math.isfinite(value) or value < 0]
    if bad:
        raise ConfigError(f"bar chart '{title}' has negative or non-finite values for {bad} — values must be >= 0")
    label_w, value_w, gap = 170, 80, 4
    height = len(bars) * (bar_height + gap) + gap
    plot_w = width - label_w - value_w
    peak = max(value for _, value in bars) or 1.0
    parts = [_open(width, height, title)]
    for i, (label, value) in enumerate(bars):
        y = gap + i * (bar_height + gap)
        length = plot_w * value / peak
        middle = y + bar_height / 2 + 3
        parts.append(f'<text x="{label_w - 6}" y="{middle:.1f}" text-anchor="end" {_FONT}>{escape(label)}</text>')
        parts.append(
            f'<rect x="{label_w}" y="{y}" width="{length:.1f}" height="{bar_height}" fill="{_BAR}">'
            f"<title>{escape(label)}: {_num(value)} {escape(unit)}</title></rect>"
        )
        parts.append(
            f'<text x="{label_w + length + 4:.1f}" y="{middle:.1f}" {_FONT}>{_num(value)} {escape(unit)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
