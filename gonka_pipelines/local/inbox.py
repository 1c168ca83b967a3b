"""The inbox: signed submissions as files, written atomically, named by content hash plus a copy number.

An entry is one submission (`NAME.json`), or a bundle of them (`NAME.jsonl`, one per line, as a gateway batches its
developers' requests): each line is judged on its own under the id `NAME/LINE` (a file name never holds a `/`), and
a bundle is taken, archived and replayed whole, so a million tasks need not be a million files.

Whatever else lands in the folder is read defensively: only regular files, never through a symbolic link, never
more than a size limit, and never blocking (a FIFO), so no single entry can fail, hang or leak into an epoch. An
entry that is not a readable submission is still taken, as a rejection with its reason (and its bytes, when it
has any), so nothing in the inbox is silently skipped.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from gonka_pipelines.protocol.crypto import sha256_hex
from gonka_pipelines.protocol.intake import Rejected, RejectReason, Submission

SUFFIX = ".json"
BUNDLE_SUFFIX = ".jsonl"
LINE_MARK = "/"
"""Between a bundle's id and a line's number in the line's submission id; a bundle refused whole has the id `NAME/`."""
MAX_BUNDLE_LINES = 10_000
"""The most submissions a bundle holds: one with more is refused whole."""
MAX_BUNDLE_BYTES = 64 * 2**20
"""The most bytes a bundle holds (fewer where MAX_BUNDLE_LINES lines of the largest submission take fewer): one with
more is refused whole, unread past the limit."""
ESCAPED_NAME = "name-hex:"
"""Prefix of the id of a file whose name is not valid UTF-8: the rest is the name's bytes in hex."""


def write_submission(inbox: Path, raw: bytes) -> str:
    """Drop one submission into the inbox and return its id.

    The id is the content hash; a byte-identical resubmission (a replay) gets `-1`, `-2`, ... so it is
    kept and judged rather than merged. The file appears atomically (hard link of a finished temp file).
    """
    return _write_entry(inbox, raw, SUFFIX)


def write_bundle(inbox: Path, raws: Sequence[bytes]) -> str:
    """Drop submissions into the inbox as one bundle (a line each) and return the bundle's id: line i is judged as
    the submission `ID/i`. Raises ValueError for an empty bundle, one over MAX_BUNDLE_LINES or a line break inside one."""
    if not 0 < len(raws) <= MAX_BUNDLE_LINES or any(b"\n" in raw for raw in raws):
        raise ValueError(f"a bundle holds 1..{MAX_BUNDLE_LINES} submissions, none with a line break in its bytes")
    return _write_entry(inbox, bundle_bytes(raws), BUNDLE_SUFFIX)


def bundle_bytes(raws: Iterable[bytes]) -> bytes:
    """A bundle's bytes: each submission on a line of its own, every line ended by a line break."""
    return b"".join(raw + b"\n" for raw in raws)


def _write_entry(inbox: Path, raw: bytes, suffix: str) -> str:
    """Write the bytes as an entry named by their hash (and a copy number for a replay: one taken earlier is in
    processed/) and return its stem."""
    processed = inbox / "processed"
    inbox.mkdir(parents=True, exist_ok=True)
    digest = sha256_hex(raw)
    temporary = inbox / f".{digest}.{os.getpid()}.tmp"
    temporary.write_bytes(raw)
    try:
        copy = 0
        while True:
            stem = digest if copy == 0 else f"{digest}-{copy}"
            if not (processed / f"{stem}{suffix}").exists():
                try:
                    os.link(temporary, inbox / f"{stem}{suffix}")
                    return stem
                except FileExistsError:
                    pass
            copy += 1
    finally:
        temporary.unlink()


def is_bundle(name: str) -> bool:
    """Whether an inbox entry's name is a bundle's."""
    return name.endswith(BUNDLE_SUFFIX)


def submission_id_of(name: str) -> str:
    """The id of an inbox file name: its stem (a bundle's ends in LINE_MARK), or an escaped form when the name is not
    valid UTF-8."""
    bundle = is_bundle(name)
    stem = name[: -len(BUNDLE_SUFFIX if bundle else SUFFIX)]
    try:
        stem.encode("utf-8")
    except UnicodeEncodeError:
        stem = ESCAPED_NAME + os.fsencode(stem).hex()
    return stem + LINE_MARK if bundle else stem


def file_name_of(submission_id: str) -> str:
    """The inbox file name of a submission id (the inverse of submission_id_of; a bundle line's id names its bundle)."""
    stem, mark, _ = submission_id.partition(LINE_MARK)
    if stem.startswith(ESCAPED_NAME):
        stem = os.fsdecode(bytes.fromhex(stem[len(ESCAPED_NAME):]))
    return stem + (BUNDLE_SUFFIX if mark else SUFFIX)


def line_number(submission_id: str) -> int | None:
    """The line of its bundle a submission id names; None for a submission of its own or a bundle refused whole."""
    _, _, line = submission_id.partition(LINE_MARK)
    return int(line) if line else None


def restore_entries(inbox: Path, entries: Iterable[tuple[str, bytes, str, str]]) -> None:
    """Put back the inbox entries an epoch took, (submission id, bytes, reason, detail) each, as the collector found
    them (a replay's input): restore_entry for each, a bundle's lines in one file in line order (a too-large line
    padded past the limit again)."""
    bundles: dict[str, list[tuple[int, bytes]]] = {}
    for submission_id, raw, reason, detail in entries:
        line = line_number(submission_id)
        if line is None:
            restore_entry(inbox, submission_id, raw, reason, detail)
        else:
            bundles.setdefault(file_name_of(submission_id), []).append((line, raw + _excess(submission_id, reason)))
    for name, lines in bundles.items():
        inbox.mkdir(parents=True, exist_ok=True)
        (inbox / name).write_bytes(bundle_bytes(raw for _, raw in sorted(lines)))


def restore_entry(inbox: Path, submission_id: str, raw: bytes, reason: str = "", detail: str = "") -> None:
    """Put back an inbox entry an epoch took, as the collector found it (a replay's input): a file of its bytes under
    its id, or, for an entry refused before it was read, one of the same kind (a directory, a FIFO, a dangling link, a
    file over the size limit). Raises ValueError for a kind that cannot be made again (a device, an unreadable file)."""
    inbox.mkdir(parents=True, exist_ok=True)
    path = inbox / file_name_of(submission_id)
    if reason == RejectReason.NOT_A_FILE:
        makers = {"a directory,": os.mkdir, "a FIFO,": os.mkfifo, "a symbolic link": lambda p: os.symlink("missing", p)}
        maker = next((make for kind, make in makers.items() if kind in detail), None)
        if maker is None:
            raise ValueError(f"inbox entry {submission_id}: {detail!r} cannot be made again")
        maker(path)
        return
    path.write_bytes(raw + _excess(submission_id, reason))


def _excess(submission_id: str, reason: str) -> bytes:
    """What to add to the kept first bytes of an entry or line refused as too large for it to be refused again: a
    byte past the limit, or, for a bundle refused whole, more lines than a bundle may hold."""
    if reason != RejectReason.TOO_LARGE:
        return b""
    return b"\n" * (MAX_BUNDLE_LINES + 1) if submission_id.endswith(LINE_MARK) else b"\0"


def waiting_names(inbox: Path) -> list[str]:
    """Names of the entries waiting in the inbox (whatever their kind; submissions and bundles), in name order."""
    if not inbox.is_dir():
        return []
    return sorted(name for name in os.listdir(inbox) if name.endswith((SUFFIX, BUNDLE_SUFFIX)))


def read_entry(inbox: Path, name: str, max_bytes: int, folder: int | None = None) -> list[Submission]:
    """The submissions an inbox entry holds (one, or a bundle's lines), or one unreadable submission that says why;
    never follows a link or blocks. `folder`: the inbox opened as a directory descriptor (opened_inbox), which spares a
    path per entry."""
    return read_stamped_entry(inbox, name, max_bytes, folder).submissions


class ReadEntry(NamedTuple):
    """An inbox entry as read: its submissions, the SHA-256 of the bytes read (or kept, for an entry refused whole) and
    its status taken once its bytes were read (None: not a regular file read whole)."""

    submissions: list[Submission]
    digest: str
    status: os.stat_result | None


def read_stamped_entry(inbox: Path, name: str, max_bytes: int, folder: int | None = None) -> ReadEntry:
    """read_entry, with the digest of the bytes and the entry's status (ReadEntry). A bundle larger than its lines
    could be under `max_bytes` each, or of more than MAX_BUNDLE_LINES lines, or empty, is refused whole; a line over
    `max_bytes` on its own."""
    submission_id = submission_id_of(name)
    bundle = submission_id.endswith(LINE_MARK)
    limit = min((max_bytes + 1) * MAX_BUNDLE_LINES, MAX_BUNDLE_BYTES) if bundle else max_bytes

    def refused(reason: RejectReason, detail: str, raw: bytes = b"") -> ReadEntry:
        return ReadEntry([Submission(submission_id, raw, Rejected(reason, detail))], sha256_hex(raw), None)

    try:
        descriptor = os.open(name if folder is not None else inbox / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK,
                             dir_fd=folder)
    except OSError as error:
        kind = "a symbolic link (links are never followed)" if os.path.islink(inbox / name) else f"unreadable ({error.strerror})"
        return refused(RejectReason.NOT_A_FILE, f"the inbox entry is {kind}")
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            return refused(RejectReason.NOT_A_FILE, f"the inbox entry is a {_kind(mode)}, not a regular file")
        raw = _read_up_to(descriptor, limit + 1)
        status = os.fstat(descriptor)
    finally:
        os.close(descriptor)
    lines = _lines_of(raw) if bundle and len(raw) <= limit else []
    if len(raw) > limit or len(lines) > MAX_BUNDLE_LINES:
        size = f"a bundle of more than {MAX_BUNDLE_LINES} lines or {limit} bytes" if bundle else f"larger than {max_bytes} bytes"
        return refused(RejectReason.TOO_LARGE, f"{size} (only the first {max_bytes} are kept)", raw[:max_bytes])
    if submission_id.startswith(ESCAPED_NAME):
        return refused(RejectReason.BAD_FILE_NAME, "the file name is not valid UTF-8" + (
            f" (only the first {max_bytes} bytes are kept)" if len(raw) > max_bytes else ""), raw[:max_bytes])
    if not bundle:
        return ReadEntry([Submission(submission_id, raw)], sha256_hex(raw), status)
    if not lines:
        return refused(RejectReason.MALFORMED, "an empty bundle (no line)")
    return ReadEntry([_line(f"{submission_id}{number}", line, max_bytes) for number, line in enumerate(lines)],
                     sha256_hex(raw), status)


def _lines_of(raw: bytes) -> list[bytes]:
    """A bundle's lines: its bytes split at each line break, the last line with or without one."""
    lines = raw.split(b"\n")
    return lines[:-1] if lines[-1] == b"" else lines


def _line(submission_id: str, raw: bytes, max_bytes: int) -> Submission:
    """One line of a bundle as a submission, refused when it is longer than a submission may be."""
    if len(raw) > max_bytes:
        return Submission(submission_id, raw[:max_bytes], Rejected(
            RejectReason.TOO_LARGE, f"larger than {max_bytes} bytes (only the first {max_bytes} are kept)"))
    return Submission(submission_id, raw)


def stamp_of(status: os.stat_result) -> str:
    """What tells a regular file's bytes apart without reading them, provided its last change predates the moment they
    were read (local/admission.py): device, inode, size, modification and change times."""
    return f"{status.st_dev}:{status.st_ino}:{status.st_size}:{status.st_mtime_ns}:{status.st_ctime_ns}"


def entry_stamp(inbox: Path, name: str, folder: int | None = None) -> str | None:
    """stamp_of the entry (a link's own status, never followed), None when it is missing or not a regular file."""
    try:
        status = os.stat(name, dir_fd=folder, follow_symlinks=False) if folder is not None else os.lstat(inbox / name)
    except OSError:
        return None
    return stamp_of(status) if stat.S_ISREG(status.st_mode) else None


@contextmanager
def opened_inbox(inbox: Path) -> Iterator[int | None]:
    """The inbox opened as a directory descriptor, for reading entries by name (resolving a path per entry costs more
    than the read itself at a million entries); None when it cannot be opened, and entries are read by path."""
    try:
        folder: int | None = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        folder = None
    try:
        yield folder
    finally:
        if folder is not None:
            os.close(folder)


def _read_up_to(descriptor: int, limit: int) -> bytes:
    """Up to `limit` bytes, to the end of the file: os.read until it returns nothing (a buffered file object costs
    more than the read itself at a million entries)."""
    chunks: list[bytes] = []
    while limit > 0 and (chunk := os.read(descriptor, limit)):
        chunks.append(chunk)
        limit -= len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "special file"


def archive_submissions(inbox: Path, submission_ids: Iterable[str]) -> int:
    """Move consumed submissions to inbox/processed once their epoch is final (a bundle whole, once), never replacing
    an archived entry (a second entry of the same name is kept beside it as NAME~N); returns how many entries moved. Names are resolved against
    the two folders' descriptors, and each move is one rename that refuses to replace (renameat2 RENAME_NOREPLACE),
    or a probe and a rename where the system lacks it: a million entries cost a million renames."""
    processed = inbox / "processed"
    processed.mkdir(parents=True, exist_ok=True)
    source = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY)
    target = os.open(processed, os.O_RDONLY | os.O_DIRECTORY)
    moved = 0
    try:
        for name in dict.fromkeys(map(file_name_of, submission_ids)):  # a bundle once, whichever of its lines
            archived, copy = name, 0
            while (outcome := _move_unless_taken(name, archived, source, target)) is _TAKEN:
                copy += 1
                archived = f"{name}~{copy}"
            moved += outcome is _MOVED
    finally:
        os.close(source)
        os.close(target)
    return moved


_MOVED, _TAKEN, _GONE = "moved", "taken", "gone"
_RENAME_NOREPLACE = 1
_LIBC = ctypes.CDLL(None, use_errno=True)
_renameat2: Any = getattr(_LIBC, "renameat2", None)


def _move_unless_taken(name: str, archived: str, source: int, target: int) -> str:
    """Rename `name` in the source folder to `archived` in the target folder unless that name is taken there:
    _MOVED, _TAKEN, or _GONE when the entry is not in the source (archived by an earlier, interrupted attempt)."""
    global _renameat2
    if _renameat2 is not None:
        encoded = os.fsencode(name)
        if _renameat2(source, encoded, target, encoded if archived == name else os.fsencode(archived), _RENAME_NOREPLACE) == 0:
            return _MOVED
        error = ctypes.get_errno()
        if error in (errno.EEXIST, errno.ENOENT):
            return _TAKEN if error == errno.EEXIST else _GONE
        if error not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(error, os.strerror(error), name)
        _renameat2 = None  # this file system or kernel cannot refuse to replace: probe first from here on
    if _entry_exists(archived, target):
        return _TAKEN
    try:
        os.rename(name, archived, src_dir_fd=source, dst_dir_fd=target)
    except FileNotFoundError:
        return _GONE
    return _MOVED


def _entry_exists(name: str, folder: int) -> bool:
    """Whether the folder (a descriptor) holds an entry of this name, links included and never followed."""
    try:
        os.lstat(name, dir_fd=folder)
    except FileNotFoundError:
        return False
    return True
