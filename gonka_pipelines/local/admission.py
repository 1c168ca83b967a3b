"""Reading the inbox ahead of intake on every core, with developer signatures checked as submissions arrive and
remembered, so an epoch does not spend its time on them (`gonka admit`, and the inbox sensor on each tick).

A node-local memory like verify-chain's (local/verified.py), not a trust anchor: one line per inbox entry with the
SHA-256 of the bytes that were checked and the verdict (a bundle's: one per line) under one chain id. The collector
takes a verdict only for an entry whose bytes still hash the same (anything else is checked in the epoch), and
verify-chain re-verifies every task's signature from its committed row, so a forged memory cannot go unnoticed.

The checked entries are kept too, read ahead (bytes, parsed fields, verdict and task id as Arrow columns), in a spool
of segments beside the memory, with each entry's stamp (inode, size, times) taken as its bytes were read: while the
stamp is unchanged the collector takes the entry's row from the spool instead of reading and parsing a million small
files again. Only an entry whose last change predates the check's clock probe is kept, so any later
write or replacement gives it another stamp (its change time can only move past the probe's)."""

from __future__ import annotations

import functools
import io
import os
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import polars as pl

from gonka_pipelines.local.cores import map_chunks
from gonka_pipelines.local.inbox import (
    bundle_bytes,
    entry_stamp,
    is_bundle,
    line_number,
    opened_inbox,
    read_entry,
    read_stamped_entry,
    stamp_of,
    submission_id_of,
    waiting_names,
)
from gonka_pipelines.protocol.crypto import sha256_hex
from gonka_pipelines.protocol.intake import READY_SCHEMA, Submission, SubmissionBatch, read_ahead

FORMAT = "gonka-admitted/3"
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
    verdicts: tuple[bool | None, ...]
    """Of each submission the entry holds (one, or a bundle's lines): whether its signature verifies; None: the bytes
    do not read or parse as a submission (the collector rejects them)."""
    stamp: str
    """The entry's stamp (inbox.stamp_of) when its bytes are kept, else NOT_KEPT."""
    kept: str
    """Where the entry is kept, `segment:row` in the spool (a bundle's lines from that row on); else NOT_KEPT or
    KEEP_LATER."""


Memory = dict[str, Remembered]
"""Inbox entry name -> what was learnt of it."""


def spool_of(memory: Path) -> Path:
    """The folder beside the memory that keeps the checked bytes, in segments named by their content's hash."""
    return memory.with_suffix(".spool")


def load_admitted(path: Path, chain_id: str) -> Memory:
    """What is remembered for this chain id; nothing when the file is missing, unreadable or of another chain (a line
    cut short by a killed writer is skipped)."""
    return {name: remembered for name, line in memory_lines(path, chain_id).items()
            if (remembered := remembered_of(line)) is not None}


def memory_lines(path: Path, chain_id: str) -> dict[str, str]:
    """The memory's lines for this chain id by entry name, the rest of each line unparsed (remembered_of): the
    collector hands them to its workers as they are, a million lines without a tuple each."""
    try:
        with path.open(encoding="utf-8") as memory_file:
            if memory_file.readline() != f"{FORMAT}\t{chain_id}\n":
                return {}
            return dict(line.split("\t", 1) for line in memory_file if "\t" in line)
    except (OSError, UnicodeDecodeError):
        return {}


def remembered_of(line: str | None) -> Remembered | None:
    """What a memory line (less its name, line break included) remembers; None for no line, or one cut short or
    garbled."""
    fields = line[:-1].split("\t") if line and line[-1] == "\n" else []
    if len(fields) != 4 or len(fields[0]) != 64 or not fields[1] or fields[1].strip("".join(TEXT_VERDICT)):
        return None
    digest, verdicts, stamp, kept = fields
    return Remembered(digest, tuple(map(TEXT_VERDICT.__getitem__, verdicts)), stamp, kept)


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
    """(name, what was learnt) of each entry, those last changed before `settled_before` kept read ahead in one new
    spool segment; an entry remembered with the same bytes keeps its verdict (it is read again only to keep it). A
    pool's work item."""
    learnt: list[tuple[str, str, tuple[bool | None, ...], str, str]] = []
    kept: list[Submission] = []
    with opened_inbox(inbox) as folder:
        for name, remembered in entries:
            submissions, digest, status = read_stamped_entry(inbox, name, max_bytes, folder)
            known = _unchanged_verdicts(remembered, digest, len(submissions))
            settled = status is not None and settled_before is not None and status.st_ctime_ns < settled_before
            if known is not None and not settled:
                verdicts = known
            else:
                ahead = _each_read_ahead(submissions, known, chain_id)
                verdicts = tuple(submission.verified for submission in ahead)
            if status is None or settled_before is None:
                learnt.append((name, digest, verdicts, NOT_KEPT, NOT_KEPT))
            elif not settled:
                learnt.append((name, digest, verdicts, NOT_KEPT, KEEP_LATER))
            else:
                learnt.append((name, digest, verdicts, stamp_of(status), str(len(kept))))
                kept.extend(ahead)
    segment = _write_segment(spool, kept) if kept else ""
    return [(name, Remembered(digest, verdicts, stamp, f"{segment}:{row}" if row.isdigit() else row))
            for name, digest, verdicts, stamp, row in learnt]


def admit(inbox: Path, path: Path, chain_id: str, max_bytes: int, limit: int) -> tuple[int, int]:
    """Check up to `limit` waiting entries, in name order: those the memory lacks, and those whose bytes it keeps
    later (read again to keep them, their verdict kept while the bytes hash the same); the memory forgets entries no
    longer waiting (taken by an epoch) once they are half of it, and the spool the segments it no longer refers to.
    Returns (signatures checked: the new entries' submissions, submissions waiting: a bundle's lines each once
    remembered)."""
    names = waiting_names(inbox)
    memory = load_admitted(path, chain_id)
    # a name with a tab, a line break or a byte that is not UTF-8 would not fit on a line: checked in the epoch instead
    todo = [(name, memory.get(name)) for name in names
            if (name not in memory or memory[name].kept == KEEP_LATER) and name.isprintable()][:limit]
    settled_before = None if not todo or (probe := clock_probe(inbox)) is None else probe - SETTLED_NS
    check = functools.partial(check_entries, inbox=inbox, spool=spool_of(path), max_bytes=max_bytes, chain_id=chain_id,
                              settled_before=settled_before)
    checked = map_chunks(check, todo, CHUNK, PARALLEL_FROM, [_estimated_size(inbox, name) for name, _ in todo])
    waiting, rechecked = set(names), {name for name, _ in todo}
    kept = [(name, remembered) for name, remembered in memory.items() if name in waiting and name not in rechecked]
    stale = len(memory.keys() - waiting)
    if stale * 2 > len(memory) or (checked and not memory):  # compaction, or a missing, foreign or garbled file
        _rewrite(path, chain_id, [*kept, *checked])
    elif checked:
        with path.open("a", encoding="utf-8") as memory_file:
            memory_file.writelines(_lines(checked))
    new = {name for name, remembered in todo if remembered is None}
    sizes = {name: len(remembered.verdicts) for name, remembered in [*kept, *checked]}
    return sum(sizes[name] for name in new if name in sizes), sum(sizes.get(name, 1) for name in names)


def read_entries(entries: Sequence[tuple[str, str | None]], inbox: Path, spool: Path, max_bytes: int,
                 chain_id: str) -> list[SubmissionBatch]:
    """Inbox entries read ahead, each with its signature's verdict: taken from the spool while the entry's stamp is
    the one taken as its bytes were read and the kept bytes hash to the checked digest; else read from the inbox, with
    the remembered verdict while its bytes hash the same, or checked now (read_ahead). The collector's work item: one
    batch, its tasks as columns (cheap to hand over)."""
    read: list[Submission] = []
    wanted: list[tuple[str, Remembered, str, int]] = []
    with opened_inbox(inbox) as folder:
        for name, line in entries:
            remembered = remembered_of(line)
            place = _place(remembered.kept) if remembered is not None and remembered.stamp != NOT_KEPT else None
            if remembered is not None and place is not None and entry_stamp(inbox, name, folder) == remembered.stamp:
                wanted.append((name, remembered, *place))
            else:
                read.extend(_read_ahead(name, remembered, inbox, folder, max_bytes, chain_id))
        kept, missed = _take_kept(spool, wanted, chain_id)
        for name, remembered in missed:
            read.extend(_read_ahead(name, remembered, inbox, folder, max_bytes, chain_id))
    fresh = SubmissionBatch.of(read)
    return [SubmissionBatch(pl.concat([kept.tasks, fresh.tasks]), [*kept.others, *fresh.others])]


def read_inbox(inbox: Path, memory: Path, max_bytes: int, limit: int, chain_id: str) -> SubmissionBatch:
    """The inbox entries an epoch takes (taken_names: up to `limit` submissions in name order), read ahead of intake:
    everything it does that needs no chain state, on every core from PARALLEL_FROM entries (workers read the files or
    the spool themselves, so only parsed entries cross over, the tasks as columns), with the verdicts remembered in
    `memory` for entries whose bytes have not changed (each worker parses the memory lines of its entries). Entries,
    not submissions, decide the pool: a bundle's rows come from the spool in bulk, and handing a million of them back
    from workers costs twice what taking them here does (docs/performance.md, "Bundles")."""
    lines = memory_lines(memory, chain_id)
    names = taken_names(inbox, lines, max_bytes, limit)
    read = functools.partial(read_entries, inbox=inbox, spool=spool_of(memory), max_bytes=max_bytes, chain_id=chain_id)
    return SubmissionBatch.concat(map_chunks(read, [(name, lines.get(name)) for name in names], CHUNK, PARALLEL_FROM))


def taken_names(inbox: Path, lines: dict[str, str], max_bytes: int, limit: int) -> list[str]:
    """The waiting entries an epoch takes: in name order while the submissions they hold number at most `limit`, a
    bundle whole (one that alone holds more is taken alone). A bundle's lines are counted from the memory while its
    stamp is the remembered one, else by reading it."""
    taken: list[str] = []
    count = 0
    for name in waiting_names(inbox):
        size = _submission_count(inbox, name, lines.get(name), max_bytes) if is_bundle(name) else 1
        if taken and count + size > limit:
            break
        taken.append(name)
        count += size
        if count >= limit:
            break
    return taken


def _submission_count(inbox: Path, name: str, line: str | None, max_bytes: int) -> int:
    """How many submissions a bundle holds (one when it is refused whole)."""
    remembered = remembered_of(line)
    if remembered is not None and remembered.stamp != NOT_KEPT and entry_stamp(inbox, name) == remembered.stamp:
        return len(remembered.verdicts)
    return len(read_entry(inbox, name, max_bytes))


TYPICAL_SUBMISSION_BYTES = 600
"""About what a signed task takes (intake.SUBMISSION_OVERHEAD_BYTES): a bundle's share of the checking, from its size."""


def _estimated_size(inbox: Path, name: str) -> int:
    """How many submissions an entry likely holds, to share the checking out: one, or a bundle's bytes over a typical
    task's (its lines are counted only once it is read)."""
    if not is_bundle(name):
        return 1
    try:
        return os.lstat(inbox / name).st_size // TYPICAL_SUBMISSION_BYTES + 1
    except OSError:
        return 1


def _read_ahead(name: str, remembered: Remembered | None, inbox: Path, folder: int | None, max_bytes: int,
                chain_id: str) -> list[Submission]:
    """The entry's submissions read from the inbox and read ahead, with the remembered verdicts while its bytes hash to
    the checked digest (else checked now)."""
    submissions, digest, _ = read_stamped_entry(inbox, name, max_bytes, folder)
    return _each_read_ahead(submissions, _unchanged_verdicts(remembered, digest, len(submissions)), chain_id)


def _unchanged_verdicts(remembered: Remembered | None, digest: str, count: int) -> tuple[bool | None, ...] | None:
    """The remembered verdicts of an entry whose bytes hash to the checked digest, one per submission it holds; None
    for an entry never checked or changed since."""
    if remembered is not None and remembered.digest == digest and len(remembered.verdicts) == count:
        return remembered.verdicts
    return None


def _each_read_ahead(submissions: Sequence[Submission], verdicts: tuple[bool | None, ...] | None,
                     chain_id: str) -> list[Submission]:
    """An entry's submissions read ahead, with their verdicts when known (else their signatures checked now)."""
    return [read_ahead(submission, chain_id, verdicts[line] if verdicts is not None else None)
            for line, submission in enumerate(submissions)]


def _place(kept: str) -> tuple[str, int] | None:
    """(segment, row) of a kept entry; None for anything else, or a place that names no segment (only a segment's hex
    name: a garbled memory never sends the reader out of the spool)."""
    segment, _, row = kept.partition(":")
    return (segment, int(row)) if segment.isalnum() and segment.isascii() and row.isdigit() else None


SEGMENT_SCHEMA: dict[str, type[pl.DataType]] = {**READY_SCHEMA, "ready": pl.Boolean}
"""A segment's rows: READY_SCHEMA's columns, filled for a well-formed task (ready) and only submission_id and raw for
anything else (read ahead again when taken: malformed entries and training orders are few)."""


def _take_kept(spool: Path, wanted: Sequence[tuple[str, Remembered, str, int]],
               chain_id: str) -> tuple[SubmissionBatch, list[tuple[str, Remembered]]]:
    """The wanted entries (name, what was learnt, segment, row) the spool still keeps as checked, as a batch read ahead
    with their remembered verdicts (entries kept as bytes only read ahead again), each segment read once; and the
    (name, what was learnt) of those it does not keep (a missing or altered segment, a row of another entry, of bytes
    that do not hash to the checked digest or of another verdict)."""
    frames, missed = [], []
    verdicts: dict[str, tuple[bool | None, ...]] = {}  # by entry id: a bundle's for all its lines at once
    by_segment: dict[str, list[tuple[str, Remembered, int]]] = {}
    for name, remembered, segment, row in wanted:
        by_segment.setdefault(segment, []).append((name, remembered, row))
    for entries, frame in zip(by_segment.values(), _read_segments(spool, list(by_segment)), strict=True):
        ids, raws, verified = ((frame["submission_id"].to_list(), frame["raw"].to_list(), frame["verified"].to_list())
                               if frame is not None else ([], [], []))
        rows: list[int] = []
        for name, remembered, row in entries:
            end = row + len(remembered.verdicts)
            if (end <= len(ids) and ids[row:end] == _ids_of(name, len(remembered.verdicts))
                    and _hashes_to(raws[row:end], remembered.digest, is_bundle(name))
                    and all(verified[at] in (verdict, None) for at, verdict in zip(range(row, end), remembered.verdicts))):
                rows.extend(range(row, end))
                verdicts[submission_id_of(name)] = remembered.verdicts
            else:
                missed.append((name, remembered))
        if frame is not None and rows:
            frames.append(frame[rows])
    taken = pl.concat(frames) if frames else pl.DataFrame(schema=SEGMENT_SCHEMA)
    others = [read_ahead(Submission(sid, raw), chain_id, _remembered_verdict(verdicts, sid)) for sid, raw in
              taken.filter(~pl.col("ready")).select("submission_id", "raw").iter_rows()]
    return SubmissionBatch(taken.filter(pl.col("ready")).select(*READY_SCHEMA), others), missed


def _remembered_verdict(verdicts: dict[str, tuple[bool | None, ...]], submission_id: str) -> bool | None:
    """A kept submission's remembered verdict, from its entry's (a bundle's line: the line's)."""
    line = line_number(submission_id)
    return verdicts[submission_id][0] if line is None else verdicts[submission_id[:-len(str(line))]][line]


def _ids_of(name: str, count: int) -> list[str]:
    """The submission ids an entry of `count` submissions holds: its own, or its bundle's lines'."""
    entry = submission_id_of(name)
    return [f"{entry}{line}" for line in range(count)] if is_bundle(name) else [entry]


def _hashes_to(raws: Sequence[bytes], digest: str, bundle: bool) -> bool:
    """Whether the kept bytes are those the digest was taken of: the entry's, or a bundle's lines with their line breaks
    (the last with or without)."""
    if not bundle:
        return len(raws) == 1 and sha256_hex(raws[0]) == digest
    text = bundle_bytes(raws)
    return sha256_hex(text) == digest or sha256_hex(text[:-1]) == digest


def _read_segments(spool: Path, segments: Sequence[str]) -> Iterator[pl.DataFrame | None]:
    """Each segment (_read_segment) in order, the next one read, hashed and parsed on a thread while the caller takes
    from this one (both release the GIL in SHA-256 and the IPC reader); one segment ahead, not all at once."""
    if not segments:
        return
    with ThreadPoolExecutor(1) as pool:
        upcoming = pool.submit(_read_segment, spool, segments[0])
        for following in [*segments[1:], None]:
            frame = upcoming.result()
            if following is not None:
                upcoming = pool.submit(_read_segment, spool, following)
            yield frame


def _read_segment(spool: Path, segment: str) -> pl.DataFrame | None:
    """A segment's rows; None when it is gone, or its content no longer hashes to its name."""
    try:
        content = (spool / segment).read_bytes()
    except OSError:
        return None
    if len(segment) != SEGMENT_NAME_LENGTH or sha256_hex(content)[:SEGMENT_NAME_LENGTH] != segment:
        return None
    return pl.read_ipc(content)


SEGMENT_NAME_LENGTH = 32
"""Hex digits of a segment's content hash in its name."""


def _write_segment(spool: Path, kept: Sequence[Submission]) -> str:
    """Keep the entries read ahead in one new segment of the spool (Arrow IPC, a row each in the order given), named by
    its content's hash and written in one rename; returns its name."""
    batch = SubmissionBatch.of(kept)
    rest = pl.DataFrame({"submission_id": [s.submission_id for s in batch.others], "raw": [s.raw for s in batch.others]},
                        schema={"submission_id": pl.String, "raw": pl.Binary})
    frame = pl.concat([batch.tasks.with_columns(ready=pl.lit(True)), rest.with_columns(ready=pl.lit(False))],
                      how="diagonal_relaxed").select(*SEGMENT_SCHEMA)
    row_of = {submission_id: row for row, submission_id in enumerate(frame["submission_id"])}
    buffer = io.BytesIO()
    frame[[row_of[s.submission_id] for s in kept]].write_ipc(buffer)
    content = buffer.getvalue()
    segment = sha256_hex(content)[:SEGMENT_NAME_LENGTH]
    spool.mkdir(parents=True, exist_ok=True)
    temporary = spool / f".{segment}.{os.getpid()}.tmp"
    temporary.write_bytes(content)
    temporary.replace(spool / segment)
    return segment


def _lines(learnt: Sequence[tuple[str, Remembered]]) -> list[str]:
    return [f"{name}\t{digest}\t{''.join(map(VERDICT_TEXT.__getitem__, verdicts))}\t{stamp}\t{kept}\n"
            for name, (digest, verdicts, stamp, kept) in learnt]


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
