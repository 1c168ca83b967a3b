"""Genesis: accounts, hosts and the signed block 0 of a new chain, from genesis.yaml and network.yaml."""

from __future__ import annotations

import json

from gonka_pipelines.chain.commitments import epoch_roots
from gonka_pipelines.chain.store import FINALIZED, ChainError, ChainStore, Head
from gonka_pipelines.local.keys import load_identities
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.block import (
    GENESIS_PREV_HASH,
    BlockHeader,
    choose_proposer,
)
from gonka_pipelines.protocol.crypto import MessageKind
from gonka_pipelines.protocol.params import GenesisParams, NetworkConfig

GENESIS_WEIGHT = 1
GENESIS_STATUS = "RAMPING"


def init_chain(store: ChainStore, layout: DataLayout, params: GenesisParams, network: NetworkConfig) -> Head:
    """Create block 0 once; calling it again on the same chain is a no-op, on another chain an error."""
    if store.initialized:
        if store.chain_id != params.chain_id:
            raise ChainError(f"{layout.database} already holds chain {store.chain_id!r}; use another data dir for {params.chain_id!r}")
        return store.head()
    identities = load_identities(layout, network, params.chain_id)
    hosts = {identities[h.name].address: (h, identities[h.name]) for h in network.hosts}
    developers = {identities[d.name].address: (d, identities[d.name]) for d in network.developers}
    with store.transaction():
        store.set_meta({"chain_id": params.chain_id, "profile": params.profile,
                        "genesis_params": json.dumps(params.as_dict(), sort_keys=True),
                        "genesis_supply": str(network.genesis_supply)})
        store.insert("accounts", [{"address": a, "name": c.name, "kind": "host", "public_key": k.public_key} for a, (c, k) in hosts.items()]
                     + [{"address": a, "name": c.name, "kind": "developer", "public_key": k.public_key} for a, (c, k) in developers.items()])
        store.insert("hosts", [{"address": a, "name": c.name, "public_key": k.public_key, "capacity": c.capacity,
                                "models": list(c.models), "behaviour": c.behaviour.value} for a, (c, k) in hosts.items()])
        store.insert("epochs", [{"epoch": 0, "status": FINALIZED, "seed": GENESIS_PREV_HASH,
                                 "params_hash": params.params_hash, "params_json": json.dumps(params.as_dict(), sort_keys=True)}])
        store.insert("account_states", [{"epoch": 0, "address": a, "balance": 0, "escrow": 0, "collateral": c.collateral} for a, (c, _) in hosts.items()]
                     + [{"epoch": 0, "address": a, "balance": c.balance, "escrow": 0, "collateral": 0} for a, (c, _) in developers.items()])
        store.insert("host_states", [{"epoch": 0, "address": a, "weight": GENESIS_WEIGHT, "status": GENESIS_STATUS} for a in hosts])
        weights = {address: GENESIS_WEIGHT for address in hosts}
        header = BlockHeader(params.chain_id, 0, GENESIS_PREV_HASH, params.block_timestamp(0), params.params_hash,
                             epoch_roots(store.connection, 0), choose_proposer(GENESIS_PREV_HASH, weights))
        signatures = [{"signer": a, "signature": k.sign(params.chain_id, MessageKind.BLOCK, header.as_dict()), "weight": GENESIS_WEIGHT}
                      for a, (_, k) in sorted(hosts.items())]
        store.save_block(header.as_dict(), header.hash, signatures, FINALIZED)
    return store.head()
