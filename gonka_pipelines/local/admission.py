"""Reading the inbox ahead of intake on every core, with developer signatures checked as submissions arrive and
remembered, so an epoch does not spend its time on them (`gonka admit`, and the inbox sensor on each tick).

A node-local memory like verify-chain's (local/verified.py), not a trust anchor: one line per inbox entry with the
SHA-256 of the bytes that were checked and the verdict under one chain id. The collector takes a verdict only for an
entry whose bytes still hash the same (anything else is checked in the epoch), and verify-chain re-verifies every
task's signature from its committed row, so a forged memory cannot go unnoticed.

The checked bytes are kept too, in a spool of segments beside the memory, with the entry's stamp (inode, size, times)
taken as they were read: while the stamp is unchanged the collector takes the bytes from the spool instead of reading
a million small files again. Only an entry whose last change predates the check's clock probe is kept, so any later
write or replacement gives it another stamp (its change time can only move past the probe's)."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from gonka_pipelines.local.cores import map_chunks
from gonka_pipelines.local.inbox import entry_stamp, opened_inbox, read_entry, read_stamped_entry, stamp_of, submission_id_of, waiting_names
from gonka_pipelines.protocol.crypto import sha256_hex
from gonka_pipelines.protocol.intake import Submission, SubmissionBatch, read_ahead

FORMAT = "gonka-admitted/2"
"""First word of the memory's header line; the chain id follows it."""
PARALLEL_FROM = 20_000
"""Entries from which they are read, parsed and checked on every core (below, a pool costs more than it saves)."""
CHUNK = 2_500
"""Entries one work item of the pool handles: enough to amortise the hand-over, few enough to spread evenly."""
SETTLED_NS = 1_000_000_000
"""How long before the check's clock probe an entry must have last changed for its bytes to be kept: any later change
stamps a later change time (ctime) than the probe's, so an unchanged stamp proves unchanged bytes; the second guards
against a clock stepped back a little."""
NOT_KEPT, KEEP_LATER = "-", "+"
"""`kept` of an entry whose bytes are not kept (not a regular file read whole), and of one that changed too recently
(its bytes are kept by the next check)."""
VERDICT_TEXT = {True: "1", False: "0", None: "-"}
TEXT_VERDICT = {text: verdict for verdict, text in VERDICT_TEXT.items()}


class Remembered(NamedTuple):
    """What the check learnt of one inbox entry."""

    digest: str
    """SHA-256 of the bytes checked."""
    verified: bool | None
    """Whether the signature verifies; None: the bytes do not read or parse as a submission (the collector rejects them)."""
    stamp: str
    """The entry's stamp (inbox.stamp_of) when its bytes are kept, else NOT_KEPT."""
    kept: str
    """Where the bytes are kept, `segment:offset:length` in the spool; else NOT_KEPT or KEEP_LATER."""


Memory = dict[str, Remembered]
"""Inbox entry name -> what was learnt of it."""


def spool_of(memory: Path) -> Path:
    """The folder beside the memory that keeps the checked bytes, in segments named by their content's hash."""
    return memory.with_suffix(".spool")


def load_admitted(path: Path, chain_id: str) -> Memory:
    """What is remembered for this chain id; nothing when the file is missing, unreadable or of another chain (a line
    cut short by a killed writer is skipped)."""
    try:
        with path.open(encoding="utf-8") as memory_file:
            if memory_file.readline() != f"{FORMAT}\t{chain_id}\n":
                return {}
            memory: Memory = {}
            for line in memory_file:
                fields = line[:-1].split("\t")
                if len(fields) == 5 and line[-1] == "\n" and len(fields[1]) == 64 and fields[2] in TEXT_VERDICT:
                    name, digest, verdict, stamp, kept = fields
                    memory[name] = Remembered(digest, TEXT_VERDICT[verdict], stamp, kept)
            return memory
    except (OSError, UnicodeDecodeError):
        return {}


def clock_probe(inbox: Path) -> int | None:
    """The inbox file system's time now (the change time of a file made for the purpose), None when no file can be
    made there: the entries' change times are compared with it, never with this machine's clock."""
    try:
        descriptor, name = tempfile.mkstemp(prefix=".clock-", dir=inbox)
    except OSError:
        return None
    try:
        return os.fstat(descriptor).st_ctime_ns
    finally:
        os.close(descriptor)
        os.unlink(name)


def check_entries(entries: Sequence[tuple[str, Remembered | None]], inbox: Path, spool: Path, max_bytes: int,
                  chain_id: str, settled_before: int | None) -> list[tuple[str, Remembered]]:
    """(name, what was learnt) of each entry, the bytes of those last changed before `settled_before` kept in one new
    spool segment; an entry remembered with the same bytes keeps its verdict (it is read again only to keep them). A
    pool's work item."""
    learnt: list[tuple[str, str, bool | None, str, tuple[int, int] | str]] = []
    kept: list[bytes] = []
    offset = 0
    with opened_inbox(inbox) as folder:
        for name, remembered in entries:
            entry, status = read_stamped_entry(inbox, name, max_bytes, folder)
            digest = sha256_hex(entry.raw)
            same = remembered is not None and remembered.digest == digest
            verified = remembered.verified if remembered is not None and same else read_ahead(entry, chain_id).verified
            if status is None or settled_before is None:
                learnt.append((name, digest, verified, NOT_KEPT, NOT_KEPT))
            elif status.st_ctime_ns >= settled_before:
                learnt.append((name, digest, verified, NOT_KEPT, KEEP_LATER))
            else:
                learnt.append((name, digest, verified, stamp_of(status), (offset, len(entry.raw))))
                kept.append(entry.raw)
                offset += len(entry.raw)
    segment = _write_segment(spool, kept) if kept else ""
    return [(name, Remembered(digest, verified, stamp, where if isinstance(where, str) else f"{segment}:{where[0]}:{where[1]}"))
            for name, digest, verified, stamp, where in learnt]


def admit(inbox: Path, path: Path, chain_id: str, max_bytes: int, limit: int) -> tuple[int, int]:
    """Check up to `limit` waiting entries, in name order: those the memory lacks, and those whose bytes it keeps
    later (read again to keep them, their verdict kept while the bytes hash the same); the memory forgets entries no
    longer waiting (taken by an epoch) once they are half of it, and the spool the segments it no longer refers to.
    Returns (new entries checked, waiting)."""
    names = waiting_names(inbox)
    memory = load_admitted(path, chain_id)
    # a name with a tab, a line break or a byte that is not UTF-8 would not fit on a line: checked in the epoch instead
    todo = [(name, memory.get(name)) for name in names
            if (name not in memory or memory[name].kept == KEEP_LATER) and name.isprintable()][:limit]
    settled_before = None if not todo or (probe := clock_probe(inbox)) is None else probe - SETTLED_NS
    check = functools.partial(check_entries, inbox=inbox, spool=spool_of(path), max_bytes=max_bytes, chain_id=chain_id,
                              settled_before=settled_before)
    checked = map_chunks(check, todo, CHUNK, PARALLEL_FROM)
    waiting, rechecked = set(names), {name for name, _ in todo}
    kept = [(name, remembered) for name, remembered in memory.items() if name in waiting and name not in rechecked]
    stale = len(memory.keys() - waiting)
    if stale * 2 > len(memory) or (checked and not memory):  # compaction, or a missing, foreign or garbled file
        _rewrite(path, chain_id, [*kept, *checked])
    elif checked:
        with path.open("a", encoding="utf-8") as memory_file:
            memory_file.writelines(_lines(checked))
    return sum(remembered is None for _, remembered in todo), len(names)


def read_entries(entries: Sequence[tuple[str, Remembered | None]], inbox: Path, spool: Path, max_bytes: int,
                 chain_id: str) -> list[SubmissionBatch]:
    """Inbox entries read and parsed, each with its signature's verdict: the remembered one when the entry's bytes are
    still those that were checked (taken from the spool while the entry's stamp is unchanged, else read and hashed),
    else checked now (read_ahead). The collector's work item: one batch, its tasks as columns (cheap to hand over)."""
    taken = []
    with opened_inbox(inbox) as folder, _SpoolReader(spool) as segments:
        for name, remembered in entries:
            entry, verdict = ((read_entry(inbox, name, max_bytes, folder), None) if remembered is None
                              else _remembered_entry(name, remembered, inbox, folder, segments, max_bytes))
            taken.append(read_ahead(entry, chain_id, verdict))
    return [SubmissionBatch.of(taken)]


def read_inbox(inbox: Path, memory: Path, max_bytes: int, limit: int, chain_id: str) -> SubmissionBatch:
    """The first `limit` inbox entries in name order, read ahead of intake: everything it does that needs no chain
    state, on every core from PARALLEL_FROM entries (workers read the files or the spool themselves, so only parsed
    entries cross over, the tasks as columns), with the verdicts remembered in `memory` for entries whose bytes have not changed."""
    remembered = load_admitted(memory, chain_id)
    names = waiting_names(inbox)[:limit]
    read = functools.partial(read_entries, inbox=inbox, spool=spool_of(memory), max_bytes=max_bytes, chain_id=chain_id)
    return SubmissionBatch.concat(map_chunks(read, [(name, remembered.get(name)) for name in names], CHUNK, PARALLEL_FROM))


def _remembered_entry(name: str, remembered: Remembered, inbox: Path, folder: int | None, segments: _SpoolReader,
                      max_bytes: int) -> tuple[Submission, bool | None]:
    """The entry, with the remembered verdict when its bytes are those checked: taken from the spool while its stamp is
    the one taken as they were read and the kept bytes hash to the checked digest, else read and hashed. None: check
    it now."""
    if remembered.stamp != NOT_KEPT and entry_stamp(inbox, name, folder) == remembered.stamp:
        raw = segments.read(remembered.kept)
        if raw is not None and len(raw) <= max_bytes and sha256_hex(raw) == remembered.digest:
            return Submission(submission_id_of(name), raw), remembered.verified
    entry = read_entry(inbox, name, max_bytes, folder)
    unchanged = entry.unreadable is None and sha256_hex(entry.raw) == remembered.digest
    return entry, remembered.verified if unchanged else None


class _SpoolReader:
    """Kept bytes by `segment:offset:length`, each segment opened once."""

    def __init__(self, spool: Path):
        self.spool = spool
        self.opened: dict[str, int | None] = {}

    def __enter__(self) -> _SpoolReader:
        return self

    def __exit__(self, *exc: object) -> None:
        for descriptor in self.opened.values():
            if descriptor is not None:
                os.close(descriptor)

    def read(self, kept: str) -> bytes | None:
        """The bytes, None when the segment is gone or shorter than the place says, or the place names no segment (only
        a segment's hex name: a garbled memory never sends the reader out of the spool)."""
        segment, offset, length = (kept.split(":") + ["", "", ""])[:3]
        if not (segment.isalnum() and segment.isascii() and offset.isdigit() and length.isdigit()):
            return None
        if segment not in self.opened:
            try:
                self.opened[segment] = os.open(self.spool / segment, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                self.opened[segment] = None
        descriptor, size = self.opened[segment], int(length)
        raw = None if descriptor is None else os.pread(descriptor, size, int(offset))
        return raw if raw is not None and len(raw) == size else None


def _write_segment(spool: Path, parts: list[bytes]) -> str:
    """Keep the bytes in one new segment of the spool, named by their hash and written in one rename; returns its name."""
    content = b"".join(parts)
    segment = sha256_hex(content)[:32]
    spool.mkdir(parents=True, exist_ok=True)
    temporary = spool / f".{segment}.{os.getpid()}.tmp"
    temporary.write_bytes(content)
    temporary.replace(spool / segment)
    return segment


def _lines(learnt: Sequence[tuple[str, Remembered]]) -> list[str]:
    return [f"{name}\t{digest}\t{VERDICT_TEXT[ok]}\t{stamp}\t{kept}\n" for name, (digest, ok, stamp, kept) in learnt]


def _rewrite(path: Path, chain_id: str, learnt: Sequence[tuple[str, Remembered]]) -> None:
    """Replace the memory in one rename, so a killed writer never leaves half a file, then drop the spool's segments
    it no longer refers to (a killed writer's leftovers too)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as memory_file:
        memory_file.write(f"{FORMAT}\t{chain_id}\n")
        memory_file.writelines(_lines(learnt))
    temporary.replace(path)
    spool = spool_of(path)
    referred = {remembered.kept.split(":")[0] for _, remembered in learnt}
    for segment in os.listdir(spool) if spool.is_dir() else []:
        if segment not in referred:
            (spool / segment).unlink(missing_ok=True)
