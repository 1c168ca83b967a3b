"""Genesis: accounts, hosts and the signed block 0 of a new chain, from genesis.yaml and network.yaml."""

from __future__ import annotations

from gonka_pipelines.chain.store import ChainError, ChainStore, Head
from gonka_pipelines.local.keys import load_identities
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.block import GENESIS_PREV_HASH, BlockHeader
from gonka_pipelines.protocol.crypto import MessageKind
from gonka_pipelines.protocol.host_status import HostStatus
from gonka_pipelines.protocol.params import GenesisParams, NetworkConfig
from gonka_pipelines.protocol.rules import rules_for
from gonka_pipelines.stages.environment import epoch_parameters


def init_chain(store: ChainStore, layout: DataLayout, params: GenesisParams, network: NetworkConfig) -> Head:
    """Create block 0 once; calling it again on the same chain is a no-op, on another chain an error."""
    if store.initialized:
        if store.chain_id != params.chain_id:
            raise ChainError(f"{layout.database} already holds chain {store.chain_id!r}; use another data dir for {params.chain_id!r}")
        return store.head()
    identities = load_identities(layout, network, params.chain_id)
    hosts = {identities[h.name].address: (h, identities[h.name]) for h in network.hosts}
    developers = {identities[d.name].address: (d, identities[d.name]) for d in network.developers}
    weight = params.sprint.genesis_weight  # PROTOCOL section 2: epoch 0 has no sprint; every genesis host has this weight
    rules = rules_for(epoch_parameters(params, 0))
    with store.transaction():
        store.write_genesis(
            params, network.genesis_supply,
            accounts=[{"address": a, "name": c.name, "kind": "host", "public_key": k.public_key} for a, (c, k) in hosts.items()]
            + [{"address": a, "name": c.name, "kind": "developer", "public_key": k.public_key} for a, (c, k) in developers.items()],
            hosts=[{"address": a, "name": c.name, "public_key": k.public_key, "capacity": c.capacity, "models": list(c.models),
                    "behaviour": c.behaviour.value} for a, (c, k) in hosts.items()],
            account_states=[{"address": a, "balance": 0, "escrow": 0, "collateral": c.collateral} for a, (c, _) in hosts.items()]
            + [{"address": a, "balance": c.balance, "escrow": 0, "collateral": 0} for a, (c, _) in developers.items()],
            host_states=[{"address": a, "weight": weight, "status": HostStatus.RAMPING.value} for a in hosts])
        weights = {address: weight for address in hosts}
        header = BlockHeader(params.chain_id, 0, GENESIS_PREV_HASH, params.block_timestamp(0), params.params_hash,
                             store.epoch_roots(0), rules.choose_proposer(GENESIS_PREV_HASH, weights))
        signatures = [{"signer": a, "signature": k.sign(params.chain_id, MessageKind.BLOCK, header.as_dict()), "weight": weight}
                      for a, (_, k) in sorted(hosts.items())]
        store.save_genesis_block(header.as_dict(), header.hash, signatures)
    return store.head()
