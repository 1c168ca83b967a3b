"""The inbox: signed submissions as files, written atomically, named by content hash plus a copy number."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from gonka_pipelines.protocol.crypto import sha256_hex
from gonka_pipelines.protocol.intake import Submission


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
            if not (processed / f"{submission_id}.json").exists():
                try:
                    os.link(temporary, inbox / f"{submission_id}.json")
                    return submission_id
                except FileExistsError:
                    pass
            copy += 1
    finally:
        temporary.unlink()


def pending_submissions(inbox: Path) -> list[Submission]:
    """Every submission file waiting in the inbox, ordered by id."""
    if not inbox.exists():
        return []
    names = sorted(name for name in os.listdir(inbox) if name.endswith(".json"))
    return [Submission(name[: -len(".json")], (inbox / name).read_bytes()) for name in names]


def archive_submissions(inbox: Path, submission_ids: Iterable[str]) -> int:
    """Move consumed submissions to inbox/processed once their epoch is final; returns how many moved."""
    processed = inbox / "processed"
    processed.mkdir(parents=True, exist_ok=True)
    moved = 0
    for submission_id in submission_ids:
        name = f"{submission_id}.json"
        try:
            os.rename(inbox / name, processed / name)
        except FileNotFoundError:
            continue
        moved += 1
    return moved
