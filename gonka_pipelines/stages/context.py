"""What every computing stage of an epoch starts from: its parameters, seed, signing keys, weights in force, compute."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.paths import DataLayout
from gonka_pipelines.protocol.crypto import KeyPair
from gonka_pipelines.stages.compute import TorchCompute
from gonka_pipelines.stages.keys import host_keys

Log = Callable[[str], None]
"""Where a stage reports progress per host or batch (Dagster's context.log.info, print, or nothing)."""


@dataclass(frozen=True)
class EpochContext:
    epoch: int
    chain_id: str
    params: dict
    seed: str
    keys: dict[str, KeyPair]
    weights: dict[str, int]
    compute: TorchCompute


def epoch_compute(store: ChainStore, epoch: int, device: str | None = None) -> TorchCompute:
    """The epoch's models: the sprint profile seeded from the previous block hash, and the served models."""
    return TorchCompute(store.epoch_params(epoch)["sprint"]["model"], store.epoch_seed(epoch), device)


def epoch_context(store: ChainStore, layout: DataLayout, epoch: int, compute: TorchCompute | None = None) -> EpochContext:
    """Read once what a stage needs; weights are those in force (the previous epoch's post-state)."""
    return EpochContext(epoch, store.chain_id, store.epoch_params(epoch), store.epoch_seed(epoch), host_keys(store, layout),
                        store.weights(epoch - 1), compute or epoch_compute(store, epoch))
