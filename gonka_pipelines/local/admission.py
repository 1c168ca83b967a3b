"""Reading the inbox ahead of intake on every core, with developer signatures checked as submissions arrive and
remembered, so an epoch does not spend its time on them (`gonka admit`, and the inbox sensor on each tick).

A node-local memory like verify-chain's (local/verified.py), not a trust anchor: one line per inbox entry with the
SHA-256 of the bytes that were checked and the verdict under one chain id. The collector takes a verdict only for an
entry whose bytes still hash the same (anything else is checked in the epoch), and verify-chain re-verifies every
task's signature from its committed row, so a forged memory cannot go unnoticed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

from gonka_pipelines.local.cores import map_chunks
from gonka_pipelines.local.inbox import entry_reader, waiting_names
from gonka_pipelines.protocol.crypto import sha256_hex
from gonka_pipelines.protocol.intake import Submission, read_ahead

FORMAT = "gonka-admitted/1"
"""First word of the memory's header line; the chain id follows it."""
PARALLEL_FROM = 20_000
"""Entries from which they are read, parsed and checked on every core (below, a pool costs more than it saves)."""
CHUNK = 2_500
"""Entries one work item of the pool handles: enough to amortise the hand-over, few enough to spread evenly."""

Verdict = tuple[str, bool | None]
"""(SHA-256 of the entry's bytes, whether its signature verifies; None: it does not read or parse as a submission, so
the collector rejects it and it is not read again here)."""
VERDICT_TEXT = {True: "1", False: "0", None: "-"}
TEXT_VERDICT = {f"{text}\n": verdict for verdict, text in VERDICT_TEXT.items()}
Memory = dict[str, Verdict]
"""Inbox entry name -> its verdict."""


def load_admitted(path: Path, chain_id: str) -> Memory:
    """The verdicts remembered for this chain id; nothing when the file is missing, unreadable or of another chain (a
    line cut short by a killed writer is skipped)."""
    try:
        with path.open(encoding="utf-8") as memory_file:
            if memory_file.readline() != f"{FORMAT}\t{chain_id}\n":
                return {}
            memory: Memory = {}
            for line in memory_file:
                name, digest, verdict = (line.split("\t") + ["", "", ""])[:3]
                if len(digest) == 64 and verdict in TEXT_VERDICT:
                    memory[name] = (digest, TEXT_VERDICT[verdict])
            return memory
    except (OSError, UnicodeDecodeError):
        return {}


def check_entries(names: Sequence[str], inbox: Path, max_bytes: int, chain_id: str) -> list[tuple[str, Verdict]]:
    """(name, verdict) of each entry: a pool's work item."""
    checked: list[tuple[str, Verdict]] = []
    with entry_reader(inbox, max_bytes) as read:
        for name in names:
            entry = read_ahead(read(name), chain_id)
            checked.append((name, (sha256_hex(entry.raw), entry.verified)))
    return checked


def admit(inbox: Path, path: Path, chain_id: str, max_bytes: int, limit: int) -> tuple[int, int]:
    """Check the signatures of up to `limit` waiting entries the memory lacks, in name order, and remember them; the
    memory forgets entries no longer waiting (taken by an epoch) once they are half of it. Returns (checked, waiting)."""
    names = waiting_names(inbox)
    memory = load_admitted(path, chain_id)
    # a name with a tab, a line break or a byte that is not UTF-8 would not fit on a line: checked in the epoch instead
    todo = [name for name in names if name not in memory and name.isprintable()][:limit]
    checked = map_chunks(functools.partial(check_entries, inbox=inbox, max_bytes=max_bytes, chain_id=chain_id),
                         todo, CHUNK, PARALLEL_FROM)
    waiting = set(names)
    kept = [(name, verdict) for name, verdict in memory.items() if name in waiting]
    stale = len(memory) - len(kept)
    if stale * 2 > len(memory) or (checked and not memory):  # compaction, or a missing, foreign or garbled file
        _rewrite(path, chain_id, [*kept, *checked])
    elif checked:
        with path.open("a", encoding="utf-8") as memory_file:
            memory_file.writelines(_lines(checked))
    return len(checked), len(names)


def read_entries(entries: Sequence[tuple[str, Verdict | None]], inbox: Path, max_bytes: int, chain_id: str) -> list[Submission]:
    """Inbox entries read and parsed, each with its signature's verdict: the remembered one when the entry's bytes are
    still those that were checked, else checked now (read_ahead). The collector's work item."""
    taken = []
    with entry_reader(inbox, max_bytes) as read:
        for name, remembered in entries:
            entry, verdict = read(name), None
            if remembered is not None and entry.unreadable is None and sha256_hex(entry.raw) == remembered[0]:
                verdict = remembered[1]
            taken.append(read_ahead(entry, chain_id, verdict))
    return taken


def read_inbox(inbox: Path, memory: Path, max_bytes: int, limit: int, chain_id: str) -> list[Submission]:
    """The first `limit` inbox entries in name order, read ahead of intake: everything it does that needs no chain
    state, on every core from PARALLEL_FROM entries (workers read the files themselves, so only parsed entries cross
    over), with the signature verdicts remembered in `memory` for entries whose bytes have not changed."""
    remembered = load_admitted(memory, chain_id)
    names = waiting_names(inbox)[:limit]
    read = functools.partial(read_entries, inbox=inbox, max_bytes=max_bytes, chain_id=chain_id)
    return map_chunks(read, [(name, remembered.get(name)) for name in names], CHUNK, PARALLEL_FROM)


def _lines(verdicts: Sequence[tuple[str, Verdict]]) -> list[str]:
    return [f"{name}\t{digest}\t{VERDICT_TEXT[ok]}\n" for name, (digest, ok) in verdicts]


def _rewrite(path: Path, chain_id: str, verdicts: Sequence[tuple[str, Verdict]]) -> None:
    """Replace the memory in one rename, so a killed writer never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as memory_file:
        memory_file.write(f"{FORMAT}\t{chain_id}\n")
        memory_file.writelines(_lines(verdicts))
    temporary.replace(path)
