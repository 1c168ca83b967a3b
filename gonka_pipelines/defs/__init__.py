"""The Dagster code location (workspace.yaml loads `defs` from here)."""

import dagster as dg

from gonka_pipelines.defs.assets.block import block, block_proposal
from gonka_pipelines.defs.assets.inference import task_results, task_verdicts
from gonka_pipelines.defs.assets.intake import epoch_tasks
from gonka_pipelines.defs.assets.rewards import rewards
from gonka_pipelines.defs.assets.sprint import epoch_weights, sprint_batches, sprint_verdicts
from gonka_pipelines.defs.checks import proposal_links_and_verifies, supply_conserved
from gonka_pipelines.defs.jobs import epoch_job
from gonka_pipelines.defs.resources import ChainResource, ComputeResource

defs = dg.Definitions(
    assets=[epoch_tasks, sprint_batches, sprint_verdicts, epoch_weights, task_results, task_verdicts, rewards, block_proposal, block],
    asset_checks=[proposal_links_and_verifies, supply_conserved],
    jobs=[epoch_job],
    resources={"chain": ChainResource(), "compute": ComputeResource()},
    executor=dg.in_process_executor,
)
