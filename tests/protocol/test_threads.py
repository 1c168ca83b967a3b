"""on_threads: contiguous ranges, a thread per core, results in range order."""

from __future__ import annotations

import threading

import pytest

from gonka_pipelines.protocol.threads import on_threads


@pytest.mark.parametrize(("cores", "count", "per_thread", "ranges"), [
    (4, 10, 2, [(0, 2), (2, 5), (5, 7), (7, 10)]),   # a thread per core
    (4, 10, 4, [(0, 5), (5, 10)]),                   # as many threads as get per_thread items each
    (4, 7, 4, [(0, 7)]),                             # too few for two: one call
    (1, 100, 1, [(0, 100)]),                         # one core: one call
    (3, 0, 1, [(0, 0)]),                             # nothing: still one call, over nothing
])
def test_ranges_cover_the_items_in_order(monkeypatch, cores, count, per_thread, ranges):
    monkeypatch.setattr("gonka_pipelines.protocol.threads.os.cpu_count", lambda: cores)
    together = threading.Barrier(len(ranges), timeout=10)  # every range at once: on threads of their own
    names: set[str] = set()

    def work(start: int, end: int) -> tuple[int, int]:
        names.add(threading.current_thread().name)
        together.wait()
        return start, end

    assert on_threads(work, count, per_thread) == ranges
    assert len(names) == len(ranges)
    assert (threading.current_thread().name in names) == (len(ranges) == 1), "one range runs in the caller's thread"
