"""All stages of one epoch in order, without Dagster: for tests, benchmarks and scripts."""

from __future__ import annotations

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.stages.block import finalize_block, propose_block
from gonka_pipelines.stages.collect import run_collect
from gonka_pipelines.stages.environment import epoch_compute
from gonka_pipelines.stages.inference import run_task_execution, run_task_validation
from gonka_pipelines.stages.rewards import run_rewards
from gonka_pipelines.stages.sprint import (
    run_epoch_weights,
    run_sprint,
    run_sprint_validation,
)


def quiet(_: str) -> None:
    """A progress log that says nothing."""


def run_epoch(store: ChainStore, layout: DataLayout, epoch: int, log=quiet, device: str | None = None) -> str:
    """Collect → sprint → sprint validation → weights → execution → validation → rewards → block. Returns the block hash."""
    run_collect(store, layout, epoch)
    compute = epoch_compute(store, epoch, device)
    run_sprint(store, layout, epoch, log, compute)
    run_sprint_validation(store, layout, epoch, log, compute)
    run_epoch_weights(store, epoch)
    run_task_execution(store, layout, epoch, log, compute)
    run_task_validation(store, layout, epoch, log, compute)
    run_rewards(store, layout, epoch)
    propose_block(store, layout, epoch)
    return finalize_block(store, layout, epoch)
