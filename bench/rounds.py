"""Timing in alternating rounds for the micro-benchmarks: each path once a round, in turn, so a slow spell of a
shared machine touches every path alike; medians and ranges per item, and the ratios of paired paths round by round."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def alternating_rounds(paths: dict[str, Callable[[], object]], rounds: int, items: int) -> dict[str, list[float]]:
    """Seconds an item of each path (its run's time / items), one run a path per round."""
    timings: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, work in paths.items():
            start = time.perf_counter()
            work()
            timings[name].append((time.perf_counter() - start) / items)
    return timings


def print_rounds(timings: dict[str, list[float]], item: str, ratios: list[tuple[str, str, str]]) -> None:
    """Each path's median µs an item with its range, then each (label, numerator, denominator) ratio's median and
    range over the rounds."""
    width = max(map(len, timings))
    for name, values in timings.items():
        print(f"  {name:<{width}} {statistics.median(values) * 1e6:6.2f} µs {item} ({min(values) * 1e6:.2f}-{max(values) * 1e6:.2f})")
    for label, numerator, denominator in ratios:
        each = [a / b for a, b in zip(timings[numerator], timings[denominator])]
        print(f"  {label} {statistics.median(each):.2f} ({min(each):.2f}-{max(each):.2f})")
