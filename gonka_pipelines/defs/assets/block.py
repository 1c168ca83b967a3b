"""Block assets: the proposal (post-state, header, signatures) and the finalized block."""

import dagster as dg

from gonka_pipelines.defs.assets.rewards import rewards
from gonka_pipelines.defs.partitions import epochs
from gonka_pipelines.defs.resources import ChainResource
from gonka_pipelines.stages.block import finalize_block, propose_block


@dg.asset(
    partitions_def=epochs, pool="chain", group_name="block", kinds={"duckdb"}, owners=["team:gonka-core"],
    deps=[rewards],
    description="The epoch's post-state and block header, signed by every host with weight; not final yet.",
)
def block_proposal(context: dg.AssetExecutionContext, chain: ChainResource) -> dg.MaterializeResult:
    with chain.epoch_store(context) as (store, epoch):
        header = propose_block(store, chain.layout, epoch)
        signers = store.scalar("SELECT count(*) FROM block_signatures WHERE height = ?", [epoch])
    context.log.info(f"proposed block {epoch} {header.hash[:16]} with {signers} signatures")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": signers, "height": epoch, "block_hash": header.hash, "prev_hash": header.prev_hash, "signers": signers,
        "roots": dg.MetadataValue.json(header.roots),
    })


@dg.asset(
    partitions_def=epochs, pool="chain", group_name="block", kinds={"duckdb"}, owners=["team:gonka-core"],
    deps=[block_proposal],
    description="The finalized block: immutable from here on. Adds the next epoch's partition so the UI offers it.",
)
def block(context: dg.AssetExecutionContext, chain: ChainResource) -> dg.MaterializeResult:
    with chain.epoch_store(context) as (store, epoch):
        block_hash = finalize_block(store, chain.layout, epoch)
    context.instance.add_dynamic_partitions(epochs.name, [str(epoch + 1)])
    context.log.info(f"block {epoch} final: {block_hash}; epoch {epoch + 1} is next")
    return dg.MaterializeResult(metadata={"height": epoch, "block_hash": block_hash, "next_epoch": str(epoch + 1)})
