"""This node's cores: a process pool for checks that split into independent chunks (signatures)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor


def core_count() -> int:
    """The cores this process may use (at least one)."""
    return os.cpu_count() or 1


def process_pool() -> ProcessPoolExecutor:
    """One worker per core, started by forkserver: workers start clean, not as copies of a process that holds a DuckDB
    connection and its threads."""
    return ProcessPoolExecutor(core_count(), mp_context=multiprocessing.get_context("forkserver"))
