"""The epoch's stages in order: the one list that the pipeline, the Dagster assets, the tests and the bench iterate."""

from __future__ import annotations

import dataclasses
import functools
import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gonka_pipelines.stages.block import finalize_block, propose_block
from gonka_pipelines.stages.collect import run_collect
from gonka_pipelines.stages.environment import EpochEnvironment, Log, OpenChain
from gonka_pipelines.stages.inference import run_task_execution, run_task_validation
from gonka_pipelines.stages.rewards import run_rewards
from gonka_pipelines.stages.sprint import run_epoch_weights, run_sprint, run_sprint_validation

StageRun = Callable[[EpochEnvironment, OpenChain, Log], Any]


def cyclic_gc_paused(run: StageRun) -> StageRun:
    """A bookkeeping stage run with Python's cyclic collector paused: at scale it builds millions of short-lived acyclic
    objects (rows, parsed documents) that refcounting frees, and every full collection on the way walks all of them
    (building a million parsed submissions: 1.6 µs each paused, 3.4 µs collected). Stages that run models keep it on."""

    @functools.wraps(run)
    def paused(env: EpochEnvironment, open_chain: OpenChain, log: Log) -> Any:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return run(env, open_chain, log)
        finally:
            if was_enabled:
                gc.enable()

    return paused


YOUNG_COLLECTION_EVERY = 50_000
"""A model stage's young collections: one per this many net allocations (Python's default is 700)."""


def cyclic_gc_on_a_frozen_heap(run: StageRun) -> StageRun:
    """A stage that runs models keeps the cyclic collector (a model's objects may form cycles that hold its memory), but
    the objects alive when it starts are frozen out of its collections and young collections come less often: its full
    collections walk what the stage builds, not the epoch's environment again (sprint validation at 10,000 hosts: about
    0.4 s of 2 s). Nothing may wait on the collector meanwhile: a failed Ray pool's actors are killed, not left to it."""

    @functools.wraps(run)
    def frozen(env: EpochEnvironment, open_chain: OpenChain, log: Log) -> Any:
        thresholds, owner_froze = gc.get_threshold(), gc.get_freeze_count() > 0
        gc.freeze()
        gc.set_threshold(YOUNG_COLLECTION_EVERY, *thresholds[1:])
        try:
            return run(env, open_chain, log)
        finally:
            gc.set_threshold(*thresholds)
            if not owner_froze:
                gc.unfreeze()

    return frozen


@dataclass(frozen=True)
class Stage:
    """One step of an epoch: `name` is also its Dagster asset's name; `computes` marks stages that run models."""

    name: str
    run: StageRun
    group: str
    computes: bool
    description: str


def _with_cyclic_gc_eased(stage: Stage) -> Stage:
    """A stage that runs no model gets the cyclic collector paused (cyclic_gc_paused); one that runs models keeps it on
    a frozen heap (cyclic_gc_on_a_frozen_heap)."""
    return dataclasses.replace(stage, run=(cyclic_gc_on_a_frozen_heap if stage.computes else cyclic_gc_paused)(stage.run))


STAGES: tuple[Stage, ...] = tuple(map(_with_cyclic_gc_eased, (
    Stage("epoch_tasks", run_collect, "intake", False,
          "Signed task submissions taken from the inbox: accepted with escrow, or kept with a reject reason."),
    Stage("sprint_batches", run_sprint, "sprint", True,
          "Proof of compute: every host mines nonces on the model seeded from the previous block and signs its hit batches; "
          "duplicates and late batches are refused."),
    Stage("sprint_verdicts", run_sprint_validation, "sprint", True,
          "Every validator with weight recomputes min(200, n) sampled nonces per host and signs a verdict (binomial fraud test)."),
    Stage("epoch_weights", run_epoch_weights, "sprint", False,
          "New weights: accepted hits (weighted-majority acceptance) → collateral adjustment → power cap. In force next epoch."),
    Stage("task_results", run_task_execution, "inference", True,
          "Seed commitments, then each task runs on an executor drawn ∝ weight (greedy, top-5 log-probs, signed); refunds "
          "settled, overflow expires."),
    Stage("task_verdicts", run_task_validation, "inference", True,
          "Validators drawn by their secret seeds re-run tasks forcing the executor's tokens; failures go to a weighted vote; "
          "fees shared; host status and reputation."),
    Stage("rewards", run_rewards, "rewards", False,
          "R(e) minted under the cap and split by final weights (remainder to the first address), work coins, slashes, claims "
          "and vesting. Every payout row links to the weight and fee shares behind it."),
    Stage("block_proposal", propose_block, "block", False,
          "The epoch's post-state and block header, signed by every host with weight; not final yet."),
    Stage("block", finalize_block, "block", False,
          "The finalized block: immutable from here on."),
)))
STAGE_NAMES = tuple(stage.name for stage in STAGES)
BY_NAME = {stage.name: stage for stage in STAGES}


def stages_through(last: str) -> tuple[Stage, ...]:
    """The stages from the first up to and including `last`; an unknown name is an error listing the stages."""
    if last not in BY_NAME:
        raise ValueError(f"unknown stage {last!r}; stages: {', '.join(STAGE_NAMES)}")
    return STAGES[: STAGE_NAMES.index(last) + 1]
