"""Charts the explorer draws itself, as inline SVG: no script and nothing fetched from outside the package.

A line chart for a number across epochs (weight, reward, reputation...) and a strip of labelled cells for an outcome
across epochs (status, sprint, claim). Every point carries a <title>, so hovering shows its exact value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

WIDTH, HEIGHT = 560, 150
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 24
OUTCOME_COLOURS = {"ACTIVE": "#2e7d32", "accepted": "#2e7d32", "claimed": "#2e7d32", "RAMPING": "#f9a825",
                   "INACTIVE": "#9e9e9e", "-": "#e0e0e0", "INVALID": "#c62828", "REJECTED": "#c62828", "REFUSED": "#c62828"}


def _nice_ticks(low: float, high: float, integer: bool) -> tuple[list[float], int]:
    """Three to six round tick values covering [low, high] (whole numbers only when `integer`), and the decimals
    that tell them apart."""
    span = high - low or abs(high) or 1.0
    raw = span / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1.0, round(step))
    start = (low // step) * step
    ticks, value = [], start
    while value <= high + step * 1e-9:
        ticks.append(value)
        value += step
    if ticks[-1] < high or len(ticks) == 1:
        ticks.append(ticks[-1] + step)
    decimals = 0 if integer else max(0, -math.floor(math.log10(step)) + (0 if step / magnitude in (1, 2, 5, 10) else 1))
    return ticks, decimals


def _exact(value: float, integer: bool) -> str:
    """A point's value for its tooltip: every digit that matters (up to 9 decimals)."""
    return f"{value:,.0f}" if integer else f"{value:,.9f}".rstrip("0").rstrip(".")


def line_chart(title: str, epochs: Sequence[int], values: Sequence[float | None], integer: bool = True) -> str:
    """A line with a dot per epoch (None leaves a gap); y from 0 (or the lowest value, if negative) to the highest;
    `integer` keeps ticks on whole numbers (counts, weights) and labels them without decimals."""
    points = [(e, v) for e, v in zip(epochs, values) if v is not None]
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}">',
             f"<title>{escape(title)}</title>"]
    if not points:
        parts.append(f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">no finalized epoch yet</text></svg>')
        return "".join(parts)
    low, high = min(0.0, *(v for _, v in points)), max(0.0, *(v for _, v in points))
    ticks, decimals = _nice_ticks(low, high, integer)
    low, high = ticks[0], ticks[-1]
    first, last = min(epochs), max(epochs)

    def x(epoch: float) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * ((epoch - first) / (last - first) if last > first else 0.5)

    def y(value: float) -> float:
        return TOP + (HEIGHT - TOP - BOTTOM) * (1 - (value - low) / (high - low or 1))

    for tick in ticks:
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
                     f'<text class="tick" x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:,.{decimals}f}</text>')
    for epoch in sorted(set(epochs)):
        parts.append(f'<text class="tick" x="{x(epoch):.1f}" y="{HEIGHT - 6}" text-anchor="middle">{epoch}</text>')
    segments: list[list[tuple[int, float]]] = [[]]
    for epoch, value in zip(epochs, values):
        if value is None:
            segments.append([])
        else:
            segments[-1].append((epoch, value))
    for segment in segments:
        if len(segment) > 1:
            path = " ".join(f"{x(e):.1f},{y(v):.1f}" for e, v in segment)
            parts.append(f'<polyline class="line" points="{path}"/>')
    for epoch, value in points:
        parts.append(f'<circle class="dot" cx="{x(epoch):.1f}" cy="{y(value):.1f}" r="3.5">'
                     f"<title>epoch {epoch}: {_exact(value, integer)}</title></circle>")
    parts.append("</svg>")
    return "".join(parts)


def outcome_strip(title: str, epochs: Sequence[int], outcomes: Sequence[str]) -> str:
    """One coloured cell per epoch, labelled with its outcome (green good, amber ramping, red caught, grey none)."""
    cell = min(56.0, (WIDTH - LEFT - RIGHT) / max(1, len(epochs)))
    parts = [f'<svg class="strip" role="img" viewBox="0 0 {WIDTH} 44" width="{WIDTH}" height="44"><title>{escape(title)}</title>',
             f'<text class="tick" x="{LEFT - 6}" y="22" text-anchor="end">{escape(title)}</text>']
    for i, (epoch, outcome) in enumerate(zip(epochs, outcomes)):
        left = LEFT + i * cell
        colour = OUTCOME_COLOURS.get(outcome, "#607d8b")
        parts.append(f'<g><title>epoch {epoch}: {escape(outcome)}</title>'
                     f'<rect x="{left:.1f}" y="4" width="{cell - 2:.1f}" height="24" fill="{colour}" rx="3"/>'
                     f'<text class="tick" x="{left + cell / 2 - 1:.1f}" y="40" text-anchor="middle">{epoch}</text></g>')
    parts.append("</svg>")
    return "".join(parts)
