"""Per-epoch parameters: the chain's genesis profile plus what is derived for the epoch (price, r_target)."""

from __future__ import annotations

from typing import Any

from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.models.profiles import load_profile
from gonka_pipelines.protocol.params import GenesisParams
from gonka_pipelines.protocol.sprint import calibrate_r_target


def chain_genesis(store: ChainStore) -> GenesisParams:
    """The genesis parameters the chain was created with (stored at genesis, never re-read from YAML)."""
    return GenesisParams.model_validate_json(store.meta("genesis_params"))


def epoch_parameters(genesis: GenesisParams, epoch: int) -> dict[str, Any]:
    """Everything an epoch runs under; r_target is calibrated from the sprint model's vocab and the wanted hit rate."""
    vocab = load_profile(genesis.sprint.model).vocab
    return {**genesis.as_dict(), "epoch": epoch, "price_per_token": genesis.tasks.price(epoch),
            "r_target": calibrate_r_target(vocab, genesis.sprint.wanted_hit_rate)}
