"""Collect stage asset: the epoch's accepted and rejected tasks."""

import dagster as dg

from gonka_pipelines.defs.partitions import epochs
from gonka_pipelines.defs.resources import ChainResource
from gonka_pipelines.stages.collect import run_collect


@dg.asset(
    partitions_def=epochs, pool="chain", group_name="intake", kinds={"duckdb"}, owners=["team:gonka-core"],
    description="Signed task submissions taken from the inbox: accepted with escrow, or kept with a reject reason.",
)
def epoch_tasks(context: dg.AssetExecutionContext, chain: ChainResource) -> dg.MaterializeResult:
    with chain.epoch_store(context) as (store, epoch):
        summary = run_collect(store, chain.layout, epoch)
    context.log.info(f"epoch {epoch}: {summary.accepted} of {summary.submitted} submissions accepted; rejected {summary.rejected_by_reason}")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": summary.submitted,
        "submitted": summary.submitted,
        "accepted": summary.accepted,
        "rejected": sum(summary.rejected_by_reason.values()),
        "escrowed": summary.escrowed,
        "rejected_by_reason": dg.MetadataValue.json(summary.rejected_by_reason),
    })
