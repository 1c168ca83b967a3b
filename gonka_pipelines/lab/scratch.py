"""Scratch chains: a copy of a chain cut back to a height, in a folder of its own, that the lab may write freely (the
original is only ever read), and stored epochs re-run on it."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from gonka_pipelines.chain.lab import StoredSubmission
from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.local.inbox import restore_entries
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.params import GenesisParams
from gonka_pipelines.stages.environment import Log, quiet
from gonka_pipelines.stages.pipeline import run_epoch


def scratch_copy(layout: DataLayout, folder: Path, height: int) -> DataLayout:
    """Copy the chain's database and keys into `folder` (which must be empty or missing), share its content-addressed
    artifacts (checkpoints are only ever added, under their hash), and cut the copy back to `height`."""
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder}: the scratch folder must be empty (a fork or replay never overwrites)")
    scratch = DataLayout(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with ChainStore.open(layout.database, read_only=True):  # refuses a chain another process is writing
        shutil.copyfile(layout.database, scratch.database)
    shutil.copytree(layout.keys, scratch.keys)
    layout.artifacts.mkdir(parents=True, exist_ok=True)
    scratch.artifacts.symlink_to(layout.artifacts.resolve(), target_is_directory=True)
    with ChainStore.open(scratch.database) as store:
        store.truncate_after(height)
    return scratch


def rerun_epoch(store: ChainStore, scratch: DataLayout, epoch: int, submissions: Sequence[StoredSubmission], log: Log = quiet,
                genesis: GenesisParams | None = None) -> str:
    """Put an epoch's stored submissions back in the scratch chain's inbox, as the collector saw them, and run every
    stage of the epoch (under `genesis` when given); returns the block hash it seals."""
    restore_entries(scratch.inbox, ((s.submission_id, s.raw, s.reason, s.detail) for s in submissions))
    return run_epoch(store, scratch, epoch, log, genesis=genesis)
