"""Replay: rebuild one finalized epoch into a scratch chain from what the chain stores (the previous post-state, the
params, the epoch's submissions, the hosts and their behaviour) and check that it seals the same block."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gonka_pipelines.chain.lab import Divergence
from gonka_pipelines.chain.store import ChainError, ChainStore
from gonka_pipelines.lab.scratch import rerun_epoch, scratch_copy
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.block import BlockStatus
from gonka_pipelines.stages.environment import Log, quiet


@dataclass(frozen=True)
class Replay:
    """One replayed epoch: the hash the chain stores, the hash the replay sealed, and the first row that differs."""

    epoch: int
    stored_hash: str
    replayed_hash: str
    divergence: Divergence | None

    @property
    def identical(self) -> bool:
        return self.stored_hash == self.replayed_hash


def replay_epoch(layout: DataLayout, epoch: int, scratch: Path, log: Log = quiet) -> Replay:
    """Cut a scratch copy of the chain back to epoch - 1, put the epoch's stored submissions back in its inbox under
    their ids, run every stage, and compare the block; on a difference, name the first committed row that differs."""
    with ChainStore.open(layout.database, read_only=True) as chain:
        block = chain.block(epoch) if epoch > 0 else None
        if block is None or block["status"] != BlockStatus.FINALIZED:
            raise ChainError(f"epoch {epoch} has no finalized block to replay (finalized: 1..{chain.head().height})")
        submissions = chain.stored_submissions(epoch)
    work = scratch_copy(layout, scratch, epoch - 1)
    with ChainStore.open(work.database) as store:
        replayed = rerun_epoch(store, work, epoch, submissions, log)
    divergence = None
    if replayed != block["hash"]:
        with ChainStore.open(layout.database, read_only=True) as chain, ChainStore.open(work.database, read_only=True) as copy:
            divergence = chain.first_divergence(copy, epoch)
    return Replay(epoch, block["hash"], replayed, divergence)
