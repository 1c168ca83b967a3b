"""The explorer's own copy of the chain: pages read it, so they never wait for an epoch's write lock.

DuckDB lets one process write a database file and nobody read beside it, so reading the live chain while a stage
writes would block a page for the length of that stage. Instead a background thread copies the live file whenever
it changed and no writer holds it (the copy is made while holding a read-only connection, so it is consistent), and
pages open the latest copy read-only. While an epoch writes, pages show the last finalized state they have and say so.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from gonka_pipelines.chain.store import ChainBusyError, ChainError, ChainStore

WAL_SUFFIX = ".wal"


@dataclass(frozen=True)
class Freshness:
    """What the pages are showing: the copy's head, when it was taken, and whether a writer holds the live chain now."""

    height: int
    copied_at: float
    writer_busy_since: float | None


def _stamp(path: Path) -> tuple[tuple[int, ...], ...]:
    """(inode, change time, mtime, size) of the database and its write-ahead log: any write, or a file put in its
    place, changes one of them."""
    stamps = []
    for file in (path, path.with_name(path.name + WAL_SUFFIX)):
        try:
            stat = file.stat()
            stamps.append((stat.st_ino, stat.st_ctime_ns, stat.st_mtime_ns, stat.st_size))
        except FileNotFoundError:
            stamps.append((0, 0, 0, 0))
    return tuple(stamps)


def _remove(copy: Path) -> None:
    for file in (copy, copy.with_name(copy.name + WAL_SUFFIX)):
        file.unlink(missing_ok=True)


class ChainSnapshot:
    """A refreshed private copy of the chain database at `live`, kept in `folder` (one file per refresh, the one before
    removed once replaced)."""

    def __init__(self, live: Path, folder: Path):
        self.live, self.folder = live, folder
        self._lock = threading.Lock()
        self._current: Path | None = None  # the copy pages read
        self._stamp: tuple[tuple[int, ...], ...] | None = None
        self._generation = 0
        self._copied: tuple[int, float] | None = None  # (head height, time) of the latest copy
        self._busy_since: float | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def refresh(self, lock_wait: float = 0.0) -> bool:
        """Copy the live chain if it changed since the last copy and no writer holds it; True when a new copy was
        taken. A busy chain is remembered (pages say so) and tried again at the next call."""
        stamp = _stamp(self.live)
        if stamp == self._stamp:
            self._busy_since = None
            return False
        self._generation += 1
        target = self.folder / f"chain-{self._generation}.duckdb"
        try:
            with ChainStore.open(self.live, read_only=True, lock_wait=lock_wait) as store:
                height = store.head().height
                stamp = _stamp(self.live)  # taken under the shared lock: no writer can change the file now
                shutil.copyfile(self.live, target)
                wal = self.live.with_name(self.live.name + WAL_SUFFIX)
                if wal.exists():
                    shutil.copyfile(wal, target.with_name(target.name + WAL_SUFFIX))
        except ChainBusyError:
            self._busy_since = self._busy_since or time.time()
            return False
        except BaseException:
            _remove(target)  # a copy cut short (disk full, interrupted) is never read
            raise
        with self._lock:  # pages open the current copy under this lock, so none is half-way into opening the old one
            retired, self._current = self._current, target
            self._stamp, self._busy_since, self._copied = stamp, None, (height, time.time())
        if retired is not None:  # a page that has it open keeps reading it after the unlink (POSIX)
            _remove(retired)
        return True

    @property
    def freshness(self) -> Freshness:
        if self._copied is None:
            raise ChainError(f"{self.live}: no copy of the chain yet")
        return Freshness(*self._copied, self._busy_since)

    @contextmanager
    def store(self) -> Iterator[ChainStore]:
        """The latest copy, opened read-only for one page (opened under the lock, so no refresh retires it first)."""
        with ExitStack() as stack:
            with self._lock:
                if self._current is None:
                    raise ChainError(f"{self.live}: no copy of the chain yet (is it being created?)")
                store = stack.enter_context(ChainStore.open(self._current, read_only=True))
            yield store

    def keep_fresh(self, interval: float, stop: threading.Event) -> threading.Thread:
        """Refresh every `interval` seconds in a daemon thread until `stop` is set."""
        def loop() -> None:
            while not stop.wait(interval):
                try:
                    self.refresh()
                except Exception:  # noqa: BLE001 - a failed copy (disk full, a chain being re-created) must not end
                    traceback.print_exc(file=sys.stderr)  # the refreshes: pages keep the last copy, the next tick retries

        thread = threading.Thread(target=loop, name="chain-snapshot", daemon=True)
        thread.start()
        return thread
