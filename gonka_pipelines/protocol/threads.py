"""Work split over a thread per core, for calls that release the GIL (libsodium's signatures, the C SHA-256)."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Result = TypeVar("Result")


def on_threads(work: Callable[[int, int], Result], count: int, per_thread: int) -> list[Result]:
    """work(start, end) over [0, count) in contiguous ranges, one thread each, up to a thread per core and while each
    gets at least `per_thread` items (else one call in this thread); the results in range order."""
    threads = min(os.cpu_count() or 1, count // max(1, per_thread))
    if threads < 2:
        return [work(0, count)]
    bounds = [count * part // threads for part in range(threads + 1)]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(work, bounds[:-1], bounds[1:]))
