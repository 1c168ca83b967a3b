"""What every computing stage of an epoch starts from: its parameters, seed, signing keys, weights in force, compute."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.compute.engine import TorchCompute
from gonka_pipelines.compute.profiles import load_profile
from gonka_pipelines.local.keys import load_key
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.crypto import KeyPair
from gonka_pipelines.protocol.params import GenesisParams
from gonka_pipelines.protocol.sprint import calibrate_r_target

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


def host_keys(store: ChainStore, layout: DataLayout) -> dict[str, KeyPair]:
    """Key pair of every host by address; a missing or foreign key file is an error naming the file."""
    keys = {}
    for address, name, public_key in store.query("SELECT address, name, public_key FROM hosts ORDER BY address"):
        path = layout.key_file(name)
        if not path.exists():
            raise FileNotFoundError(f"{path}: key file of host {name} not found (simulated hosts sign from data/keys/)")
        pair = load_key(path)
        if pair.public_key != public_key:
            raise ValueError(f"{path}: key does not match host {name}'s public key on the chain")
        keys[address] = pair
    return keys


def chain_genesis(store: ChainStore) -> GenesisParams:
    """The genesis parameters the chain was created with (stored at genesis, never re-read from YAML)."""
    return GenesisParams.model_validate_json(store.meta("genesis_params"))


def epoch_parameters(genesis: GenesisParams, epoch: int) -> dict[str, Any]:
    """Everything an epoch runs under; r_target is calibrated from the sprint model's vocab and the wanted hit rate."""
    vocab = load_profile(genesis.sprint.model).vocab
    return {**genesis.as_dict(), "epoch": epoch, "price_per_token": genesis.tasks.price(epoch),
            "r_target": calibrate_r_target(vocab, genesis.sprint.wanted_hit_rate)}
