"""Inference assets: executed tasks (signed outputs with top-5 log-probs) and their sampled validation."""

import dagster as dg

from gonka_pipelines.defs.assets.intake import epoch_tasks
from gonka_pipelines.defs.assets.sprint import epoch_weights
from gonka_pipelines.defs.partitions import epochs
from gonka_pipelines.defs.resources import ChainResource, ComputeResource
from gonka_pipelines.stages.environment import epoch_compute
from gonka_pipelines.stages.inference import run_task_execution, run_task_validation

INFERENCE = dict(partitions_def=epochs, pool="chain", group_name="inference", kinds={"pytorch", "duckdb"}, owners=["team:gonka-inference"])


@dg.asset(**INFERENCE, deps=[epoch_tasks, epoch_weights],
          description="Seed commitments, then each task runs on an executor drawn ∝ weight (greedy, top-5 log-probs, signed); refunds settled, overflow expires.")
def task_results(context: dg.AssetExecutionContext, chain: ChainResource, compute: ComputeResource) -> dg.MaterializeResult:
    with chain.epoch_store(context) as (store, epoch):
        summary = run_task_execution(store, chain.layout, epoch, context.log.info, epoch_compute(store, epoch, compute.device))
    return dg.MaterializeResult(metadata={"dagster/row_count": summary["completed"] + summary["expired"],
                                          "completed": summary["completed"], "expired": summary["expired"]})


@dg.asset(**INFERENCE, deps=[task_results],
          description="Validators drawn by their secret seeds re-run tasks forcing the executor's tokens; failures go to a weighted vote; fees shared; host status and reputation.")
def task_verdicts(context: dg.AssetExecutionContext, chain: ChainResource, compute: ComputeResource) -> dg.MaterializeResult:
    with chain.epoch_store(context) as (store, epoch):
        summary = run_task_validation(store, chain.layout, epoch, context.log.info, epoch_compute(store, epoch, compute.device))
        statuses = dict(store.query("SELECT status, count(*) FROM host_epochs WHERE epoch = ? GROUP BY 1", [epoch]))
    return dg.MaterializeResult(metadata={"dagster/row_count": summary["validations"], "validations": summary["validations"],
                                          "invalidated_tasks": summary["invalidated"], "hosts_invalid": statuses.get("INVALID", 0),
                                          "statuses": dg.MetadataValue.json(statuses)})
