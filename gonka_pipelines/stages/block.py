"""Block stages: propose (post-state, header, signatures from every host with weight) and finalize."""

from __future__ import annotations

from gonka_pipelines.local.inbox import archive_submissions
from gonka_pipelines.protocol.block import BlockHeader, signature_set_hash
from gonka_pipelines.protocol.crypto import MessageKind, sign_each
from gonka_pipelines.stages.environment import EpochEnvironment, Log, OpenChain


def propose_block(env: EpochEnvironment, open_chain: OpenChain, log: Log) -> BlockHeader:
    """Write the epoch's post-state, build the header over every commitment, and collect the signatures of every host
    with weight (an INVALID host has none for the rest of its epoch)."""
    epoch = env.epoch
    with open_chain() as store, store.transaction():
        store.require_writable(epoch)
        params_hash = store.params_hash(epoch)  # refuses an epoch that its collect stage never opened
        store.write_post_state(epoch, store.next_host_states(epoch))
        weights = store.signing_weights(epoch)
        header = BlockHeader(
            chain_id=env.chain_id, height=epoch, prev_hash=env.prev_hash, timestamp=env.params.block_timestamp(epoch),
            params_hash=params_hash, roots=store.proposal_roots(epoch), proposer=env.rules.choose_proposer(env.prev_hash, weights),
            prev_signatures=signature_set_hash(store.block_signatures(epoch - 1)),
        )
        body = header.as_dict()  # once: 10,000 signers sign the same header
        signers = [(address, weight) for address, weight in weights.items() if weight > 0]
        signatures = [{"signer": address, "weight": weight, "signature": signature} for (address, weight), signature in zip(
            signers, sign_each(header.chain_id, MessageKind.BLOCK, [(env.keys[address], body) for address, _ in signers]))]
        store.save_proposal(body, header.hash, signatures)
    log(f"proposed block {epoch} {header.hash[:16]} with {len(signatures)} signatures")
    return header


def finalize_block(env: EpochEnvironment, open_chain: OpenChain, log: Log) -> str:
    """Seal the proposed block, then move the epoch's submissions out of the inbox. Returns the block hash."""
    with open_chain() as store:
        store.finalize(env.epoch)
        submission_ids, block_hash = store.submission_ids(env.epoch), store.head().hash
    archive_submissions(env.layout.inbox, submission_ids)
    log(f"block {env.epoch} final: {block_hash}; epoch {env.epoch + 1} is next")
    return block_hash
