"""Blocking checks that guard finalization: an epoch that fails one never becomes a block."""

import dagster as dg

from gonka_pipelines.chain.invariants import check_epoch_supply
from gonka_pipelines.chain.verify import verify_block
from gonka_pipelines.defs.assets.block import block_proposal
from gonka_pipelines.defs.assets.rewards import rewards
from gonka_pipelines.defs.partitions import epoch_of
from gonka_pipelines.defs.resources import ChainResource
from gonka_pipelines.protocol.rewards import SupplyInvariantError


@dg.asset_check(asset=block_proposal, blocking=True,
                description="The proposal links to the head and re-derives: hash, roots, post-state, signatures, 2/3 quorum.")
def proposal_links_and_verifies(context: dg.AssetCheckExecutionContext, chain: ChainResource) -> dg.AssetCheckResult:
    epoch = epoch_of(context)
    with chain.store(read_only=True) as store:
        problem = verify_block(store, epoch, store.head().hash)
    return dg.AssetCheckResult(passed=problem is None, metadata={"problem": str(problem) if problem else "none"})


@dg.asset_check(asset=rewards, blocking=True,
                description="Σ balances + escrow + locked vesting + collateral = genesis supply + minted − burned.")
def supply_conserved(context: dg.AssetCheckExecutionContext, chain: ChainResource) -> dg.AssetCheckResult:
    epoch = epoch_of(context)
    with chain.store(read_only=True) as store:
        try:
            supply = check_epoch_supply(store, epoch)
        except SupplyInvariantError as error:
            return dg.AssetCheckResult(passed=False, metadata={"problem": str(error), "difference": error.difference})
    return dg.AssetCheckResult(passed=True, metadata={"supply": supply})
