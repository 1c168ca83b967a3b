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
               parallel_from: int) -> list[Result]:
    """work over the items, chunk by chunk, results in order: in a process pool from `parallel_from` items on more than
    one core, else in this process. `work` must be picklable and live in a module a worker imports quickly."""
    if len(items) < parallel_from or core_count() < 2:
        return work(items)
    with process_pool() as pool:
        parts = pool.map(work, [items[start:start + chunk] for start in range(0, len(items), chunk)])
        return [result for part in parts for result in part]
