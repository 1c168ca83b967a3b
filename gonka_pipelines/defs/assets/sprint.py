"""Sprint assets: signed PoC batches, validators' verdicts, and the weights they produce."""

import dagster as dg

from gonka_pipelines.defs.assets.intake import epoch_tasks
from gonka_pipelines.defs.partitions import epochs
from gonka_pipelines.defs.resources import ChainResource, ComputeResource
from gonka_pipelines.stages.environment import epoch_compute
from gonka_pipelines.stages.sprint import (
    run_epoch_weights,
    run_sprint,
    run_sprint_validation,
)

SPRINT = dict(partitions_def=epochs, pool="chain", group_name="sprint", owners=["team:gonka-sprint"])


@dg.asset(**SPRINT, deps=[epoch_tasks], kinds={"pytorch", "duckdb"},
          description="Proof of compute: every host mines nonces on the model seeded from the previous block and signs its hit batches; duplicates and late batches are refused.")
def sprint_batches(context: dg.AssetExecutionContext, chain: ChainResource, compute: ComputeResource) -> dg.MaterializeResult:
    with chain.epoch_store(context) as (store, epoch):
        summary = run_sprint(store, chain.layout, epoch, context.log.info, epoch_compute(store, epoch, compute.device))
    return dg.MaterializeResult(metadata={"dagster/row_count": summary["batches"], "batches": summary["batches"],
                                          "rejected_batches": summary["rejected"], "claimed_hits": summary["claimed_hits"]})


@dg.asset(**SPRINT, deps=[sprint_batches], kinds={"pytorch", "duckdb"},
          description="Every validator with weight recomputes min(200, n) sampled nonces per host and signs a verdict (binomial fraud test).")
def sprint_verdicts(context: dg.AssetExecutionContext, chain: ChainResource, compute: ComputeResource) -> dg.MaterializeResult:
    with chain.epoch_store(context) as (store, epoch):
        summary = run_sprint_validation(store, chain.layout, epoch, context.log.info, epoch_compute(store, epoch, compute.device))
    return dg.MaterializeResult(metadata={"dagster/row_count": summary["verdicts"], "verdicts": summary["verdicts"],
                                          "invalid_votes": summary["invalid_votes"]})


@dg.asset(**SPRINT, deps=[sprint_verdicts], kinds={"duckdb"},
          description="New weights: accepted hits (weighted-majority acceptance) → collateral adjustment → power cap. In force next epoch.")
def epoch_weights(context: dg.AssetExecutionContext, chain: ChainResource) -> dg.MaterializeResult:
    with chain.epoch_store(context) as (store, epoch):
        rows = run_epoch_weights(store, epoch)
        names = dict(store.query("SELECT address, name FROM hosts"))
    table = "| host | hits | valid votes (weight) | accepted | weight |\n|---|---:|---:|---|---:|\n" + "\n".join(
        f"| {names[r['address']]} | {r['hits']} | {r['valid_vote_weight']} | {'yes' if r['sprint_accepted'] else '**no**'} | {r['weight']} |"
        for r in rows)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(rows),
        "total_weight": sum(r["weight"] for r in rows),
        "sprints_rejected": sum(1 for r in rows if r["hits"] and not r["sprint_accepted"]),
        "weights": dg.MetadataValue.md(table)})
