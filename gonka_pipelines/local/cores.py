"""This node's cores: a process pool for checks that split into independent chunks (signatures)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def core_count() -> int:
    """The cores this process may use (at least one)."""
    return os.cpu_count() or 1


def process_pool() -> ProcessPoolExecutor:
    """One worker per core, started by forkserver: workers start clean, not as copies of a process that holds a DuckDB
    connection and its threads."""
    return ProcessPoolExecutor(core_count(), mp_context=multiprocessing.get_context("forkserver"))


def map_chunks(work: Callable[[Sequence[Item]], list[Result]], items: Sequence[Item], chunk: int,
               parallel_from: int, weights: Sequence[int] | None = None) -> list[Result]:
    """work over the items, chunk by chunk, results in order: in a process pool from `parallel_from` items on more than
    one core, else in this process. `weights`: how many units each item counts for (a bundle's submissions), where
    chunks and the threshold count units instead of items. `work` must be picklable and live in a module a worker
    imports quickly."""
    sizes = weights if weights is not None else [1] * len(items)
    if sum(sizes) < parallel_from or core_count() < 2:
        return work(items)
    parts, start, load = [], 0, 0
    for index, size in enumerate(sizes):
        load += size
        if load >= chunk:
            parts.append(items[start:index + 1])
            start, load = index + 1, 0
    parts += [items[start:]] if start < len(items) else []
    with process_pool() as pool:
        return [result for part in pool.map(work, parts) for result in part]
