"""Asset checks on every epoch; the blocking ones guard the block, so a broken epoch is never finalized."""

from collections.abc import Callable

import dagster as dg

from gonka_pipelines.chain.invariants import (
    check_epoch_supply,
    flagged_honest_hosts,
    lineage_mismatches,
)
from gonka_pipelines.chain.store import ChainStore
from gonka_pipelines.chain.verify import (
    Inconsistency,
    content_problem,
    link_problem,
    signature_problem,
    signed_message_problem,
)
from gonka_pipelines.defs.partitions import epoch_of
from gonka_pipelines.defs.resources import ChainResource
from gonka_pipelines.protocol.rewards import SupplyInvariantError


def _block_check(context: dg.AssetCheckExecutionContext, chain: ChainResource,
                 find: Callable[[ChainStore, int], Inconsistency | None]) -> dg.AssetCheckResult:
    epoch = epoch_of(context)
    with chain.store(read_only=True) as store:
        problem = find(store, epoch)
    return dg.AssetCheckResult(passed=problem is None, metadata={"problem": str(problem) if problem else "none"})


@dg.asset_check(asset="block_proposal", blocking=True, description="The proposal names this chain and links to the head's hash.")
def block_links_to_head(context: dg.AssetCheckExecutionContext, chain: ChainResource) -> dg.AssetCheckResult:
    return _block_check(context, chain, lambda store, epoch: link_problem(store, epoch, store.head().hash))


@dg.asset_check(asset="block_proposal", blocking=True,
                description="The block hash, parameter hash, every Merkle root and the post-state re-derive from the rows.")
def block_rederives(context: dg.AssetCheckExecutionContext, chain: ChainResource) -> dg.AssetCheckResult:
    return _block_check(context, chain, content_problem)


@dg.asset_check(asset="block_proposal", blocking=True,
                description="Every host signature verifies with its key and in-force weight, and signers hold more than 2/3.")
def block_signatures_verify(context: dg.AssetCheckExecutionContext, chain: ChainResource) -> dg.AssetCheckResult:
    return _block_check(context, chain, signature_problem)


@dg.asset_check(asset="block_proposal", blocking=True,
                description="Every signed message of the epoch (tasks, PoC batches and verdicts, seed commitments) verifies "
                            "with its signer's key over the content of its row, and every executor's results and validator's "
                            "verdicts (inference and training) re-derive the one root it signed.")
def signed_messages_verify(context: dg.AssetCheckExecutionContext, chain: ChainResource) -> dg.AssetCheckResult:
    return _block_check(context, chain, signed_message_problem)


@dg.asset_check(asset="rewards", blocking=True,
                description="Σ balances + escrow + locked vesting + collateral = genesis supply + minted − burned.")
def supply_conserved(context: dg.AssetCheckExecutionContext, chain: ChainResource) -> dg.AssetCheckResult:
    epoch = epoch_of(context)
    with chain.store(read_only=True) as store:
        try:
            supply = check_epoch_supply(store, epoch)
        except SupplyInvariantError as error:
            return dg.AssetCheckResult(passed=False, metadata={"problem": str(error), "difference": error.difference})
    return dg.AssetCheckResult(passed=True, metadata={"supply": supply})


@dg.asset_check(asset="rewards", blocking=True,
                description="Every payout's lineage (weight, fee shares) sums to its reward plus work coins.")
def payouts_have_lineage(context: dg.AssetCheckExecutionContext, chain: ChainResource) -> dg.AssetCheckResult:
    epoch = epoch_of(context)
    with chain.store(read_only=True) as store:
        problems = lineage_mismatches(store, epoch)
    return dg.AssetCheckResult(passed=not problems, metadata={"problems": dg.MetadataValue.json(problems)})


@dg.asset_check(asset="rewards", description="No host configured honest was rejected, invalidated or refused (false positives).")
def no_honest_host_flagged(context: dg.AssetCheckExecutionContext, chain: ChainResource) -> dg.AssetCheckResult:
    epoch = epoch_of(context)
    with chain.store(read_only=True) as store:
        flagged = flagged_honest_hosts(store, epoch)
    return dg.AssetCheckResult(passed=not flagged, severity=dg.AssetCheckSeverity.WARN,
                               metadata={"flagged": dg.MetadataValue.json(flagged)})


CHECKS = [block_links_to_head, block_rederives, signed_messages_verify, block_signatures_verify, supply_conserved,
          payouts_have_lineage, no_honest_host_flagged]
