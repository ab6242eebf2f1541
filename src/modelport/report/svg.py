"""Tiny inline-SVG charts (histogram, horizontal bars, lines) with no dependency and no script.

Each function returns one ``<svg>`` element as text, ready to paste into an HTML page (inline SVG
in HTML needs no namespace, so the text holds no URL at all). Every label is escaped; sizes are
fixed and small so a report with dozens of charts stays light.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from modelport.errors import ConfigError

__all__ = ["Point", "Series", "bar_chart_svg", "histogram_svg", "line_chart_svg", "nice_ticks"]

#: (x, y, tooltip) of one point of a line chart.
Point = tuple[float, float, str]
#: (name, points) of one line.
Series = tuple[str, Sequence[Point]]

_PALETTE = ("#4878a8", "#c8553d", "#588b5b", "#8a6bb0", "#d19a2e", "#3c9aa0", "#a05c7b", "#6b6b6b")

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


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2, 2.5 or 5 times a power of ten) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ConfigError(f"cannot place ticks between {low} and {high} — give finite bounds")
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if raw <= m * magnitude)
    first = math.floor(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 12))
    return ticks


def _check_series(series: Sequence[Series], title: str, log_x: bool) -> None:
    if not series:
        raise ConfigError(f"chart '{title}' has no series — give at least one (name, points)")
    for name, points in series:
        if not points:
            raise ConfigError(f"chart '{title}': series '{name}' has no points")
        bad = [(x, y) for x, y, _ in points if not (math.isfinite(x) and math.isfinite(y))]
        if bad:
            raise ConfigError(f"chart '{title}': series '{name}' has non-finite points {bad} — drop them")
        if log_x and any(x <= 0 for x, _, _ in points):
            raise ConfigError(f"chart '{title}': series '{name}' has x <= 0, which a log scale cannot place")


class _Axes:
    """Maps data to pixels for one chart."""

    def __init__(
        self, box: tuple[float, float, float, float], x_ticks: list[float], y_ticks: list[float], log_x: bool
    ) -> None:
        self.left, self.top, self.right, self.bottom = box
        self.x_ticks, self.y_ticks, self.log_x = x_ticks, y_ticks, log_x
        self.x_low, self.x_high = self._x(min(x_ticks)), self._x(max(x_ticks))
        if self.x_high <= self.x_low:
            self.x_low, self.x_high = self.x_low - 1, self.x_high + 1
        self.y_low, self.y_high = min(y_ticks), max(y_ticks)
        if self.y_high <= self.y_low:
            self.y_high = self.y_low + 1

    def _x(self, x: float) -> float:
        return math.log2(x) if self.log_x else x

    def px(self, x: float) -> float:
        return self.left + (self._x(x) - self.x_low) / (self.x_high - self.x_low) * (self.right - self.left)

    def py(self, y: float) -> float:
        return self.bottom - (y - self.y_low) / (self.y_high - self.y_low) * (self.bottom - self.top)

    def frame(self, x_label: str, y_label: str) -> list[str]:
        parts = []
        for y in self.y_ticks:
            py = self.py(y)
            parts.append(
                f'<line x1="{self.left:.1f}" y1="{py:.1f}" x2="{self.right:.1f}" y2="{py:.1f}" stroke="#e4e4e4"/>'
            )
            parts.append(f'<text x="{self.left - 4:.1f}" y="{py + 3:.1f}" text-anchor="end" {_FONT}>{_num(y)}</text>')
        for x in self.x_ticks:
            px = self.px(x)
            parts.append(
                f'<line x1="{px:.1f}" y1="{self.bottom:.1f}" x2="{px:.1f}" y2="{self.bottom + 4:.1f}" stroke="#888"/>'
            )
            parts.append(f'<text x="{px:.1f}" y="{self.bottom + 15:.1f}" text-anchor="middle" {_FONT}>{_num(x)}</text>')
        corner = f"M{self.left:.1f},{self.top:.1f} V{self.bottom:.1f} H{self.right:.1f}"
        parts.append(f'<path d="{corner}" fill="none" stroke="#888"/>')
        middle_x = (self.left + self.right) / 2
        parts.append(
            f'<text x="{middle_x:.1f}" y="{self.bottom + 32:.1f}" text-anchor="middle" {_FONT}>{escape(x_label)}</text>'
        )
        middle_y = (self.top + self.bottom) / 2
        parts.append(
            f'<text x="12" y="{middle_y:.1f}" text-anchor="middle" transform="rotate(-90 12 {middle_y:.1f})" {_FONT}>'
            f"{escape(y_label)}</text>"
        )
        return parts


def line_chart_svg(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 600,
    height: int = 300,
    log_x: bool = False,
    x_ticks: Sequence[float] | None = None,
) -> str:
    """Lines through points (drawn in the order given), a dot with a tooltip per point, axes, a legend.

    The y axis starts at 0 (the quantities here — latency, throughput — are positive).
    ``log_x`` puts x on a log2 scale (batch sizes 1, 2, 4 ... evenly spaced); ``x_ticks``
    overrides the automatic ticks (e.g. exactly the batch sizes measured).
    """
    _check_series(series, title, log_x)
    xs = [x for _, points in series for x, _, _ in points]
    ys = [y for _, points in series for _, y, _ in points]
    if x_ticks is None:
        x_ticks = sorted(set(xs)) if log_x else nice_ticks(min(xs), max(xs))
    longest = max(len(name) for name, _ in series)
    legend_w = min(40 + 6 * longest, width // 2) if len(series) > 1 else 0
    axes = _Axes((56, 28, width - 14 - legend_w, height - 44), list(x_ticks), nice_ticks(0.0, max(ys) or 1.0), log_x)
    parts = [
        f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>',
        f'<text x="{width / 2:.1f}" y="16" text-anchor="middle" font-family="sans-serif" font-size="12">'
        f"{escape(title)}</text>",
        *axes.frame(x_label, y_label),
    ]
    for i, (name, points) in enumerate(series):
        colour = _PALETTE[i % len(_PALETTE)]
        coords = [(axes.px(x), axes.py(y), tip) for x, y, tip in points]
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in coords)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for x, y, tip in coords:
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{escape(tip)}</title></circle>'
            )
        if legend_w:
            ly = 32 + i * 14
            lx = width - legend_w
            parts.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>')
            parts.append(f'<text x="{lx + 14}" y="{ly + 1}" {_FONT}>{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
