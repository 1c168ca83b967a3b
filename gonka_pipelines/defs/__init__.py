"""The Dagster code location (workspace.yaml loads `defs` from here)."""

import dagster as dg

from gonka_pipelines.defs.assets.block import block, block_proposal
from gonka_pipelines.defs.assets.inference import task_results, task_verdicts
from gonka_pipelines.defs.assets.intake import epoch_tasks
from gonka_pipelines.defs.assets.rewards import rewards
from gonka_pipelines.defs.assets.sprint import (
    epoch_weights,
    sprint_batches,
    sprint_verdicts,
)
from gonka_pipelines.defs.automation import inbox_sensor, recurring_sprints
from gonka_pipelines.defs.checks import CHECKS
from gonka_pipelines.defs.jobs import epoch_job
from gonka_pipelines.defs.resources import ChainResource, ComputeResource

defs = dg.Definitions(
    assets=[epoch_tasks, sprint_batches, sprint_verdicts, epoch_weights, task_results, task_verdicts, rewards, block_proposal, block],
    asset_checks=CHECKS,
    jobs=[epoch_job],
    schedules=[recurring_sprints],
    sensors=[inbox_sensor],
    resources={"chain": ChainResource(), "compute": ComputeResource()},
    executor=dg.in_process_executor,
)
