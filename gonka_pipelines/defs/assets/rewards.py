"""Rewards asset: the epoch's emission split by final weights, work coins, slashes and vesting, with lineage."""

import dagster as dg

from gonka_pipelines.defs.assets.inference import task_verdicts
from gonka_pipelines.defs.assets.sprint import epoch_weights
from gonka_pipelines.defs.partitions import epoch_of, epochs
from gonka_pipelines.defs.resources import ChainResource
from gonka_pipelines.stages.rewards import run_rewards


@dg.asset(partitions_def=epochs, pool="chain", group_name="rewards", kinds={"duckdb", "polars"}, owners=["team:gonka-economics"],
          deps=[epoch_weights, task_verdicts],
          description="R(e) minted under the cap and split by final weights (remainder to the first address), work coins, "
                      "slashes, claims and vesting. Every payout row links to the weight and fee shares behind it.")
def rewards(context: dg.AssetExecutionContext, chain: ChainResource) -> dg.MaterializeResult:
    epoch = epoch_of(context)
    with chain.store() as store:
        hosts, emission = run_rewards(store, chain.layout, epoch)
    return dg.MaterializeResult(metadata={
        "minted": emission["minted"], "burned": emission["burned"], "paid": int(hosts["payout"].sum()),
        "work_coins": int(hosts["work_coins"].sum()), "hosts_invalid": int((hosts["status"] == "INVALID").sum()),
        "claims_refused": int((~hosts["claimed"]).sum())})
