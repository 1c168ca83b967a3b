"""The inbox: signed submissions as files, written atomically, named by content hash plus a copy number.

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
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gonka_pipelines.protocol.crypto import sha256_hex
from gonka_pipelines.protocol.intake import Rejected, RejectReason, Submission

SUFFIX = ".json"
ESCAPED_NAME = "name-hex:"
"""Prefix of the id of a file whose name is not valid UTF-8: the rest is the name's bytes in hex."""


def write_submission(inbox: Path, raw: bytes) -> str:
    """Drop one submission into the inbox and return its id.

    The id is the content hash; a byte-identical resubmission (a replay) gets `-1`, `-2`, ... so it is
    kept and judged rather than merged. The file appears atomically (hard link of a finished temp file).
    """
    processed = inbox / "processed"
    inbox.mkdir(parents=True, exist_ok=True)
    digest = sha256_hex(raw)
    temporary = inbox / f".{digest}.{os.getpid()}.tmp"
    temporary.write_bytes(raw)
    try:
        copy = 0
        while True:
            submission_id = digest if copy == 0 else f"{digest}-{copy}"
            if not (processed / f"{submission_id}{SUFFIX}").exists():
                try:
                    os.link(temporary, inbox / f"{submission_id}{SUFFIX}")
                    return submission_id
                except FileExistsError:
                    pass
            copy += 1
    finally:
        temporary.unlink()


def submission_id_of(name: str) -> str:
    """The id of an inbox file name: its stem, or an escaped form when the name is not valid UTF-8."""
    stem = name[: -len(SUFFIX)]
    try:
        stem.encode("utf-8")
    except UnicodeEncodeError:
        return ESCAPED_NAME + os.fsencode(stem).hex()
    return stem


def file_name_of(submission_id: str) -> str:
    """The inbox file name of a submission id (the inverse of submission_id_of)."""
    if submission_id.startswith(ESCAPED_NAME):
        return os.fsdecode(bytes.fromhex(submission_id[len(ESCAPED_NAME):])) + SUFFIX
    return submission_id + SUFFIX


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
    path.write_bytes(raw + b"\0" if reason == RejectReason.TOO_LARGE else raw)  # kept: the first max bytes of more


def waiting_names(inbox: Path) -> list[str]:
    """Names of the entries waiting in the inbox (whatever their kind), in name order."""
    if not inbox.is_dir():
        return []
    return sorted(name for name in os.listdir(inbox) if name.endswith(SUFFIX))


def read_entry(inbox: Path, name: str, max_bytes: int, folder: int | None = None) -> Submission:
    """One inbox entry as a submission, or as an unreadable one that says why; never follows a link or blocks.
    `folder`: the inbox opened as a directory descriptor (opened_inbox), which spares a path per entry."""
    return read_stamped_entry(inbox, name, max_bytes, folder)[0]


def read_stamped_entry(inbox: Path, name: str, max_bytes: int,
                       folder: int | None = None) -> tuple[Submission, os.stat_result | None]:
    """read_entry, with the entry's status taken once its bytes were read (None: not a regular file read whole)."""
    submission_id = submission_id_of(name)

    def refused(reason: RejectReason, detail: str, raw: bytes = b"") -> tuple[Submission, None]:
        return Submission(submission_id, raw, Rejected(reason, detail)), None

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
        raw = _read_up_to(descriptor, max_bytes + 1)
        status = os.fstat(descriptor)
    finally:
        os.close(descriptor)
    if len(raw) > max_bytes:
        return refused(RejectReason.TOO_LARGE, f"larger than {max_bytes} bytes (only the first {max_bytes} are kept)", raw[:max_bytes])
    if submission_id.startswith(ESCAPED_NAME):
        return refused(RejectReason.BAD_FILE_NAME, "the file name is not valid UTF-8", raw)
    return Submission(submission_id, raw), status


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
    """Move consumed submissions to inbox/processed once their epoch is final, never replacing an archived entry
    (a second entry of the same name is kept beside it as NAME~N); returns how many moved. Names are resolved against
    the two folders' descriptors, and each move is one rename that refuses to replace (renameat2 RENAME_NOREPLACE),
    or a probe and a rename where the system lacks it: a million entries cost a million renames."""
    processed = inbox / "processed"
    processed.mkdir(parents=True, exist_ok=True)
    source = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY)
    target = os.open(processed, os.O_RDONLY | os.O_DIRECTORY)
    moved = 0
    try:
        for submission_id in submission_ids:
            name = file_name_of(submission_id)
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
