"""All stages of one epoch in registry order, without Dagster: for tests, benchmarks and scripts."""

from __future__ import annotations

from typing import Any

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.compute.engine import Compute
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.params import GenesisParams
from gonka_pipelines.stages.environment import EpochEnvironment, Log, OpenChain, build_environment, holding, quiet
from gonka_pipelines.stages.registry import STAGES, stages_through


def run_stages(env: EpochEnvironment, open_chain: OpenChain, log: Log = quiet, through: str = STAGES[-1].name) -> dict[str, Any]:
    """Run the epoch's stages in order up to and including `through`; returns each stage's result by name."""
    return {stage.name: stage.run(env, open_chain, log) for stage in stages_through(through)}


def run_epoch(store: ChainStore, layout: DataLayout, epoch: int, log: Log = quiet, device: str | None = None,
              compute: Compute | None = None, genesis: GenesisParams | None = None) -> str:
    """Every stage of one epoch on an open store, through to the finalized block; returns its hash. `genesis`
    replaces the chain's genesis parameters (a what-if fork)."""
    env = build_environment(store, layout, epoch, device, compute, genesis)
    return run_stages(env, holding(store), log)["block"]
