"""Block stages: propose (post-state, header, signatures from every host with weight) and finalize."""

from __future__ import annotations

from gonka_pipelines.chain.commitments import epoch_roots
from gonka_pipelines.chain.store import PROPOSED, ChainStore
from gonka_pipelines.local.inbox import archive_submissions
from gonka_pipelines.local.paths import DataLayout
from gonka_pipelines.protocol.block import BlockHeader, choose_proposer
from gonka_pipelines.protocol.crypto import MessageKind
from gonka_pipelines.stages.environment import chain_genesis, host_keys


def next_host_states(store: ChainStore, epoch: int) -> list[dict]:
    """Hosts after the epoch: the sprint's weights (zero when INVALID), status, reputation and streak."""
    return store.records(
        """SELECT w.address, CASE WHEN h.status = 'INVALID' THEN 0 ELSE w.weight END AS weight, h.status, h.reputation,
                  h.epochs_served, h.consecutive_invalidations
           FROM epoch_weights w JOIN host_epochs h USING (epoch, address) WHERE w.epoch = ? ORDER BY w.address""", [epoch])


def propose_block(store: ChainStore, layout: DataLayout, epoch: int) -> BlockHeader:
    """Write the epoch's post-state, build the header over every commitment, and collect host signatures."""
    genesis = chain_genesis(store)
    keys = host_keys(store, layout)
    with store.transaction():
        store.require_writable(epoch)
        store.epoch_seed(epoch)  # refuses an epoch that its collect stage never opened
        head = store.head()
        weights_in_force = store.weights(epoch - 1)
        store.write_post_state(epoch, next_host_states(store, epoch))
        header = BlockHeader(
            chain_id=store.chain_id, height=epoch, prev_hash=head.hash, timestamp=genesis.block_timestamp(epoch),
            params_hash=store.scalar("SELECT params_hash FROM epochs WHERE epoch = ?", [epoch]),
            roots=epoch_roots(store.connection, epoch), proposer=choose_proposer(head.hash, weights_in_force),
        )
        signatures = [
            {"signer": address, "weight": weight,
             "signature": keys[address].sign(header.chain_id, MessageKind.BLOCK, header.as_dict())}
            for address, weight in weights_in_force.items() if weight > 0
        ]
        store.save_block(header.as_dict(), header.hash, signatures, PROPOSED)
    return header


def finalize_block(store: ChainStore, layout: DataLayout, epoch: int) -> str:
    """Seal the proposed block, then move the epoch's submissions out of the inbox. Returns the block hash."""
    with store.transaction():
        store.finalize(epoch)
    archive_submissions(layout.inbox, [sid for (sid,) in store.query(
        "SELECT submission_id FROM submissions WHERE epoch = ?", [epoch])])
    return store.head().hash
